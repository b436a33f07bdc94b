"""Training and batch scoring killed with SIGKILL at random points, then started again.

    python bench/kill_restart.py --work /tmp/kill [--kills 5] [--seed 0] [--out kill.json]
        [--only train|score]

Training: `recsys train` on a tiny buy-probability config (random 1-layer BERT, synthetic
store) with early stopping off. An uninterrupted run gives the reference; then the same job
(same `--run-dir`) is killed `--kills` times, each time after a random delay, and started again
until it completes. Checks: the run completes; the epochs that made the final model follow on
from each other (0 .. E-1, none run twice after its backup was saved), as many as in the
reference; exactly one version published, as in the reference.

Scoring: `recsys score` of every (user, product) pair of the synthetic store with a real tiny
buy export, and of a 40,000-row texts table with a real tiny text-classification export.
Each is run once uninterrupted, then killed `--kills` times at random delays and restarted
with the same arguments. Checks: the killed job completes, and its output equals the
uninterrupted run's row by row (`pandas.testing.assert_frame_equal`), with no temporary file
left.

For each kill the script records the delay and where the job was (epochs logged, parts
written), and prints everything as JSON; exit code 0 when every check holds.
`kill_and_restart()` is shared with tests/reliability/test_kill_restart.py.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import reliability as rel  # noqa: E402

REPO = rel.REPO
FIXED_TRAIN_S = 20.0  # about what a tiny `recsys train` spends outside its epochs, on 2 cores
FIXED_SCORE_S = 8.0  # about what `recsys score` spends before its first part


def _env():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    env.pop("TF_CONFIG", None)
    return env


def run_to_end(argv, log, timeout=900) -> tuple[int, float]:
    started = time.monotonic()
    with open(log, "ab") as out:
        proc = subprocess.run(
            argv, cwd=REPO, env=_env(), stdout=out, stderr=subprocess.STDOUT, timeout=timeout
        )
    return proc.returncode, time.monotonic() - started


def kill_and_restart(argv, log, kills, when, progress, timeout=900):
    """Runs `argv`, kills it `kills` times and starts it again, then lets it finish.

    Args:
        argv: list of str. The command (run from the repository root).
        log: path. stdout and stderr of every attempt, appended.
        kills: int. How many times to kill it.
        when: callable(attempt) -> float or callable. Seconds after the start to kill, or a
            predicate polled every 20 ms that says "kill now".
        progress: callable() -> dict. Where the job is; recorded at each kill.

    Returns:
        (attempts, exit code of the last run): one dict per attempt with its delay, whether it
        was killed or ended by itself, and `progress()` at that moment.
    """
    attempts = []
    deadline = time.monotonic() + timeout
    while True:
        killing = sum(a["killed"] for a in attempts) < kills
        trigger = when(len(attempts)) if killing else None
        started = time.monotonic()
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                argv, cwd=REPO, env=_env(), stdout=out, stderr=subprocess.STDOUT
            )
            while proc.poll() is None:
                elapsed = time.monotonic() - started
                due = trigger is not None and (
                    trigger() if callable(trigger) else elapsed >= trigger
                )
                if due:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
                    break
                if time.monotonic() > deadline:
                    proc.kill()
                    proc.wait()
                    raise TimeoutError(f"{argv[:4]} did not finish in {timeout} s")
                time.sleep(0.02)
        killed = proc.returncode == -signal.SIGKILL
        attempts.append(
            {
                "attempt": len(attempts) + 1,
                "seconds": round(time.monotonic() - started, 2),
                "killed": killed,
                "exit_code": None if killed else proc.returncode,
                "progress": progress(),
            }
        )
        if not killed:
            return attempts, proc.returncode


# -- training ------------------------------------------------------------------------------------
def tiny_train_config(work, epochs):
    from recsys.data import synthetic
    from tests.conftest import tiny_buy_config

    data = work / "synth"
    if not data.exists():
        synthetic.write_store(
            synthetic.generate(products=60, users=40, seed=0, events_target=1400), data
        )
    return tiny_buy_config(
        work / "buy.yaml", store_dir=data, epochs=epochs, early_stopping_patience=None
    )


def train_argv(config, store, run_dir):
    return [sys.executable, "-m", "recsys.cli", "train", str(config), "--store", str(store),
            "--run-dir", str(run_dir)]  # fmt: skip


def logged_epochs(run_dir) -> list[int]:
    """The epoch numbers in `training_log.csv`, in the order they were logged."""
    log = pathlib.Path(run_dir) / "training_log.csv"
    if not log.is_file():
        return []
    rows = log.read_text().strip().splitlines()
    return [int(r.split(",", 1)[0]) for r in rows if r[:1].isdigit()]


def lineage(epochs) -> list[int]:
    """The epochs behind the final model: the log from the last restart at epoch 0 on."""
    starts = [i for i, e in enumerate(epochs) if e == 0]
    return epochs[starts[-1] :] if starts else epochs


def check_training(run_dir, store, epochs) -> dict:
    from recsys import store as store_lib

    logged = logged_epochs(run_dir)
    final = lineage(logged)
    report = json.loads((pathlib.Path(run_dir) / "report.json").read_text())
    leftovers = [p.name for p in (pathlib.Path(store) / "buy").glob(".tmp-*")]
    return {
        "epochs_logged": logged,
        "final_model_epochs": final,
        "epochs_run_twice": len(logged) - len(set(logged)),
        "epochs_run_by_last_attempt": report["training"]["epochs_run"],
        "versions_published": store_lib.versions(store, "buy"),
        "temporary_dirs_left_in_store": leftovers,
        "ok": final == list(range(epochs)) and store_lib.versions(store, "buy") == [1],
    }


def train_job(work, kills, seed, epochs=10, reference=True):
    work = pathlib.Path(work) / "train"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    config = tiny_train_config(work, epochs)
    log = work / "train.log"
    out = {"epochs": epochs}
    if reference:
        code, seconds = run_to_end(train_argv(config, work / "ref_store", work / "ref_run"), log)
        out["reference"] = {"exit_code": code, "seconds": round(seconds, 1),
                            **check_training(work / "ref_run", work / "ref_store", epochs)}  # fmt: skip
        span = max(seconds, 10.0)
    else:
        span = 40.0
    rng = random.Random(seed)
    run_dir, store = work / "run", work / "store"

    def progress():
        return {
            "epochs_logged": len(logged_epochs(run_dir)),
            "backup": (run_dir / "backup").exists(),
            "published": [p.name for p in (store / "buy").glob("*")] if store.exists() else [],
        }

    fixed = min(FIXED_TRAIN_S, 0.6 * span)  # start-up, evaluation and export
    per_epoch = (span - fixed) / epochs

    def delay(attempt):  # anywhere in what is left of the job, start-up included
        # a restart resumes from the backup during `fit`, skips `fit` once it has ended (the
        # weights are kept in `fitted/`), and begins at epoch 0 otherwise
        if (run_dir / "fitted" / "fit.json").exists():
            done = epochs
        elif (run_dir / "backup").exists():
            done = len(lineage(logged_epochs(run_dir)))
        else:
            done = 0
        return rng.uniform(1.0, 0.9 * (fixed + per_epoch * (epochs - done)))

    attempts, code = kill_and_restart(
        train_argv(config, store, run_dir), log, kills, delay, progress
    )
    out["killed_run"] = {"attempts": attempts, "exit_code": code,
                         **check_training(run_dir, store, epochs)}  # fmt: skip
    return out


# -- scoring -------------------------------------------------------------------------------------
def score_inputs(work):
    """A store with real tiny exports, a texts table (40,000 rows) and the synthetic store."""
    import numpy as np
    import pandas as pd

    from recsys.data import synthetic

    store = work / "models"
    if not store.exists():
        rel.make_models(store)
    data = work / "synth"
    if not data.exists():
        synthetic.write_store(synthetic.generate(products=120, users=80, seed=0), data)
    texts = work / "texts.csv"
    if not texts.exists():
        rng = np.random.default_rng(0)
        words = np.array(["red", "mug", "trail", "shoe", "lamp", "linen", "wool", "desk", "tea"])
        rows = 40_000
        pd.DataFrame(
            {
                "item_id": [f"i{i}" for i in range(rows)],
                "text": [" ".join(rng.choice(words, size=5)) for _ in range(rows)],
            }
        ).to_csv(texts, index=False)
    return store, data, texts


def score_jobs(work):
    work = pathlib.Path(work) / "score"
    work.mkdir(parents=True, exist_ok=True)
    store, data, texts = score_inputs(work)
    base = [sys.executable, "-m", "recsys.cli", "score", "--no-progress"]
    return {
        "buy_users_x_catalog": base + ["--model", str(store / "buy"), "--users",
                                       str(data / "events.parquet"), "--catalog",
                                       str(data / "catalog.parquet"), "--part-rows", "600",
                                       "--batch-size", "32"],
        "classify_texts": base + ["--model", str(store / "categories"), "--catalog", str(texts),
                                  "--text-column", "text", "--id-column", "item_id",
                                  "--part-rows", "2000", "--batch-size", "16"],
    }, work  # fmt: skip


def read_output(out):
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted(pathlib.Path(out).glob("part-*.parquet"))
    if not parts:
        return pd.DataFrame()
    return pa.concat_tables(pq.read_table(p) for p in parts).to_pandas()


def compare_outputs(reference, resumed) -> dict:
    import pandas as pd

    a, b = read_output(reference), read_output(resumed)
    try:
        pd.testing.assert_frame_equal(a, b)
        equal, difference = True, None
    except AssertionError as e:
        equal, difference = False, str(e)[:500]
    leftovers = [p.name for p in pathlib.Path(resumed).iterdir() if p.name.startswith(".part")]
    leftovers += [p.name for p in pathlib.Path(resumed).glob("_staging")]
    manifest = json.loads((pathlib.Path(resumed) / "_manifest.json").read_text())
    return {
        "rows": len(b),
        "reference_rows": len(a),
        "equal_row_by_row": equal,
        "difference": difference,
        "temporary_files_left": leftovers,
        "complete": bool(manifest.get("complete")),
        "ok": equal and not leftovers and bool(manifest.get("complete")),
    }


def score_job(name, argv, work, kills, seed, reference=True):
    log = work / f"{name}.log"
    ref, out = work / f"{name}-reference", work / f"{name}-killed"
    for path in (ref, out):
        shutil.rmtree(path, ignore_errors=True)
    result = {}
    span = 20.0
    if reference:
        code, seconds = run_to_end(argv + ["--out", str(ref)], log)
        result["reference"] = {"exit_code": code, "seconds": round(seconds, 1)}
        span = max(seconds, 5.0)
    rng = random.Random(seed)

    def progress():
        return {"parts_written": len(list(out.glob("part-*.parquet"))),
                "manifest": (out / "_manifest.json").exists()}  # fmt: skip

    fixed = min(FIXED_SCORE_S, 0.6 * span)
    parts = max(1, len(list(ref.glob("part-*.parquet"))))

    def delay(attempt):
        done = len(list(out.glob("part-*.parquet")))
        return rng.uniform(0.5, 0.9 * (fixed + (span - fixed) * (1 - done / parts)))

    attempts, code = kill_and_restart(argv + ["--out", str(out)], log, kills, delay, progress)
    result["killed_run"] = {"attempts": attempts, "exit_code": code}
    if reference:
        result["killed_run"].update(compare_outputs(ref, out))
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", required=True, help="a scratch folder")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--only", choices=["train", "score"])
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    work = pathlib.Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    result = {"date": datetime.date.today().isoformat(), "kills": args.kills,
              "seed": args.seed, "machine": rel.machine()}  # fmt: skip
    checks = {}
    if args.only in (None, "train"):
        result["train"] = train_job(work, args.kills, args.seed, args.epochs)
        killed = result["train"]["killed_run"]
        checks["train_completed"] = killed["exit_code"] == 0
        checks["train_killed_enough"] = sum(a["killed"] for a in killed["attempts"]) >= args.kills
        checks["train_same_epochs_as_reference"] = (
            killed["ok"] and result["train"]["reference"]["ok"]
        )
    if args.only in (None, "score"):
        jobs, score_work = score_jobs(work)
        result["score"] = {}
        for i, (name, command) in enumerate(jobs.items()):
            res = score_job(name, command, score_work, args.kills, args.seed + i)
            result["score"][name] = res
            killed = res["killed_run"]
            checks[f"{name}_completed"] = killed["exit_code"] == 0
            checks[f"{name}_killed_enough"] = (
                sum(a["killed"] for a in killed["attempts"]) >= args.kills
            )
            checks[f"{name}_equal_to_reference"] = killed["ok"]
    result["checks"] = checks
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        pathlib.Path(args.out).write_text(text)
    failed = [k for k, ok in checks.items() if not ok]
    if failed:
        print(f"FAILED: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
