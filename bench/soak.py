"""Soak: `recsys serve` under a steady mixed load, with a model swap and a corrupt publish.

    python bench/soak.py --make-models /tmp/soak          # real tiny exports of all three tasks
    python bench/soak.py --store saved_models             # or a store with buy, ranker, categories
        [--duration 600] [--concurrency 64] [--workers 2] [--threads 8] [--out soak.json]

What it does (everything on 127.0.0.1, bounded in time):

1. Starts `recsys serve` with `--workers` workers and waits for `/readyz`.
2. `--concurrency` client threads on keep-alive connections send `POST /v1/score`,
   `/v1/recommend` and `/v1/classify` (round robin) for `--duration` seconds.
3. At `--swap-at` (a share of the duration) it publishes a copy of `buy` as a new version:
   every request must still succeed, and the responses must carry the new version within 10 s.
4. At `--corrupt-at` it publishes a version of `buy` with truncated variables: it must be
   refused (logged by every worker), and the good version must keep serving.
5. Every 5 s it reads each worker's resident memory (/proc).

Figures (printed as JSON, with `--markdown` as tables): requests, 5xx, connection errors,
throughput and p50/p99 per minute; the swap's timing; each worker's RSS at 1 minute and at the
end. The exit code is 0 when every criterion holds: zero 5xx, zero connection errors, the swap
within 10 s with no failed request, the corrupt version refused with the old one serving, and
worker RSS growth after the first minute under 10 %.
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import re
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import reliability as rel  # noqa: E402

SWAP_LIMIT_S = 10.0
RSS_LIMIT = 0.10


def _sample_memory(server, samples, stop, load, every=5.0):
    while not stop.wait(every):
        samples.append(
            {"t": round(load.now(), 1), "rss_mb": {p: rel.rss_mb(p) for p in server.workers_pids()}}
        )


def memory_growth(samples, after=60.0) -> dict:
    """Each worker's RSS at the first sample after `after` seconds and at the last sample."""
    out = {}
    pids = set().union(*(s["rss_mb"] for s in samples)) if samples else set()
    for pid in sorted(pids):
        seen = [(s["t"], s["rss_mb"][pid]) for s in samples if s["rss_mb"].get(pid) is not None]
        base = next(((t, v) for t, v in seen if t >= after), None)
        if base is None or not seen:
            continue
        last = seen[-1]
        out[str(pid)] = {
            "rss_mb_at": {str(base[0]): round(base[1], 1), str(last[0]): round(last[1], 1)},
            "peak_mb": round(max(v for _, v in seen), 1),
            "growth": round((last[1] - base[1]) / base[1], 4),
        }
    return out


def swap_timing(records, published_at, old, new) -> dict:
    """How the `/v1/score` responses moved from version `old` to `new` after `published_at`."""
    after = [r for r in records if r.path == "/v1/score" and r.start >= published_at]
    first_new = min((r.end for r in after if r.version == new), default=None)
    last_old = max((r.end for r in after if r.version == old), default=None)
    failed = sum(1 for r in records if r.end >= published_at and r.status != 200)
    switched = max(first_new or 0.0, last_old or 0.0) - published_at
    return {
        "published_at_s": round(published_at, 2),
        "old_version": old,
        "new_version": new,
        "first_new_response_s": None if first_new is None else round(first_new - published_at, 2),
        "last_old_response_s": None if last_old is None else round(last_old - published_at, 2),
        "switched_s": round(switched, 2) if first_new is not None else None,
        "failed_requests_after_publish": failed,
    }


def run(args) -> dict:
    store = pathlib.Path(args.store)
    from recsys import store as store_lib

    before = store_lib.versions(store, "buy")
    if not before:
        raise SystemExit(f"{store} has no `buy` model; use --make-models DIR")
    work = pathlib.Path(args.log_dir or tempfile.mkdtemp(prefix="soak-"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / "server.log"
    server = rel.Server(store, log, workers=args.workers, threads=args.threads)
    server.start()
    try:
        status, body = rel.request(server.port, "GET", "/v1/models/buy")
        serving_at_start = json.loads(body)["version"]
        ids = rel.catalog_ids(store, "buy")
        load = rel.Load(
            server.port, rel.mixed_bodies(ids), args.concurrency, args.duration, args.max_requests
        )
        samples, stop = [], threading.Event()
        pids_at_start = server.workers_pids()
        load.start()
        sampler = threading.Thread(target=_sample_memory, args=(server, samples, stop, load))
        sampler.start()
        events = {}
        for name, share, corrupt in (
            ("swap", args.swap_at, False),
            ("corrupt", args.corrupt_at, True),
        ):
            if share is None:
                continue
            while load.now() < share * args.duration:
                time.sleep(0.05)
            path = rel.republish(store, "buy", serving_at_start, corrupt=corrupt)
            events[name] = {"at": load.now(), "version": int(path.name)}
        load.join()
        stop.set()
        sampler.join()
        pids_at_end = server.workers_pids()
        status, body = rel.request(server.port, "GET", "/v1/models/buy")
        serving = json.loads(body).get("version") if status == 200 else None
        ready, _ = rel.request(server.port, "GET", "/readyz")
    finally:
        server.stop()
    records = load.records
    minutes = []
    for m in range(int((args.duration + 59) // 60)):
        row = rel.summarize(records, 60.0 * m, 60.0 * (m + 1))
        minutes.append({"minute": m + 1, **{k: row[k] for k in ("requests", "status_5xx",
                        "connection_errors", "throughput_rps", "p50_ms", "p99_ms")}})  # fmt: skip
    result = {
        "date": datetime.date.today().isoformat(),
        "settings": {
            "duration_s": args.duration,
            "concurrency": args.concurrency,
            "workers": args.workers,
            "threads": args.threads,
            "store": str(store),
            "log": str(log),
        },
        "machine": rel.machine(),
        "total": rel.summarize(records),
        "by_endpoint": {
            path: rel.summarize([r for r in records if r.path == path])
            for path in ("/v1/score", "/v1/recommend", "/v1/classify")
        },
        "per_minute": minutes,
        "workers": {"at_start": pids_at_start, "at_end": pids_at_end},
        "memory": memory_growth(samples),
        "memory_samples": samples,
        "errors": sorted({r.error for r in records if r.status != 200})[:20],
    }
    text = log.read_text(errors="replace")
    if "swap" in events:
        result["swap"] = swap_timing(
            records, events["swap"]["at"], serving_at_start, events["swap"]["version"]
        )
    if "corrupt" in events:
        version = events["corrupt"]["version"]
        refused = len(re.findall(rf"Could not load buy version {version}\b", text))
        after = [r for r in records if r.path == "/v1/score" and r.start >= events["corrupt"]["at"]]
        result["corrupt"] = {
            "published_at_s": round(events["corrupt"]["at"], 2),
            "version": version,
            "refusals_logged": refused,
            "responses_after": len(after),
            "versions_served_after": sorted({r.version for r in after if r.version}),
            "serving_at_end": serving,
            "ready_at_end": ready == 200,
        }
    result["checks"] = checks(result, args.workers)
    return result


def checks(result, workers) -> dict:
    total = result["total"]
    out = {
        "zero_5xx": total["status_5xx"] == 0,
        "zero_connection_errors": total["connection_errors"] == 0,
        "every_request_ok": total["ok"] == total["requests"],
        "workers_unchanged": result["workers"]["at_start"] == result["workers"]["at_end"],
        "rss_growth_under_10pct": bool(result["memory"])
        and all(m["growth"] < RSS_LIMIT for m in result["memory"].values()),
    }
    if "swap" in result:
        swap = result["swap"]
        out["swap_within_10s"] = (
            swap["switched_s"] is not None and swap["switched_s"] <= SWAP_LIMIT_S
        )
        out["swap_no_failed_request"] = swap["failed_requests_after_publish"] == 0
    if "corrupt" in result:
        bad = result["corrupt"]
        good = result["swap"]["new_version"] if "swap" in result else None
        out["corrupt_refused_by_every_worker"] = bad["refusals_logged"] >= workers
        out["corrupt_old_version_serves"] = (
            bad["serving_at_end"] != bad["version"]
            and bad["version"] not in bad["versions_served_after"]
            and (good is None or bad["serving_at_end"] == good)
            and bad["ready_at_end"]
        )
    return out


def markdown(result) -> str:
    lines = ["| minute | requests | 5xx | connection errors | req/s | p50 ms | p99 ms |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for m in result["per_minute"]:
        lines.append(
            f"| {m['minute']} | {m['requests']} | {m['status_5xx']} | {m['connection_errors']} | "
            f"{m['throughput_rps']} | {m['p50_ms']} | {m['p99_ms']} |"
        )
    lines += ["", "| worker | RSS after 1 min (MB) | RSS at end (MB) | growth |",
              "| --- | ---: | ---: | ---: |"]  # fmt: skip
    for pid, m in result["memory"].items():
        first, last = list(m["rss_mb_at"].values())[0], list(m["rss_mb_at"].values())[-1]
        lines.append(f"| {pid} | {first} | {last} | {100 * m['growth']:.1f} % |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    rel.add_store_arguments(parser)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load (600)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-requests", type=int, default=2_000_000, help="bound on requests")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--swap-at", type=float, default=0.4, help="share of the duration")
    parser.add_argument("--corrupt-at", type=float, default=0.6, help="share of the duration")
    parser.add_argument("--log-dir", help="where the server log goes (default: a temp dir)")
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    rel.resolve_store(args)
    result = run(args)
    code = rel.emit(result, args.out, result["checks"])
    if args.markdown:
        print(markdown(result))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
