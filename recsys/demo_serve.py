"""The demo's service: `recsys serve` (gunicorn) on loopback, a tour of its API, and Ctrl-C.

The service runs as a real subprocess in its own session, so Ctrl-C reaches only the demo,
which then stops gunicorn gracefully (SIGTERM; SIGKILL to its process group if it hangs).
The API tour uses only the public HTTP API, through `urllib`.

Example:
>>> shorten("A very long review that goes on and on", 20)
'A very long review…'
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

REVIEWS = (
    "Absolutely love it: great quality, fits perfectly and arrived early.",
    "It is okay. Does the job, nothing special for the price.",
    "Fell apart after a week. Cheap material, very disappointed, returning it.",
)


class ServiceError(RuntimeError):
    """The service did not start, or an API call failed."""


def port_is_free(port, host="127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def pick_port(preferred=8000) -> int:
    """`preferred` when it is free, else any free loopback port."""
    if preferred and port_is_free(preferred):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """A `recsys serve` subprocess on loopback.

    Args:
        store: Path. The model store.
        port: int. The loopback port.
        log: Path. Where gunicorn's output goes.
        events: Path or None. The events table behind `/v1/users` (`RECSYS_EVENTS`).
        catalog: Path or None. The catalog file (`RECSYS_CATALOG`).
        workers: int. gunicorn workers.
    """

    def __init__(self, store, port, log, events=None, catalog=None, workers=1):
        self.url = f"http://127.0.0.1:{port}"
        self.log = pathlib.Path(log)
        self.argv = [sys.executable, "-m", "recsys.cli", "serve", "--store", str(store)]
        self.argv += ["--bind", f"127.0.0.1:{port}", "--workers", str(workers)]
        if catalog:
            self.argv += ["--catalog", str(catalog)]
        self.env = {
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
        }
        if events:
            self.env["RECSYS_EVENTS"] = str(pathlib.Path(events).resolve())
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.proc = None

    def start(self):
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,  # Ctrl-C goes to the demo, which stops gunicorn
            )
        return self

    def tail(self, chars=3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_ready(self, timeout=300.0):
        """Waits until `/readyz` answers 200 (every model loaded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceError(
                    f"recsys serve exited with code {self.proc.returncode}:\n{self.tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=5) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise ServiceError(f"recsys serve was not ready after {timeout:.0f} s:\n{self.tail()}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=40.0):
        """SIGTERM (gunicorn's graceful stop), then SIGKILL to the whole group if needed."""
        if not self.running():
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def http_caller(base_url, timeout=120.0):
    """`call(path, body=None) -> (json, milliseconds)` over HTTP; API errors raise."""

    def call(path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            base_url + path,
            data=data,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                payload = json.load(resp)
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            raise ServiceError(f"{path} answered {e.code}: {detail}") from None
        return payload, (time.perf_counter() - started) * 1000

    return call


def shorten(text, width) -> str:
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def tour(call, user, history, titles, contrast, names):
    """Calls `/v1/recommend`, `/v1/score` and `/v1/classify` and prints readable answers.

    Args:
        call: `call(path, body) -> (json, ms)`, e.g. `http_caller(url)`.
        user: str. The shopper's id.
        history: list of (product_id, event), most recent first.
        titles: mapping product id -> title.
        contrast: list of product ids to score beside the recommendations.
        names: dict. "buy", "ranker", "classifier" -> model name in the store.
    """
    print(f"\nShopper {user}, most recent first:")
    for pid, event in history[:6]:
        print(f"  {event:<8}  {titles.get(pid, pid)}")
    body = [{"id": pid, "event": event} for pid, event in history]
    recs, ms = call("/v1/recommend", {"model": names["ranker"], "user": {"history": body}, "k": 5})
    ids = [item["id"] for item in recs["items"]]
    scored, ms_score = call(
        "/v1/score",
        {"model": names["buy"], "user": {"history": body}, "products": ids + list(contrast)},
    )
    probability = {s["id"]: s["probability"] for s in scored["scores"]}
    print(
        f"\nPOST /v1/recommend: top 5 from {recs['model']} v{recs['version']} ({ms:.0f} ms), "
        f"with POST /v1/score buy probabilities from {scored['model']} v{scored['version']} "
        f"({ms_score:.0f} ms):"
    )
    for rank, item in enumerate(recs["items"], 1):
        title = item.get("title") or titles.get(item["id"], item["id"])
        print(f"  {rank}. {probability[item['id']]:6.1%}  {title} ({item.get('category')})")
    print("  ...and products it did not recommend:")
    for pid in contrast:
        print(f"     {probability[pid]:6.1%}  {titles.get(pid, pid)}")
    answer, ms = call("/v1/classify", {"model": names["classifier"], "texts": list(REVIEWS)})
    print(f"\nPOST /v1/classify with {answer['model']} v{answer['version']} ({ms:.0f} ms):")
    for text, prediction in zip(REVIEWS, answer["predictions"], strict=True):
        p = prediction["probabilities"][prediction["label"]]
        print(f'  {prediction["label"]:<9} {p:6.1%}  "{shorten(text, 60)}"')


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Turns SIGTERM into KeyboardInterrupt, so that `kill` stops the demo as Ctrl-C does."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def wait_interruptibly(proc, poll_seconds=0.5) -> int:
    """`proc.wait()` that Ctrl-C always interrupts; returns the exit code.

    A blocking `waitpid` wakes only when the signal lands on the main thread; the kernel may
    hand a process's SIGINT to any of its threads (TensorFlow's, a timer's), and then a plain
    `wait()` would never return. Waiting in short slices lets Python run its handler.
    """
    while True:
        try:
            return proc.wait(timeout=poll_seconds)
        except subprocess.TimeoutExpired:
            continue


def serve_until_interrupted(service) -> int:
    """Blocks until Ctrl-C (exit 0) or until the service dies (exit 1); stops it either way."""
    try:
        with sigterm_as_interrupt():
            code = wait_interruptibly(service.proc)
        print(f"\nThe service stopped by itself (exit code {code}); see {service.log}.")
        return 1
    except KeyboardInterrupt:
        print("\nStopping the service ...", flush=True)
        return 0
    finally:
        service.stop()
        if service.proc is not None and service.proc.returncode is not None:
            print("Service stopped.", flush=True)
