"""`recsys serve` for real: gunicorn on a loopback port, tiny models, real HTTP.

One server per module (one worker, eight threads, API keys on, the store polled every 0.5 s).
The hot-reload test publishes into the server's store, so it runs last.
"""

import concurrent.futures
import json
import re
import subprocess
import sys
import threading
import time

import pytest
import requests

from recsys import store
from tests.serving import fakes
from tests.serving.conftest import API_KEY, REPO, Server


@pytest.fixture(scope="module")
def http(server):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {API_KEY}"
    yield session
    session.close()


@pytest.fixture(scope="module")
def ids(tiny_store):
    return tiny_store.catalog["product_id"].tolist()


def test_health_is_open_and_the_api_needs_a_key(server, http):
    assert requests.get(server.url + "/healthz", timeout=5).json() == {"status": "ok"}
    assert requests.get(server.url + "/readyz", timeout=5).json()["ready"] is True
    refused = requests.get(server.url + "/v1/models", timeout=5)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
    assert http.get(server.url + "/v1/models", timeout=5).status_code == 200


def test_every_endpoint_over_http(server, http, ids):
    url = server.url
    score = http.post(
        url + "/v1/score",
        json={"model": "buy", "user": {"history": ids[:2]}, "products": ids[2:22]},
        timeout=30,
    )
    assert score.status_code == 200 and len(score.json()["scores"]) == 20
    rec = http.post(
        url + "/v1/recommend", json={"user": {"history": [ids[0]]}, "k": 10}, timeout=30
    ).json()
    assert len(rec["items"]) == 10 and rec["items"][0]["id"] == ids[1]
    rerank = http.post(url + "/v1/recommend", json={"k": 3, "rerank": "buy"}, timeout=30).json()
    assert all("probability" in i for i in rerank["items"])
    classify = http.post(url + "/v1/classify", json={"texts": ["shoe"]}, timeout=30).json()
    assert classify["predictions"][0]["label"] == "shoes"
    predict = http.post(
        url + "/v1/models/categories:predict", data=json.dumps({"instances": ["mug"]}), timeout=30
    )  # a TensorFlow Serving client that sends no content type still works
    assert predict.json()["predictions"][0]["label"] == "kitchen"
    assert http.get(url + "/openapi.json", timeout=5).json()["openapi"].startswith("3.1")


def test_errors_over_http(server, http):
    url = server.url
    too_big = http.post(url + "/v1/classify", data=b'{"texts": ["' + b"x" * (1 << 20) + b'"]}')
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "payload_too_large"
    bad = http.post(url + "/v1/score", data=b"{nope", timeout=5)
    assert bad.status_code == 400 and "Traceback" not in bad.text
    assert http.post(url + "/v1/recommend", json={"k": 1001}, timeout=5).status_code == 422


def test_concurrent_requests_are_coalesced(server, http, ids):
    def call(i):
        body = {"user": {"history": [ids[i % 50]]}, "products": ids[i % 40 : i % 40 + 20]}
        resp = http.post(server.url + "/v1/score", json=body, timeout=60)
        return resp.status_code

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        assert set(pool.map(call, range(48))) == {200}
    metrics = http.get(server.url + "/metrics", timeout=5).text
    count = _metric(metrics, "recsys_batch_requests_count", call="score_catalog", model="buy")
    total = _metric(metrics, "recsys_batch_requests_sum", call="score_catalog", model="buy")
    assert total > count  # some model calls served several requests
    assert _metric(metrics, "recsys_model_version", model="buy", task="buy_probability") == 1


def _metric(text, name, **labels):
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} {labels} in /metrics")


def test_the_worker_never_imports_keras_hub_or_training(serving_store):
    """A process that loads and serves every model, as a worker does, holds no training code."""
    script = (
        "import sys, json\n"
        "from serving import create_app\n"
        f"app = create_app({{'STORE': {str(serving_store)!r}, 'RELOAD_INTERVAL': 0}})\n"
        "app.extensions['recsys_models'].wait_scanned(120)\n"
        "c = app.test_client()\n"
        "assert c.get('/readyz').status_code == 200\n"
        "assert c.post('/v1/score', json={'products': ['P00001', {'id': 'n', 'title': 't', "
        "'category': 'c'}]}).status_code == 200\n"
        "assert c.post('/v1/recommend', json={'k': 2, 'rerank': 'buy'}).status_code == 200\n"
        "assert c.post('/v1/classify', json={'texts': ['a']}).status_code == 200\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=180, cwd=REPO
    )
    assert out.returncode == 0, out.stderr[-3000:]
    modules = json.loads(out.stdout.strip().splitlines()[-1])
    assert not [m for m in modules if m.split(".")[0] in ("keras_hub", "keras_nlp", "training")]


def test_serve_on_an_empty_store_starts_not_ready_and_says_how_to_train(tmp_path):
    srv = Server(tmp_path / "empty", tmp_path / "empty.log")
    try:
        srv.wait_ready(timeout=60, status=503)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            body = requests.get(srv.url + "/readyz", timeout=5).json()
            if body["message"] != "Loading models.":
                break
            time.sleep(0.2)
        assert body["ready"] is False and "recsys train" in body["message"]
        assert requests.get(srv.url + "/healthz", timeout=5).status_code == 200
    finally:
        srv.stop()
    assert "recsys train" in srv.tail() and "no API keys" in srv.tail()


def test_bad_serve_settings_exit_2():
    from recsys.cli import main

    assert main(["serve", "--bind", "nowhere", "--store", str(REPO)]) == 2
    assert main(["serve", "--workers", "0"]) == 2
    assert main(["serve", "--catalog", str(REPO / "no-such-catalog.csv")]) == 2


def test_hot_reload_swaps_versions_without_failing_requests(server, http, live_store, ids):
    """Publish v2: served within seconds while requests keep flowing; a broken v3 is skipped."""
    failures, versions, stop = [], set(), threading.Event()

    def hammer():
        while not stop.is_set():
            resp = http.post(
                server.url + "/v1/score",
                json={"user": {"history": ids[:2]}, "products": ids[5:10]},
                timeout=30,
            )
            if resp.status_code != 200:
                failures.append(resp.text)
            else:
                versions.add(resp.json()["version"])

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        v1 = live_store / "buy" / "1"
        fakes.republish(live_store, "buy", v1)
        _wait_for_version(server, http, 2)
        fakes.republish(live_store, "buy", v1, corrupt=True)
        time.sleep(2.5)  # several polls
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert failures == [] and versions == {1, 2}
    assert store.versions(live_store, "buy") == [1, 2, 3]
    assert http.get(server.url + "/v1/models/buy", timeout=5).json()["version"] == 2
    assert requests.get(server.url + "/readyz", timeout=5).status_code == 200
    assert "Could not load buy version 3" in server.tail(200_000)
    pinned = http.post(
        server.url + "/v1/score", json={"version": 1, "products": ids[:2]}, timeout=60
    )
    assert pinned.status_code == 200 and pinned.json()["version"] == 1
    broken = http.post(server.url + "/v1/score", json={"version": 3, "products": ids[:2]})
    assert broken.status_code == 503 and broken.json()["error"]["code"] == "model_unavailable"


def _wait_for_version(server, http, version, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http.get(server.url + "/v1/models/buy", timeout=5).json()["version"] == version:
            return
        time.sleep(0.2)
    raise AssertionError(f"version {version} not served in {timeout} s:\n{server.tail()}")
