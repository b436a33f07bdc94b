"""Hostile input and API keys against a real `recsys serve` (gunicorn), with its logs captured.

One server for the module: one worker with four threads (so that a few slow clients would be
enough to stop it), API keys on, debug logging, a 4 s read timeout, keep-alive connections
recycled after 2 s. Every case must get a 4xx
JSON error (never a 5xx), the server must keep serving, and no key may reach the logs.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import re
import socket
import threading
import time

import pytest
import requests

from serving.batching import MicroBatcher
from tests.serving.conftest import API_KEY, Server

OTHER_KEY = "second-key-for-tests"
NEAR_MISS = API_KEY[:-1] + ("2" if API_KEY[-1] != "2" else "3")  # differs in the last character
READ_TIMEOUT = 4
KEEPALIVE_MAX_AGE = 2


@pytest.fixture(scope="module")
def hostile_server(serving_store, tmp_path_factory):
    log = tmp_path_factory.mktemp("hostile") / "server.log"
    srv = Server(
        serving_store,
        log,
        threads=4,
        env={
            "RECSYS_API_KEYS": f"{API_KEY},{OTHER_KEY}",
            "RECSYS_LOG_LEVEL": "debug",
            "RECSYS_READ_TIMEOUT": str(READ_TIMEOUT),
            "RECSYS_KEEPALIVE_MAX_AGE": str(KEEPALIVE_MAX_AGE),
            "RECSYS_RELOAD_INTERVAL": "0",
        },
    )
    try:
        yield srv.wait_ready()
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def api(hostile_server):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {API_KEY}"

    def call(method, path, body=None, headers=None):
        """`body`: a dict (sent as JSON), bytes, or an iterator of bytes (sent chunked)."""
        kind = "json" if isinstance(body, dict) else "data"
        return session.request(
            method, hostile_server.url + path, headers=headers, timeout=60, **{kind: body}
        )

    yield call
    session.close()


@pytest.fixture(scope="module")
def ids(tiny_store):
    return tiny_store.catalog["product_id"].tolist()


def _error(resp, status, code=None):
    assert resp.status_code == status, resp.text[:300]
    body = resp.json()["error"]
    assert body["status"] == status and "Traceback" not in resp.text
    if code is not None:
        assert body["code"] == code, body
    return body["message"]


def _still_serving(api, ids):
    resp = api("POST", "/v1/score", {"products": ids[:2]})
    assert resp.status_code == 200, resp.text


# -- bodies ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b'{"texts": ' + b"[" * 40 + b"]" * 40 + b"}",
    ],
    ids=["array-100k-deep", "object-50k-deep", "40-levels"],
)
def test_deeply_nested_json_is_refused(api, ids, body):
    assert "nested too deeply" in _error(api("POST", "/v1/classify", body), 400, "invalid_json")
    _still_serving(api, ids)


def test_ten_mib_bodies_get_413_with_or_without_a_length(api, ids):
    big = b'{"texts": ["' + b"x" * (10 << 20) + b'"]}'
    _error(api("POST", "/v1/classify", big), 413, "payload_too_large")

    def chunks():
        for i in range(0, len(big), 1 << 16):
            yield big[i : i + (1 << 16)]

    _error(api("POST", "/v1/classify", chunks()), 413, "payload_too_large")
    _still_serving(api, ids)


@pytest.mark.parametrize(
    "body",
    [
        b'{"texts": ["\xff\xfe"]}',
        '{"texts": ["caf\u00e9"]}'.encode("latin-1"),
        '{"texts": ["a"]}'.encode("utf-16"),
    ],  # fmt: skip
    ids=["invalid-utf8", "latin-1", "utf-16"],
)
def test_bodies_that_are_not_utf8_are_refused(api, body):
    assert "not UTF-8" in _error(api("POST", "/v1/classify", body), 400, "invalid_json")


@pytest.mark.parametrize(
    "path,body,status",
    [
        ("/v1/recommend", b'{"k": NaN}', 400),
        ("/v1/recommend", b'{"k": Infinity}', 400),
        ("/v1/score", b'{"products": [{"id": "n", "title": "t", "category": "c", "price": NaN}]}',
         400),
        ("/v1/models/ranker:predict", b'{"inputs": {"history": [["a"]], "k": -Infinity}}', 400),
        ("/v1/recommend", b'{"k": 1e999}', 400),  # overflows to inf: not an integer
        ("/v1/score", b'{"products": [{"id": "n", "title": "t", "category": "c", "price": 1e999}]}',
         422),
        ("/v1/models/ranker:predict", b'{"inputs": {"history": [["a"]], "k": 1e999}}', 400),
    ],
)  # fmt: skip
def test_nan_and_infinity_never_reach_a_model(api, path, body, status):
    _error(api("POST", path, body), status)


def test_lone_surrogates_are_refused_and_never_fail_a_shared_batch(api, ids):
    bad = {
        "/v1/classify": {"texts": ["\ud800abc"]},
        "/v1/recommend": {"user": {"history": ["\udfff"]}},
        "/v1/score": {"user": {"query": "\ud83d"}, "products": ids[:2]},
    }
    for path, body in bad.items():
        resp = api("POST", path, json.dumps(body).encode())
        assert "surrogate" in _error(resp, 400, "invalid_json")

    def good(i):
        return api("POST", "/v1/classify", {"texts": [f"red mug {i}"]}).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(good, i) for i in range(24)]
        futures += [pool.submit(api, "POST", "/v1/classify", json.dumps(bad["/v1/classify"]))]
        results = [f.result() for f in futures]
    assert results[:-1] == [200] * 24 and results[-1].status_code == 400


def test_a_request_that_breaks_the_model_fails_alone_in_its_batch():
    def model(items):
        if any(item == "poison" for item in items):
            raise ValueError("cannot encode")
        return [item.upper() for item in items]

    batcher = MicroBatcher(model, max_batch_size=64, timeout_ms=50)
    start = threading.Barrier(6)

    def submit(item):
        start.wait()
        try:
            return batcher.submit(item)
        except ValueError as e:
            return e

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(submit, ["a", "b", "poison", "c", "d", "e"]))
    assert results[:2] + results[3:] == ["A", "B", "C", "D", "E"]
    assert isinstance(results[2], ValueError)


# -- names, sizes, limits ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "method,path,body",
    [
        ("POST", "/v1/score", {"model": "../buy", "products": ["x"]}),
        ("POST", "/v1/score", {"model": "..", "products": ["x"]}),
        ("POST", "/v1/recommend", {"rerank": "../../etc/passwd"}),
        ("POST", "/v1/classify", {"model": "buy/../categories", "texts": ["a"]}),
        ("POST", "/v1/classify", {"model": "categories\n", "texts": ["a"]}),
        ("GET", "/v1/models/..%2Fbuy", None),
        ("GET", "/v1/models/%2e%2e", None),
        ("GET", "/v1/models/.hidden", None),
        ("GET", "/v1/models/%2e%2e%2f%2e%2e%2fetc%2fpasswd/versions/1", None),
        ("POST", "/v1/models/..%2Fcategories:predict", {"instances": ["mug"]}),
    ],
)
def test_model_names_with_dot_dot_never_reach_the_file_system(api, method, path, body):
    resp = api(method, path, body)
    assert resp.status_code in (400, 404), resp.text
    _error(resp, resp.status_code)


@pytest.mark.parametrize("k", [1001, 10**9, 10**30, -1, 0])
def test_huge_or_negative_k_is_refused(api, k):
    _error(api("POST", "/v1/recommend", {"k": k}), 422)


def test_a_5000_digit_integer_is_refused(api):
    message = _error(api("POST", "/v1/recommend", b'{"k": ' + b"9" * 5000 + b"}"), 400)
    assert "digits" in message


@pytest.mark.parametrize(
    "path,body",
    [
        ("/v1/score", {"products": ["P00001"] * 100_000}),
        ("/v1/classify", {"texts": ["a"] * 100_000}),
        ("/v1/recommend", {"user": {"history": ["P00001"] * 100_000}}),
        ("/v1/recommend", {"exclude": ["P00001"] * 100_000}),
        ("/v1/models/categories:predict", {"instances": ["a"] * 100_000}),
    ],
)
def test_100k_item_lists_are_refused_quickly(api, path, body):
    started = time.perf_counter()
    resp = api("POST", path, body)
    assert resp.status_code in (413, 422), resp.text[:200]
    _error(resp, resp.status_code)
    assert time.perf_counter() - started < 5


def test_an_unknown_method_is_405_with_allow(api):
    resp = api("PUT", "/v1/score", {"products": ["x"]})
    _error(resp, 405, "method_not_allowed")
    assert "POST" in resp.headers["Allow"]


# -- slow clients ------------------------------------------------------------------------------
def _slow_client(port, body, out, stop):
    """Sends a request one byte a second; keeps what the server answers."""
    sock = socket.create_connection(("127.0.0.1", port))  # blocking: MSG_DONTWAIT then works
    request = (
        f"POST /v1/classify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    answer = b""
    try:
        for i in range(len(request)):
            try:
                answer = sock.recv(4096, socket.MSG_DONTWAIT)
            except BlockingIOError:
                pass
            if answer or stop.is_set():
                break
            sock.sendall(request[i : i + 1])
            time.sleep(1.0)
    except OSError:
        pass
    finally:
        out.append(answer)
        sock.close()


def test_clients_sending_a_byte_per_second_do_not_block_others(hostile_server, api, ids):
    """Three times as many trickling connections as the worker has threads."""
    answers, stop = [], threading.Event()
    slow = [
        threading.Thread(
            target=_slow_client, args=(hostile_server.port, b'{"texts": ["a"]}', answers, stop)
        )
        for _ in range(12)
    ]
    for t in slow:
        t.start()
    try:
        time.sleep(1.5)  # every slow connection has sent its first bytes
        timings = []
        for i in range(8):
            started = time.perf_counter()
            resp = api("POST", "/v1/classify", {"texts": [f"mug {i}"]})
            timings.append(time.perf_counter() - started)
            assert resp.status_code == 200
            time.sleep(0.25)
        assert max(timings) < 2.0, timings
    finally:
        for t in slow:
            t.join(READ_TIMEOUT + 20)
        stop.set()
    assert len(answers) == 12
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers[:2]
    body = json.loads(answers[0].split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "request_timeout"
    _still_serving(api, ids)


def test_a_client_waiting_for_100_continue_gets_it_at_once(hostile_server):
    body = json.dumps({"texts": ["red mug"]}).encode()
    head = (
        f"POST /v1/classify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Expect: 100-continue\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", hostile_server.port), timeout=5) as sock:
        sock.sendall(head)
        assert sock.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"  # within the timeout
        sock.sendall(body)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            answer += sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 200") and b"100 Continue" not in answer


def test_kept_alive_connections_are_recycled_after_their_max_age(hostile_server):
    """So that clients spread over every worker again after one was replaced."""
    conn = http.client.HTTPConnection("127.0.0.1", hostile_server.port, timeout=10)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    try:
        conn.request("GET", "/v1/models", headers=headers)
        first = conn.getresponse()
        first.read()
        assert first.status == 200 and not first.will_close
        time.sleep(KEEPALIVE_MAX_AGE + 0.5)  # under gunicorn's 5 s idle keep-alive timeout
        conn.request("GET", "/v1/models", headers=headers)
        second = conn.getresponse()
        second.read()
        assert second.status == 200 and second.getheader("Connection") == "close"
    finally:
        conn.close()


# -- API keys ----------------------------------------------------------------------------------
def _operations(server):
    document = requests.get(
        server.url + "/openapi.json", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10
    ).json()
    out = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in ("get", "post", "put", "delete", "patch"):
                continue
            protected = operation.get("security", document.get("security")) != []
            concrete = re.sub(r"\{version\}", "1", re.sub(r"\{[a-z_]+\}", "buy", path))
            out.append((method.upper(), concrete, protected))
    return out


def test_every_protected_endpoint_refuses_missing_and_wrong_keys(hostile_server):
    operations = _operations(hostile_server)
    protected = [(m, p) for m, p, needs_key in operations if needs_key]
    assert len(protected) >= 10 and ("POST", "/v1/score") in protected
    refused = {
        "no header": {},
        "wrong key": {"Authorization": "Bearer not-the-key"},
        "last character differs": {"Authorization": f"Bearer {NEAR_MISS}"},
        "prefix of the key": {"Authorization": f"Bearer {API_KEY[:-1]}"},
        "key plus a character": {"Authorization": f"Bearer {API_KEY}x"},
        "other scheme": {"Authorization": f"Basic {API_KEY}"},
        "no scheme": {"Authorization": API_KEY},
        "empty bearer": {"Authorization": "Bearer "},
        "two keys": {"Authorization": f"Bearer {API_KEY} {OTHER_KEY}"},
        "non-ascii": {"Authorization": "Bearer kl\u00fcssel".encode("latin-1")},
    }
    for method, path in protected:
        for name, headers in refused.items():
            resp = requests.request(
                method, hostile_server.url + path, headers=headers, data=b"{}", timeout=10
            )
            assert resp.status_code == 401, (method, path, name, resp.text[:200])
            assert resp.json()["error"]["code"] == "unauthorized"
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            assert API_KEY not in resp.text and NEAR_MISS not in resp.text
    for method, path, needs_key in operations:
        if not needs_key:
            assert requests.request(method, hostile_server.url + path, timeout=10).status_code in (
                200,
                503,
            )
    for sneaky in ("/static/../v1/models", "/static/%2e%2e/v1/models", "/healthz/../v1/models"):
        resp = requests.get(hostile_server.url + sneaky, timeout=10)
        assert resp.status_code in (401, 404) and '"models"' not in resp.text, sneaky
    for key in (API_KEY, OTHER_KEY):
        resp = requests.get(
            hostile_server.url + "/v1/models", headers={"Authorization": f"Bearer {key}"}
        )
        assert resp.status_code == 200


def test_schemathesis_cases_over_every_endpoint(hostile_server):
    """A short run of bench/hostile.py's fuzzing (the full run makes 2,000+ cases)."""
    pytest.importorskip("schemathesis")
    from bench import hostile

    result = hostile.fuzz(hostile_server.url, API_KEY, examples=12, seed=1)
    assert result["cases"] >= 200 and result["operations"] >= 10
    assert result["failures"] == [], json.dumps(result["failures"][:3], indent=1)
    assert not any(status.startswith("5") for status in result["statuses"])


def test_keys_never_reach_the_logs(hostile_server, api, ids):
    """Runs last in the module: everything above has been logged at debug level."""
    _still_serving(api, ids)
    requests.get(hostile_server.url + "/v1/models?api_key=none", timeout=10)
    time.sleep(0.5)
    log = hostile_server.log.read_text(errors="replace")
    assert "POST /v1/score" in log and "DEBUG" in log  # the access log and debug lines are there
    for secret in (API_KEY, OTHER_KEY, NEAR_MISS, API_KEY[:-1]):
        assert secret not in log, f"{secret!r} appears in the server log"
    assert "Unhandled error" not in log
    errors = [line for line in log.splitlines() if re.search(r'" 5\d\d ', line)]
    assert all("GET /readyz" in line for line in errors), errors[:3]  # 503 while loading only
