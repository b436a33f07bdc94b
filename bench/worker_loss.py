"""Worker loss: SIGKILL one gunicorn worker of `recsys serve` under load.

    python bench/worker_loss.py --make-models /tmp/soak      # or --store DIR
        [--concurrency 64] [--duration 90] [--kill-at 30] [--out worker_loss.json]

`recsys serve` runs with 2 workers; `--concurrency` client threads send the mixed load of
`bench/soak.py` (score, recommend, classify) on keep-alive connections. At `--kill-at` seconds
one worker is killed with SIGKILL. Just before, the script reads from /proc which client
connections that worker holds, so every failed request can be attributed: only requests on the
killed worker's connections (those in flight on it) may fail.

Figures: failed requests (on the killed worker's connections, and elsewhere), the time until
gunicorn started a replacement, until the replacement served its models (its log line), and
until throughput was back to 90 % of the 10 s before the kill (3 s moving average); throughput
per second around the kill. Exit code 0 when no request failed outside the killed worker's
connections and throughput recovered.
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import re
import signal
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import reliability as rel  # noqa: E402

RECOVERED = 0.9


def per_second(records, duration):
    counts = np.zeros(int(duration) + 2)
    for r in records:
        if r.status == 200:
            counts[min(int(r.end), len(counts) - 1)] += 1
    return counts


def recovery_time(counts, kill_at, window=3, baseline_s=10):
    """Seconds after the kill until the `window`-second moving average is back to 90 %."""
    k = int(kill_at)
    baseline = counts[max(0, k - baseline_s) : k].mean()
    for s in range(k, len(counts) - window):
        if counts[s : s + window].mean() >= RECOVERED * baseline:
            return s + window - kill_at, float(baseline)
    return None, float(baseline)


def _serving_since(log_text, pid):
    """Wall-clock time of the replacement worker's first 'Serving ...' line."""
    for line in log_text.splitlines():
        match = re.match(r"(\S+ \S+) \[(\d+)\] INFO serving\.model_store: Serving ", line)
        if match and int(match.group(2)) == pid:
            stamp = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
            return stamp.timestamp()
    return None


def run(args) -> dict:
    store = pathlib.Path(args.store)
    work = pathlib.Path(args.log_dir or tempfile.mkdtemp(prefix="worker-loss-"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / "server.log"
    server = rel.Server(store, log, workers=2, threads=args.threads)
    server.start()
    try:
        ids = rel.catalog_ids(store, "buy")
        load = rel.Load(server.port, rel.mixed_bodies(ids), args.concurrency, args.duration)
        before = server.workers_pids()
        victim = before[0]
        load.start()
        while load.now() < args.kill_at:
            time.sleep(0.01)
        ports = rel.socket_peers(victim)
        os.kill(victim, signal.SIGKILL)
        killed_at, killed_wall = load.now(), time.time()
        replacement, replaced_at = None, None
        while load.now() < args.duration and replacement is None:
            new = sorted(set(server.workers_pids()) - set(before))
            if new:
                replacement, replaced_at = new[0], load.now()
            time.sleep(0.02)
        load.join()
        after = server.workers_pids()
        ready, _ = rel.request(server.port, "GET", "/readyz")
    finally:
        server.stop()
    records = load.records
    failed = [r for r in records if r.status != 200]
    on_victim = [r for r in failed if r.client_port in ports]
    serving_wall = _serving_since(log.read_text(errors="replace"), replacement or -1)
    counts = per_second(records, args.duration)
    recovered, baseline = recovery_time(counts, killed_at)
    k = int(killed_at)
    result = {
        "date": datetime.date.today().isoformat(),
        "settings": {
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "kill_at_s": args.kill_at,
            "workers": 2,
            "threads": args.threads,
            "log": str(log),
        },
        "machine": rel.machine(),
        "total": rel.summarize(records),
        "killed_worker": victim,
        "connections_on_killed_worker": len(ports),
        "failed_requests": len(failed),
        "failed_on_killed_worker_connections": len(on_victim),
        "failed_elsewhere": len(failed) - len(on_victim),
        "failure_kinds": sorted({r.error for r in failed}),
        "replacement_worker": replacement,
        "replacement_started_s": None if replaced_at is None else round(replaced_at - killed_at, 2),
        "replacement_serving_s": None
        if serving_wall is None
        else round(serving_wall - killed_wall, 2),
        "throughput_baseline_rps": round(baseline, 1),
        "full_throughput_after_s": None if recovered is None else round(recovered, 1),
        "throughput_per_second": {
            str(s - k): int(counts[s]) for s in range(max(0, k - 10), min(len(counts), k + 40))
        },
        "workers_at_end": after,
        "ready_at_end": ready == 200,
    }
    result["checks"] = {
        "only_killed_worker_requests_failed": result["failed_elsewhere"] == 0,
        "failed_at_most_its_connections": len(on_victim) <= max(len(ports), 1),
        "replaced": replacement is not None and len(after) == 2,
        "throughput_recovered": recovered is not None,
        "ready_at_end": result["ready_at_end"],
    }
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    rel.add_store_arguments(parser)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=90.0)
    parser.add_argument("--kill-at", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--log-dir")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    rel.resolve_store(args)
    result = run(args)
    return rel.emit(result, args.out, result["checks"])


if __name__ == "__main__":
    raise SystemExit(main())
