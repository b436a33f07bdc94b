"""Shared pieces of the reliability scripts (`bench/soak.py`, `bench/worker_loss.py`, ...).

- `make_models(root)`: a model store with real tiny exports of all three tasks (`buy`: the buy
  export of a random 1-layer BERT; `ranker`: the ranking export of a random 1-layer GPT-2;
  `categories`: the text-classification export of a random 1-layer BERT), published through
  `recsys.store` the way `recsys train` publishes them.
- `Server`: `recsys serve` (gunicorn) on a free loopback port, its log, its worker processes.
- `Load`: a bounded loopback load generator (keep-alive connections, one per client thread)
  that records every request: start and end time, endpoint, status, model version, error.
- `rss_mb(pid)`, `worker_pids(master)`: memory and processes from /proc (Linux).

Everything here talks to 127.0.0.1 only, and every loop is bounded in time and count.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import threading
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

LABELS = ["kitchen", "shoes", "other"]


# -- models --------------------------------------------------------------------------------------
def make_models(root, products=120, users=80, seed=0):
    """Publishes `buy`, `ranker` and `categories` (version 1 each) into `root`; returns ids."""
    import keras

    from recsys import schema, store
    from recsys.backbones import tiny_bert
    from recsys.data import synthetic
    from recsys.data.buy_pairs import product_counts
    from recsys.export import write_model_card
    from recsys.tasks import buy_probability as bp
    from recsys.tasks import (
        buy_probability_export,
        ranking,
        ranking_export,
        text_classification,
        text_classification_export,
    )

    root = pathlib.Path(root)
    data = synthetic.generate(products=products, users=users, seed=seed)
    catalog = data.catalog
    keras.utils.set_random_seed(seed)

    backbone, text_pre = tiny_bert(sequence_length=32, hidden_dim=8)
    counts = product_counts(data.events, catalog)
    pre = bp.BuyProbabilityPreprocessor(
        text_pre.tokenizer, 32, 16, product_stats=bp.ProductStats(*counts)
    )
    buy = bp.build_model(backbone, hidden_dim=8)

    def write_buy(tmp):
        signatures = buy_probability_export.export(buy, pre, catalog, tmp, history_length=4)
        card = {"name": "buy", "task": "buy_probability", "signatures": signatures}
        write_model_card(tmp, {**card, "history_length": 4, "backbone": "tiny random BERT"})

    store.publish(root, "buy", write_buy)

    ids = catalog["product_id"].astype(str).tolist()
    ranker = ranking.build_model(
        num_items=len(ids) + schema.NUM_RESERVED_IDS,
        sequence_length=8,
        num_layers=1,
        num_heads=1,
        hidden_dim=8,
        dropout=0.0,
    )
    popularity = data.events["product_id"].value_counts()
    popularity = np.concatenate(
        [np.zeros(schema.NUM_RESERVED_IDS), [popularity.get(i, 0) for i in ids]]
    )

    def write_ranker(tmp):
        signatures = ranking_export.export(ranker, ids, popularity, 8, tmp, catalog=catalog)
        card = {"name": "ranker", "task": "ranking", "signatures": signatures}
        write_model_card(tmp, {**card, "history_order": "oldest first"})

    store.publish(root, "ranker", write_ranker)

    backbone, text_pre = tiny_bert(sequence_length=32, hidden_dim=8)
    classify_pre = text_classification.TextClassificationPreprocessor(text_pre.tokenizer, 32)
    classifier = text_classification.build_model(backbone, len(LABELS))
    classifier(classify_pre(["warm up"]))

    def write_classifier(tmp):
        signatures = text_classification_export.export(classifier, classify_pre, LABELS, tmp)
        card = {"name": "categories", "task": "text_classification", "signatures": signatures}
        write_model_card(tmp, {**card, "labels": LABELS, "multi_label": False})

    store.publish(root, "categories", write_classifier)
    return ids


def add_store_arguments(parser):
    """`--store DIR` or `--make-models DIR` (tiny real exports in DIR/store), one required."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--store", help="a model store with buy, ranker and categories")
    source.add_argument("--make-models", metavar="DIR", help="build tiny real exports in DIR/store")


def resolve_store(args):
    """Sets `args.store`, building the tiny models first when `--make-models` names a new DIR."""
    if args.make_models:
        args.store = str(pathlib.Path(args.make_models) / "store")
        if not pathlib.Path(args.store).exists():
            make_models(args.store)


def emit(result, out=None, checks=None) -> int:
    """Prints `result` as JSON (also into `out`); returns 1 when any of `checks` failed."""
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        pathlib.Path(out).write_text(text)
    failed = [k for k, ok in (checks or {}).items() if not ok]
    if failed:
        print(f"FAILED: {failed}", file=sys.stderr)
    return 1 if failed else 0


def catalog_ids(store_root, name="buy"):
    import pandas as pd

    from recsys import store

    path = store.resolve(store_root, name) / "catalog.parquet"
    return pd.read_parquet(path)["product_id"].astype(str).tolist()


def republish(store_root, name, version=None, corrupt=False):
    """Publishes a copy of `version` of `name` (default: the newest) as the next version.

    With `corrupt=True` the copy's variables are truncated to half their size, as a copy cut
    short by a full disk or a killed `rsync` would leave them.
    """
    from recsys import store

    source = store.resolve(store_root, name, version)

    def write(tmp):
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        if corrupt:
            for data in sorted(pathlib.Path(tmp, "variables").glob("variables.data-*")):
                size = data.stat().st_size
                with open(data, "r+b") as f:
                    f.truncate(size // 2)

    return store.publish(store_root, name, write)


# -- processes -----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid) -> list[int]:
    out = []
    for task in pathlib.Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return sorted(set(out))


def rss_mb(pid) -> float | None:
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def socket_peers(pid) -> set[int]:
    """Client-side ports of the loopback TCP connections a process holds open."""
    inodes = set()
    for fd in pathlib.Path(f"/proc/{pid}/fd").glob("*"):
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = pathlib.Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[9] in inodes and fields[3] == "01":  # ESTABLISHED
                ports.add(int(fields[2].rsplit(":", 1)[1], 16))
    return ports


class Server:
    """`recsys serve` on a free loopback port; stdout and stderr go to `log`.

    Args:
        store: path. The model store.
        log: path. gunicorn's access and error log, and the app's log.
        workers, threads: int.
        env: dict. Extra environment (`RECSYS_*`).
    """

    def __init__(self, store, log, workers=2, threads=8, env=None):
        self.store, self.log = pathlib.Path(store), pathlib.Path(log)
        self.workers, self.threads = workers, threads
        self.env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
        for key in ("PROMETHEUS_MULTIPROC_DIR", "RECSYS_API_KEYS", "RECSYS_API_KEYS_FILE"):
            self.env.pop(key, None)
        self.env.update(env or {})
        self.proc = None
        self.port = None
        self.log.write_bytes(b"")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout=300.0):
        for _ in range(3):
            self.port = free_port()
            argv = [sys.executable, "-m", "recsys.cli", "serve", "--store", str(self.store)]
            argv += ["--workers", str(self.workers), "--threads", str(self.threads)]
            argv += ["--bind", f"127.0.0.1:{self.port}"]
            with open(self.log, "ab") as out:
                self.proc = subprocess.Popen(
                    argv, cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT
                )
            if self.wait_ready(timeout):
                return self
            if "in use" not in self.tail():
                break
        raise RuntimeError(f"recsys serve did not become ready:\n{self.tail()}")

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                status, _ = request(self.port, "GET", "/readyz", timeout=2)
                if status == 200 and len(self.workers_pids()) == self.workers:
                    return True
            except OSError:
                pass
            time.sleep(0.25)
        return False

    def workers_pids(self) -> list[int]:
        return children(self.proc.pid) if self.proc is not None else []

    def tail(self, chars=4000):
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def request(port, method, path, body=None, headers=None, timeout=30):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body, headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# -- the load ------------------------------------------------------------------------------------
def mixed_bodies(ids, count=300, seed=1):
    """`(path, body bytes)` cycling through /v1/score, /v1/recommend and /v1/classify."""
    rng = np.random.default_rng(seed)
    words = ["red", "mug", "trail", "shoe", "linen", "lamp", "wool", "desk", "tea", "kettle"]
    out = []
    for i in range(count):
        history = rng.choice(ids, 4, replace=False).tolist()
        if i % 3 == 0:
            body = {"model": "buy", "user": {"history": history}}
            body["products"] = rng.choice(ids, 10, replace=False).tolist()
            out.append(("/v1/score", body))
        elif i % 3 == 1:
            out.append(
                ("/v1/recommend", {"model": "ranker", "user": {"history": history}, "k": 10})
            )
        else:
            texts = [" ".join(rng.choice(words, 4)) for _ in range(2)]
            out.append(("/v1/classify", {"model": "categories", "texts": texts}))
    return [(path, json.dumps(body).encode()) for path, body in out]


@dataclasses.dataclass
class Record:
    start: float  # seconds since the load started
    end: float
    path: str
    status: int  # 0: no HTTP response (connection error)
    version: int | None
    error: str | None
    client_port: int | None


class Load:
    """`concurrency` client threads, each on its own keep-alive connection, sending `bodies`
    round robin until `duration` seconds have passed or `max_requests` were sent.

    `records` holds one `Record` per request. A request that got no HTTP response (reset,
    refused, timed out) is recorded with status 0 and the exception's name, and its thread
    opens a new connection.
    """

    def __init__(self, port, bodies, concurrency, duration, max_requests=10**7, headers=None):
        self.port, self.bodies = port, bodies
        self.concurrency, self.duration, self.max_requests = concurrency, duration, max_requests
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.records: list[Record] = []
        self._lock = threading.Lock()
        self._sent = 0
        self._stop = threading.Event()
        self._threads = []
        self.t0 = None

    def start(self):
        self.t0 = time.perf_counter()
        self._threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True)
            for i in range(self.concurrency)
        ]
        for t in self._threads:
            t.start()
        return self

    def stop(self):
        self._stop.set()

    def join(self):
        for t in self._threads:
            t.join()

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def _take(self) -> bool:
        with self._lock:
            if self._sent >= self.max_requests:
                return False
            self._sent += 1
            return True

    def _client(self, offset):
        conn, i = None, offset
        while not self._stop.is_set() and self.now() < self.duration and self._take():
            path, body = self.bodies[i % len(self.bodies)]
            i += self.concurrency
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            started, port = self.now(), None
            status, version, error = 0, None, None
            try:
                if conn.sock is None:
                    conn.connect()
                port = conn.sock.getsockname()[1]
                conn.request("POST", path, body, self.headers)
                resp = conn.getresponse()
                payload = resp.read()
                status = resp.status
                if status == 200:
                    version = json.loads(payload).get("version")
                else:
                    error = payload[:300].decode("utf-8", "replace")
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                error = type(e).__name__
                conn.close()
                conn = None
            record = Record(started, self.now(), path, status, version, error, port)
            with self._lock:
                self.records.append(record)
        if conn is not None:
            conn.close()


def percentile_ms(values, q) -> float | None:
    if len(values) == 0:
        return None
    return round(float(np.percentile(np.asarray(values) * 1000.0, q)), 1)


def summarize(records, start=0.0, end=float("inf")) -> dict:
    """Counts, throughput and latency of the records that started in `[start, end)`."""
    rows = [r for r in records if start <= r.start < end]
    ok = [r.end - r.start for r in rows if r.status == 200]
    span = (min(end, max((r.end for r in rows), default=start)) - start) or 1e-9
    statuses = {}
    for r in rows:
        statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
    return {
        "requests": len(rows),
        "ok": len(ok),
        "status_5xx": sum(1 for r in rows if r.status >= 500),
        "connection_errors": sum(1 for r in rows if r.status == 0),
        "statuses": statuses,
        "throughput_rps": round(len(ok) / span, 1),
        "p50_ms": percentile_ms(ok, 50),
        "p99_ms": percentile_ms(ok, 99),
        "max_ms": percentile_ms(ok, 100),
    }


def machine() -> dict:
    import platform

    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
