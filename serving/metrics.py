"""Prometheus metrics: requests and latencies by endpoint and status, batch sizes, model versions.

Metrics live in a registry made per app (`app.extensions["recsys_metrics"]`), never in module
globals. Under gunicorn with several workers, `serving/gunicorn.conf.py` sets
`PROMETHEUS_MULTIPROC_DIR` so that `GET /metrics` adds up every worker.
"""

from __future__ import annotations

import os
import time

from flask import Response, current_app, g, request

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """The service's metrics, registered in their own `CollectorRegistry`."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "recsys_http_requests",
            "HTTP requests by endpoint, method and status.",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "recsys_http_request_duration_seconds",
            "HTTP request latency by endpoint and status.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "recsys_batch_size",
            "Rows per model call after micro-batching.",
            ["model", "call"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_requests = Histogram(
            "recsys_batch_requests",
            "Requests coalesced into one model call.",
            ["model", "call"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.model_version = Gauge(
            "recsys_model_version",
            "The newest version of each model loaded and serving.",
            ["model", "task"],
            registry=self.registry,
            multiprocess_mode="liveall",
        )
        self.load_failures = Counter(
            "recsys_model_load_failures",
            "Model versions that failed to load.",
            ["model"],
            registry=self.registry,
        )

    def batch_observer(self, model, call):
        rows_metric = self.batch_rows.labels(model, call)
        requests_metric = self.batch_requests.labels(model, call)

        def observe(rows, requests):
            rows_metric.observe(rows)
            requests_metric.observe(requests)

        return observe

    def render(self):
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        else:
            registry = self.registry
        return generate_latest(registry), CONTENT_TYPE_LATEST


def get_metrics(app=None) -> Metrics:
    return (app or current_app).extensions["recsys_metrics"]


def init_app(app):
    metrics = Metrics()
    app.extensions["recsys_metrics"] = metrics

    @app.before_request
    def _start_timer():
        g.recsys_started = time.perf_counter()

    @app.after_request
    def _observe(response):
        started = g.pop("recsys_started", None)
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        status = str(response.status_code)
        metrics.requests.labels(endpoint, request.method, status).inc()
        if started is not None:
            metrics.latency.labels(endpoint, status).observe(time.perf_counter() - started)
        return response

    @app.get("/metrics")
    def prometheus_metrics():
        body, content_type = metrics.render()
        return Response(body, content_type=content_type)
