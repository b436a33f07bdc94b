"""Serving fixtures: a model store with tiny models, flaskr-style `app` and `client`, and a
real `recsys serve` (gunicorn) on a free loopback port."""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

API_KEY = "test-key-1"


@pytest.fixture(scope="session")
def serving_store(tmp_path_factory, tiny_store):
    """`buy` (real tiny export), `ranker` and `categories` (fakes with the same signatures)."""
    from tests.serving import fakes

    root = tmp_path_factory.mktemp("serving") / "store"
    fakes.publish_buy(root, tiny_store)
    fakes.publish_ranker(root, tiny_store.catalog)
    fakes.publish_classifier(root)
    return root


def make_app(store, **config):
    from serving import create_app

    app = create_app({"STORE": str(store), "RELOAD_INTERVAL": 0, **config})
    assert app.extensions["recsys_models"].wait_scanned(120)
    return app


@pytest.fixture(scope="session")
def app(serving_store):
    app = make_app(serving_store, TESTING=True)
    yield app
    app.extensions["recsys_models"].stop()


@pytest.fixture()
def client(app):
    return app.test_client()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `recsys serve` subprocess (gunicorn) and its log."""

    def __init__(self, store, log, env=None, workers=1, threads=8):
        self.log = pathlib.Path(log)
        self.env = {
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "RECSYS_RELOAD_INTERVAL": "0.5",
            "RECSYS_TF_THREADS": "1",
            **(env or {}),
        }
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.argv = [sys.executable, "-m", "recsys.cli", "serve", "--store", str(store)]
        self.argv += ["--workers", str(workers), "--threads", str(threads)]
        self.attempts = 0
        self._start()

    def _start(self):
        self.attempts += 1
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                self.argv + ["--bind", f"127.0.0.1:{self.port}"],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout=120.0, status=200):
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if "in use" in self.tail() and self.attempts < 3:  # lost the port to a neighbour
                    self._start()
                    continue
                raise AssertionError(f"recsys serve exited {self.proc.returncode}:\n{self.tail()}")
            try:
                if requests.get(self.url + "/readyz", timeout=5).status_code == status:
                    return self
            except (requests.ConnectionError, requests.Timeout):
                pass  # not listening yet, or too busy loading models to answer in time
            time.sleep(0.25)
        raise AssertionError(f"recsys serve was not ready in {timeout} s:\n{self.tail()}")

    def tail(self, chars=4000):
        return self.log.read_text(errors="replace")[-chars:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture(scope="module")
def live_store(serving_store, tmp_path_factory):
    """A copy of the store that a test may publish into."""
    root = tmp_path_factory.mktemp("live") / "store"
    shutil.copytree(serving_store, root)
    return root


@pytest.fixture(scope="module")
def server(live_store, tmp_path_factory):
    log = tmp_path_factory.mktemp("gunicorn") / "server.log"
    srv = Server(
        live_store,
        log,
        env={"RECSYS_API_KEYS": f"{API_KEY},other-key", "RECSYS_BATCH_TIMEOUT_MS": "20"},
    )
    try:
        yield srv.wait_ready()
    finally:
        srv.stop()
