"""The micro-batcher coalesces concurrent requests, keeps order, bounds batches, and fails
every request of a failed batch."""

import threading
import time

import pytest

from serving.batching import MicroBatcher


def _concurrently(n, fn):
    results, errors = [None] * n, [None] * n
    start = threading.Barrier(n)

    def run(i):
        start.wait()
        try:
            results[i] = fn(i)
        except Exception as e:
            errors[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return results, errors


def test_concurrent_requests_share_model_calls_and_keep_their_results():
    calls = []

    def model(items):
        calls.append(len(items))
        time.sleep(0.05)
        return [x * 10 for x in items]

    batcher = MicroBatcher(model, max_batch_size=64, timeout_ms=20)
    results, errors = _concurrently(16, lambda i: batcher.submit(i))
    assert errors == [None] * 16
    assert results == [i * 10 for i in range(16)]
    assert sum(calls) == 16 and len(calls) < 16


def test_batches_never_exceed_the_row_limit_but_a_big_request_runs_alone():
    sizes = []

    def model(items):
        sizes.append(sum(len(x) for x in items))
        time.sleep(0.02)
        return [len(x) for x in items]

    batcher = MicroBatcher(model, max_batch_size=5, timeout_ms=20)
    results, errors = _concurrently(8, lambda i: batcher.submit([0] * 2, rows=2))
    assert results == [2] * 8 and max(sizes) <= 5
    assert batcher.submit([0] * 9, rows=9) == 9  # larger than the limit: alone


def test_an_error_reaches_every_request_of_the_batch_and_the_batcher_recovers():
    def model(items):
        if "bad" in items:
            raise ValueError("boom")
        return items

    batcher = MicroBatcher(model, timeout_ms=50)
    _, errors = _concurrently(3, lambda i: batcher.submit("bad" if i == 0 else "ok"))
    assert any(isinstance(e, ValueError) for e in errors)
    assert batcher.submit("fine") == "fine"


def test_the_thread_exits_when_idle_and_restarts_on_demand():
    batcher = MicroBatcher(lambda items: items, idle_s=0.05)
    assert batcher.submit(1) == 1
    time.sleep(0.3)
    assert batcher._thread is None
    assert batcher.submit(2) == 2


def test_a_wrong_number_of_results_is_an_error():
    batcher = MicroBatcher(lambda items: [])
    with pytest.raises(RuntimeError, match="returned 0 results"):
        batcher.submit(1)
