"""A micro-batcher: concurrent requests to one model are coalesced into one model call.

Like TensorFlow Serving's batching, a batch closes when it holds `max_batch_size` rows or when
`timeout_ms` has passed since its first request, whichever comes first. While the model runs,
new requests queue up and form the next batch, so batches grow with the load on their own.
Each batcher owns one daemon thread that starts on the first request and ends after a while
idle (no thread outlives its model for long, and nothing runs at import). A batch whose call
fails is run again one request at a time, so a request that breaks the model fails alone and
never takes the requests that happened to share its batch with it.

Example:
>>> batcher = MicroBatcher(lambda items: [sum(x) for x in items], max_batch_size=8)
>>> batcher.submit([1, 2, 3], rows=3)
6
"""

from __future__ import annotations

import collections
import logging
import threading
import time

logger = logging.getLogger(__name__)


class _Job:
    __slots__ = ("item", "rows", "done", "result", "error")

    def __init__(self, item, rows):
        self.item, self.rows = item, rows
        self.done = threading.Event()
        self.result = self.error = None


class MicroBatcher:
    """Coalesces `submit(item)` calls from many threads into `fn(list_of_items)` calls.

    Args:
        fn: callable. Takes a list of items, returns a list of results in the same order.
        max_batch_size: int. Most rows per call (a single larger request runs alone).
        timeout_ms: float. Longest wait for more requests after the first of a batch.
        name: str. For logs and metrics.
        on_batch: callable(rows, requests) or None. Observes each call (metrics).
        idle_s: float. The thread exits after this long without requests.
    """

    def __init__(
        self, fn, max_batch_size=64, timeout_ms=2.0, name="batch", on_batch=None, idle_s=30.0
    ):
        if max_batch_size < 1:
            raise ValueError(f"`max_batch_size` must be >= 1. Received: {max_batch_size}")
        self.fn, self.name, self.on_batch = fn, name, on_batch
        self.max_batch_size = int(max_batch_size)
        self.timeout_s = max(0.0, float(timeout_ms)) / 1000.0
        self.idle_s = idle_s
        self._queue = collections.deque()
        self._cond = threading.Condition()
        self._thread = None

    def submit(self, item, rows=1):
        """Runs `item` in the next batch and returns its result (or raises its error)."""
        job = _Job(item, max(1, int(rows)))
        with self._cond:
            self._queue.append(job)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name=f"batcher-{self.name}", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def _next_batch(self):
        """Blocks for the first job, then gathers more until full or timed out; None if idle."""
        with self._cond:
            if not self._queue:
                self._cond.wait(self.idle_s)
            if not self._queue:
                self._thread = None  # a later submit starts a new thread
                return None
            batch = [self._queue.popleft()]
            rows = batch[0].rows
            deadline = time.monotonic() + self.timeout_s
            while rows < self.max_batch_size:
                if self._queue:
                    if rows + self._queue[0].rows > self.max_batch_size:
                        break
                    job = self._queue.popleft()
                    batch.append(job)
                    rows += job.rows
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return batch, rows

    def _run(self, batch):
        results = self.fn([job.item for job in batch])
        if len(results) != len(batch):
            raise RuntimeError(
                f"Batch function {self.name} returned {len(results)} results "
                f"for {len(batch)} requests."
            )
        for job, result in zip(batch, results, strict=True):
            job.result = result

    def _loop(self):
        while True:
            got = self._next_batch()
            if got is None:
                return
            batch, rows = got
            try:
                self._run(batch)
            except Exception as e:  # one bad request must not fail the others: run each alone
                if len(batch) == 1:
                    batch[0].error = e
                else:
                    logger.warning(
                        "Batch %s of %d requests failed; running them one by one",
                        self.name,
                        len(batch),
                    )
                    for job in batch:
                        try:
                            self._run([job])
                        except Exception as e:
                            job.error = e
            if self.on_batch is not None:
                try:
                    self.on_batch(rows, len(batch))
                except Exception:
                    logger.exception("Batch observer failed")
            for job in batch:
                job.done.set()
