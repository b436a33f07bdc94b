"""`recsys train` and `recsys score` killed with SIGKILL and started again: training killed
twice in its fit, once after it and once while publishing resumes each time (no epoch runs
twice, the final model has every epoch, one version lands); scoring killed twice completes with
output equal, row by row, to an uninterrupted run's. The full version, with five kills at random
points each, is bench/kill_restart.py."""

from __future__ import annotations

import json
import random
import sys
import time

import pandas as pd

from bench import kill_restart as kr
from recsys import store as store_lib
from recsys.cli import main
from tests.conftest import tiny_buy_config

EPOCHS = 5


def test_training_killed_in_fit_after_it_and_while_publishing_trains_each_epoch_once(
    tmp_path, tiny_store_dir
):
    config = tiny_buy_config(
        tmp_path / "buy.yaml", store_dir=tiny_store_dir, epochs=EPOCHS, early_stopping_patience=None
    )
    run_dir, store = tmp_path / "run", tmp_path / "store"
    fitted = run_dir / "fitted" / "fit.json"
    kill_points = [
        lambda: len(kr.logged_epochs(run_dir)) >= 1,  # in the fit, once 1 epoch is logged
        lambda: len(kr.logged_epochs(run_dir)) >= 3,  # again, once 3 are
        fitted.is_file,  # the fit is over and kept; evaluation or export under way
        lambda: any((store / "buy").glob(".tmp-*")),  # a half-written version
    ]

    attempts, code = kr.kill_and_restart(
        kr.train_argv(config, store, run_dir),
        tmp_path / "train.log",
        kills=len(kill_points),
        when=lambda attempt: kill_points[attempt],
        progress=lambda: {"epochs": len(kr.logged_epochs(run_dir)), "fitted": fitted.is_file()},
        timeout=900,
    )
    log = (tmp_path / "train.log").read_text(errors="replace")
    assert code == 0, log[-3000:]
    assert [a["killed"] for a in attempts] == [True, True, True, True, False]
    assert [a["progress"]["fitted"] for a in attempts[:3]] == [False, False, True]
    # each epoch once, in order: resumed twice from the backup, then the fit loaded, not rerun
    logged = kr.logged_epochs(run_dir)
    assert logged == list(range(EPOCHS)), logged
    report = json.loads((run_dir / "report.json").read_text())
    assert report["training"]["epochs_run"] == EPOCHS - attempts[1]["progress"]["epochs"]
    assert store_lib.versions(store, "buy") == [1]
    assert not list((store / "buy").glob(".tmp-*"))  # the killed writer's folder is removed
    card = store_lib.read_card(store / "buy" / "1")
    assert not (run_dir / "run_id").exists() and not fitted.parent.exists()
    # Started again after it finished, the same command trains and publishes a new version.
    assert main(kr.train_argv(config, store, run_dir)[3:]) == 0
    assert store_lib.versions(store, "buy") == [1, 2]
    assert store_lib.read_card(store / "buy" / "2")["run_id"] != card["run_id"]


def test_a_run_whose_version_landed_before_the_kill_publishes_nothing_more(
    tmp_path, tiny_store_dir
):
    from training import restart

    config = tiny_buy_config(tmp_path / "buy.yaml", store_dir=tiny_store_dir, epochs=1)
    run_dir, store = tmp_path / "run", tmp_path / "store"
    assert main(kr.train_argv(config, store, run_dir)[3:]) == 0
    # As if killed between the rename into place and forgetting the run: its id is still there.
    (run_dir / "run_id").write_text(store_lib.read_card(store / "buy" / "1")["run_id"])
    assert restart.RunState(run_dir).published(store, "buy") == store / "buy" / "1"
    assert main(kr.train_argv(config, store, run_dir)[3:]) == 0
    assert store_lib.versions(store, "buy") == [1]
    assert kr.logged_epochs(run_dir) == [0]  # and it did not train again
    assert not (run_dir / "run_id").exists()


def test_scoring_killed_twice_completes_with_the_uninterrupted_output(fault_models, tmp_path):
    rng = random.Random(0)
    words = ["red", "mug", "trail", "shoe", "lamp", "linen", "wool", "desk", "tea"]
    rows = 30_000
    texts = tmp_path / "texts.csv"
    pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(rows)],
            "text": [" ".join(rng.choices(words, k=4)) for _ in range(rows)],
        }
    ).to_csv(texts, index=False)
    args = ["score", "--model", str(fault_models["classifier"]), "--catalog", str(texts),
            "--id-column", "item_id", "--part-rows", "1500", "--batch-size", "8",
            "--no-progress"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "reference")]) == 0
    out = tmp_path / "killed"
    started = {}

    def when(attempt):
        started[attempt] = time.monotonic()
        if attempt == 0:  # while planning: before the manifest or any part exists
            return lambda: time.monotonic() - started[0] > 2.0
        return lambda: len(list(out.glob("part-*.parquet"))) >= 5  # mid-run

    attempts, code = kr.kill_and_restart(
        [sys.executable, "-m", "recsys.cli", *args, "--out", str(out)],
        tmp_path / "score.log",
        kills=2,
        when=when,
        progress=lambda: {"parts": len(list(out.glob("part-*.parquet")))},
        timeout=300,
    )
    assert code == 0, (tmp_path / "score.log").read_text(errors="replace")[-3000:]
    assert [a["killed"] for a in attempts] == [True, True, False]
    assert attempts[1]["progress"]["parts"] < 20  # the second kill landed mid-run
    result = kr.compare_outputs(tmp_path / "reference", out)
    assert result["ok"], result
    assert result["rows"] == rows
