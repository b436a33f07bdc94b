"""Serving load: `recsys serve` on loopback against the same SavedModel called in-process.

    python bench/serve_load.py --make-models bench_out          # once: builds the two models
    python bench/serve_load.py --store bench_out/store [--workers 1] [--threads 16]
                               [--concurrency 1,8,32] [--duration 10] [--out result.json]

1. `--make-models DIR` exports, into `DIR/store`, a buy-probability model on the MiniLM
   backbone (untrained head: speed does not depend on the weights) and a GPT-2 next-item ranker
   (random weights) over a synthetic catalog, the way `recsys train` would publish them.
2. The load: `recsys serve` is started on a free loopback port; for each concurrency level,
   that many client threads (keep-alive connections, request bodies encoded beforehand) send
   `POST /v1/score` (8 history items, 20 catalog products) or `POST /v1/recommend` (8 history
   items, k=10) for `--duration` seconds (and at most `--max-requests`). Throughput, p50/p99
   latency and errors are recorded.
3. In-process: after the server has stopped, the same SavedModels are loaded here and called
   directly with the same batch composition (one user: `score_catalog` with 20 candidates;
   `recommend` with one history row and k=10), one call after the other.
Prints JSON (and a Markdown table with --markdown).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import pathlib
import socket
import subprocess
import sys
import threading
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


# -- models ------------------------------------------------------------------------------------
def make_models(out, products=500, users=300, seed=0):
    import keras

    from recsys import backbones, schema, store
    from recsys.data import synthetic
    from recsys.data.buy_pairs import product_counts
    from recsys.export import write_model_card
    from recsys.tasks import buy_probability as bp
    from recsys.tasks import buy_probability_export, ranking, ranking_export

    out = pathlib.Path(out)
    root = out / "store"
    data = synthetic.generate(products=products, users=users, seed=seed)
    catalog = data.catalog
    keras.utils.set_random_seed(seed)
    backbone, text_pre = backbones.resolve("minilm", sequence_length=64)
    pre = bp.BuyProbabilityPreprocessor(
        text_pre.tokenizer,
        64,
        24,
        product_stats=bp.ProductStats(*product_counts(data.events, catalog)),
    )
    model = bp.build_model(backbone, hidden_dim=128)

    def write_buy(tmp):
        signatures = buy_probability_export.export(model, pre, catalog, tmp, history_length=8)
        write_model_card(
            tmp,
            {
                "name": "buy",
                "task": "buy_probability",
                "backbone": "minilm (untrained head)",
                "signatures": signatures,
                "history_length": 8,
            },
        )

    store.publish(root, "buy", write_buy)
    ids = catalog["product_id"].astype(str).tolist()
    ranker = ranking.build_model(
        num_items=len(ids) + schema.NUM_RESERVED_IDS,
        sequence_length=50,
        num_layers=2,
        num_heads=2,
        hidden_dim=64,
        dropout=0.0,
    )
    counts = data.events["product_id"].value_counts()
    popularity = np.concatenate(
        [np.zeros(schema.NUM_RESERVED_IDS), [counts.get(i, 0) for i in ids]]
    )

    def write_ranker(tmp):
        signatures = ranking_export.export(ranker, ids, popularity, 50, tmp, catalog=catalog)
        write_model_card(
            tmp,
            {
                "name": "ranker",
                "task": "ranking",
                "backbone": "gpt2 (random weights)",
                "signatures": signatures,
                "history_order": "oldest first",
            },
        )

    store.publish(root, "ranker", write_ranker)
    print(f"Models in {root}: buy, ranker ({len(ids)} products)")


# -- the load generator ------------------------------------------------------------------------
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bodies(ids, kind, count, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        history = rng.choice(ids, 8, replace=False).tolist()
        if kind == "score":
            body = {
                "model": "buy",
                "user": {"history": history},
                "products": rng.choice(ids, 20, replace=False).tolist(),
            }
        else:
            body = {"model": "ranker", "user": {"history": history}, "k": 10}
        out.append(json.dumps(body).encode())
    return out


def _load(port, path, bodies, concurrency, duration, max_requests):
    latencies, errors, lock = [], [], threading.Lock()
    deadline = time.perf_counter() + duration
    sent = iter(range(max_requests))

    def worker(offset):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = offset
        while time.perf_counter() < deadline:
            with lock:
                if next(sent, None) is None:
                    break
            body = bodies[i % len(bodies)]
            i += concurrency
            started = time.perf_counter()
            try:
                conn.request("POST", path, body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                ok = False
            elapsed = time.perf_counter() - started
            with lock:
                (latencies if ok else errors).append(elapsed)
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": len(errors),
        "throughput_rps": round(len(latencies) / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
    }


def serve_load(store, levels, duration, max_requests, workers, threads):
    import pandas as pd

    port = _free_port()
    env = {
        **os.environ,
        "RECSYS_ACCESS_LOG": "0",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "RECSYS_RELOAD_INTERVAL": "30",
    }
    env.pop("RECSYS_API_KEYS", None)
    log = open(pathlib.Path(store).parent / "serve_load.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "recsys.cli",
            "serve",
            "--store",
            str(store),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"recsys serve did not become ready; see {log.name}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/readyz")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        ids = {
            name: pd.read_parquet(next((pathlib.Path(store) / name).iterdir()) / "catalog.parquet")[
                "product_id"
            ]
            .astype(str)
            .tolist()
            for name in ("buy", "ranker")
        }
        results = {}
        for kind, path, model in (
            ("score", "/v1/score", "buy"),
            ("recommend", "/v1/recommend", "ranker"),
        ):
            bodies = _bodies(ids[model], kind, 512, seed=1)
            _load(port, path, bodies, 8, min(3.0, duration), 200)  # warm-up, not recorded
            results[kind] = [_load(port, path, bodies, c, duration, max_requests) for c in levels]
        return results
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def in_process(store, duration):
    import tensorflow as tf
    import tensorflow_text  # noqa: F401

    from recsys import store as store_lib

    out = {}
    rng = np.random.default_rng(2)
    buy_dir = store_lib.resolve(store, "buy")
    buy = tf.saved_model.load(str(buy_dir))
    import pandas as pd

    ids = pd.read_parquet(buy_dir / "catalog.parquet")["product_id"].astype(str).to_numpy()
    fn = buy.signatures["score_catalog"]

    def score_once():
        fn(
            history=tf.constant(rng.choice(ids, 8, replace=False)),
            history_events=tf.constant(["view"] * 8),
            candidates=tf.constant(rng.choice(ids, 20, replace=False)),
            query=tf.constant(""),
        )["probability"].numpy()

    ranker = tf.saved_model.load(str(store_lib.resolve(store, "ranker")))
    rec = ranker.signatures["recommend"]

    def recommend_once():
        rec(
            history=tf.constant([rng.choice(ids, 8, replace=False)]),
            k=tf.constant(10),
            exclude=tf.constant([[""]]),
        )["product_ids"].numpy()

    for kind, once in (("score", score_once), ("recommend", recommend_once)):
        for _ in range(20):
            once()
        calls, started = 0, time.perf_counter()
        timings = []
        while time.perf_counter() - started < duration:
            t = time.perf_counter()
            once()
            timings.append(time.perf_counter() - t)
            calls += 1
        wall = time.perf_counter() - started
        out[kind] = {
            "calls": calls,
            "throughput_cps": round(calls / wall, 1),
            "p50_ms": round(float(np.percentile(np.array(timings) * 1000, 50)), 2),
        }
    return out


def markdown(result):
    lines = [
        "| endpoint | concurrency | requests | errors | service req/s | p50 ms | p99 ms "
        "| in-process calls/s | service / in-process |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind, rows in result["service"].items():
        base = result["in_process"][kind]["throughput_cps"]
        for r in rows:
            lines.append(
                f"| `/v1/{kind}` | {r['concurrency']} | {r['requests']} | {r['errors']} | "
                f"{r['throughput_rps']} | {r['p50_ms']} | {r['p99_ms']} | {base} | "
                f"{r['throughput_rps'] / base:.2f} |"
            )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--make-models", metavar="DIR", help="build the benchmark models")
    parser.add_argument("--store", help="a store with `buy` and `ranker`")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per level")
    parser.add_argument("--max-requests", type=int, default=5000, help="per level")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table too")
    args = parser.parse_args(argv)
    if args.make_models:
        make_models(args.make_models)
        return 0
    if not args.store:
        parser.error("--store (or --make-models) is required")
    levels = [int(c) for c in args.concurrency.split(",")]
    result = {
        "settings": {
            "workers": args.workers,
            "threads": args.threads,
            "duration_s": args.duration,
            "cpus": os.cpu_count(),
        },
        "service": serve_load(
            args.store, levels, args.duration, args.max_requests, args.workers, args.threads
        ),
        "in_process": in_process(args.store, args.duration),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        pathlib.Path(args.out).write_text(text)
    if args.markdown:
        print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
