"""`recsys score` end to end: each task through the real CLI, resume after SIGKILL, bad input."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.cli import main
from tests.conftest import REPO


def score(*argv):
    return main(["score", *map(str, argv)])


def read_parts(out) -> pd.DataFrame:
    parts = sorted(out.glob("part-*.parquet"))
    assert parts, f"no part files in {out}"
    return pa.concat_tables(pq.read_table(p) for p in parts).to_pandas()


@functools.cache
def load(path):
    import tensorflow as tf
    import tensorflow_text  # noqa: F401

    return tf.saved_model.load(str(path))


def test_classifier_scores_every_catalog_row_in_order(batch_store, batch_inputs, tmp_path, capsys):
    import tensorflow as tf

    out = tmp_path / "out"
    model, catalog_path = batch_store["classifier"], batch_inputs["catalog"]
    assert score("--model", model, "--catalog", catalog_path, "--out", out, "--part-rows", 25,
                 "--all-probabilities") == 0  # fmt: skip
    captured = capsys.readouterr()
    assert "Scored 60 rows in 3 part(s)" in captured.out and str(out) in captured.out
    assert "rows/s" in captured.err and "ETA" in captured.err  # the progress line
    table = read_parts(out)
    catalog = pd.read_parquet(catalog_path)
    assert list(table.columns) == ["product_id", "label", "probability", "probabilities"]
    assert table["product_id"].tolist() == catalog["product_id"].tolist()
    expected = load(model).signatures["classify"](text=tf.constant(catalog["title"].tolist()))
    probabilities = expected["probabilities"].numpy()
    np.testing.assert_allclose(np.stack(table["probabilities"]), probabilities, rtol=1e-6)
    np.testing.assert_allclose(table["probability"], probabilities.max(axis=1), rtol=1e-6)
    assert table["label"].tolist() == [b.decode() for b in expected["label"].numpy()]
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["complete"] and sorted(manifest["parts"]) == ["0", "1", "2"]
    assert manifest["summary"]["rows"] == 60 and manifest["job"]["model"]["task"] == (
        "text_classification"
    )
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "_manifest.json",
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]


def test_classifier_reads_any_table_joining_text_columns(batch_store, tmp_path):
    import tensorflow as tf

    table = pd.DataFrame(
        {"headline": ["Red mug", None, "Trail shoe"], "body": ["for tea", "A lamp", " "]}
    )
    table.to_csv(tmp_path / "texts.csv", index=False)
    out = tmp_path / "out"
    assert score("--model", batch_store["classifier"], "--catalog", tmp_path / "texts.csv",
                 "--text-column", "headline", "--text-column", "body", "--out", out,
                 "--no-progress") == 0  # fmt: skip
    result = read_parts(out)
    assert list(result.columns) == ["row", "label", "probability"]
    assert result["row"].tolist() == [0, 1, 2]
    texts = ["Red mug. for tea", "A lamp", "Trail shoe"]  # joined as training joins them
    expected = load(batch_store["classifier"]).signatures["classify"](text=tf.constant(texts))
    np.testing.assert_allclose(
        result["probability"], expected["probabilities"].numpy().max(axis=1), rtol=1e-6
    )


def _recommend(model, histories, k):
    import tensorflow as tf

    width = max(len(h) for h in histories)
    padded = [list(h)[::-1] + [""] * (width - len(h)) for h in histories]  # oldest first
    out = load(model).signatures["recommend"](
        history=tf.constant(padded), k=tf.constant(k), exclude=tf.zeros([len(padded), 0], tf.string)
    )
    return out["product_ids"].numpy().astype(str), out["scores"].numpy()


def test_ranker_top_k_from_a_users_file_and_from_events(batch_store, batch_inputs, tmp_path):
    model = batch_store["ranker"]
    args = ["--model", model, "--k", 5, "--part-rows", 40, "--no-progress"]
    assert score(*args, "--users", batch_inputs["users_csv"], "--out", tmp_path / "a") == 0
    assert score(*args, "--users", batch_inputs["events"], "--out", tmp_path / "b") == 0
    from_users, from_events = read_parts(tmp_path / "a"), read_parts(tmp_path / "b")
    assert list(from_users.columns) == ["user_id", "rank", "product_id", "score"]
    pd.testing.assert_frame_equal(from_users, from_events)
    users = pd.read_csv(batch_inputs["users_csv"])
    assert len(from_users) == 5 * len(users)
    assert (
        from_users.groupby("user_id")["rank"].apply(list).map(lambda r: r == [1, 2, 3, 4, 5]).all()
    )
    ids, scores = _recommend(model, users["history"].str.split().tolist(), 5)
    assert from_users["product_id"].tolist() == ids.ravel().tolist()
    np.testing.assert_allclose(from_users["score"], scores.ravel(), rtol=1e-6)


def _score_catalog(model, history, events, candidates):
    import tensorflow as tf

    out = load(model).signatures["score_catalog"](
        history=tf.constant(history, tf.string, shape=[len(history)]),
        history_events=tf.constant(events, tf.string, shape=[len(events)]),
        candidates=tf.constant(candidates),
        query=tf.constant(""),
    )
    return out["probability"].numpy()


def test_buy_scores_every_user_against_a_catalog(batch_store, batch_inputs, tmp_path):
    out = tmp_path / "out"
    assert score("--model", batch_store["buy"], "--users", batch_inputs["users"], "--catalog",
                 batch_inputs["catalog10"], "--out", out, "--part-rows", 7, "--no-progress") == 0  # fmt: skip
    result = read_parts(out)
    users = pq.read_table(batch_inputs["users"]).to_pandas(ignore_metadata=True)
    products = pd.read_csv(batch_inputs["catalog10"])["product_id"].tolist()
    assert len(result) == 10 * len(users) and len(list(out.glob("part-*"))) == -(-len(result) // 7)
    assert result["user_id"].tolist() == [u for u in users["user_id"] for _ in products]
    assert result["product_id"].tolist() == products * len(users)
    assert np.isfinite(result["probability"]).all()
    for i in (0, 3, len(users) - 1):  # U-COLD, the last user, has no history
        user = users.iloc[i]
        expected = _score_catalog(
            batch_store["buy"], list(user["history"]), list(user["history_events"]), products
        )
        got = result[result["user_id"] == user["user_id"]]["probability"].to_numpy()
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_buy_scores_candidate_pairs_in_file_order(batch_store, batch_inputs, tmp_path):
    out = tmp_path / "out"
    assert score("--model", batch_store["buy"], "--users", batch_inputs["users"], "--candidates",
                 batch_inputs["candidates"], "--out", out, "--part-rows", 8, "--no-progress") == 0  # fmt: skip
    pairs = pd.read_csv(batch_inputs["candidates"])
    result = read_parts(out)
    assert result[["user_id", "product_id"]].values.tolist() == pairs.values.tolist()
    users = pq.read_table(batch_inputs["users"]).to_pandas(ignore_metadata=True)
    users = users.set_index("user_id")
    for (user, product), got in zip(pairs.values, result["probability"], strict=True):
        history, events = users.loc[user, "history"], users.loc[user, "history_events"]
        expected = _score_catalog(batch_store["buy"], list(history), list(events), [product])
        np.testing.assert_allclose(got, expected[0], atol=1e-6)


@pytest.fixture()
def bad_files(batch_inputs, tmp_path):
    pd.DataFrame({"user_id": ["U00001"], "product_id": ["NOPE"]}).to_csv(
        tmp_path / "unknown_pairs.csv", index=False
    )
    pd.DataFrame({"user_id": ["u1", "u2"], "history": ["P00001 P00002", "P00003 GHOST"]}).to_csv(
        tmp_path / "unknown_history.csv", index=False
    )
    pd.DataFrame({"user_id": ["u1"], "items": ["P00001"]}).to_csv(
        tmp_path / "no_history.csv", index=False
    )
    return {**batch_inputs, "tmp": tmp_path}


BAD = {
    "text column missing": (
        "classifier",
        ["--catalog", "catalog", "--text-column", "blurb"],
        "missing required column(s) ['blurb']",
    ),
    "classifier given users": (
        "classifier",
        ["--users", "users"],
        "is a text_classification model",
    ),
    "ranker given a catalog": (
        "ranker",
        ["--users", "users", "--catalog", "catalog"],
        "--catalog is for buy_probability or text_classification models",
    ),
    "buy given k": ("buy", ["--users", "users", "--k", "5"], "--k is for ranking models"),
    "unknown candidate": (
        "buy",
        ["--users", "users", "--candidates", "unknown_pairs.csv"],
        "row 0 (value 'NOPE'): 1 product id(s) are not in the model's catalog",
    ),
    "unknown history item": (
        "buy",
        ["--users", "unknown_history.csv"],
        "column 'history', row 1 (value 'GHOST')",
    ),
    "no history column": ("ranker", ["--users", "no_history.csv"], "missing required column(s)"),
    "missing file": ("ranker", ["--users", "nowhere.parquet"], "file not found"),
    "not a model": ("nothing", ["--users", "users"], "is not a model"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2_before_scoring(case, batch_store, bad_files, capsys):
    model, argv, message = BAD[case]
    files = {k: str(v) for k, v in bad_files.items()}
    argv = [files.get(a, str(bad_files["tmp"] / a) if "." in a else a) for a in argv]
    out = bad_files["tmp"] / "out"
    model_dir = batch_store.get(model, bad_files["tmp"] / "nothing")
    assert score("--model", model_dir, "--out", out, *argv) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not out.exists()  # nothing written, not even the folder


def test_a_different_job_into_the_same_folder_is_refused(
    batch_store, batch_inputs, tmp_path, capsys
):
    out = tmp_path / "out"
    args = [
        "--model",
        batch_store["classifier"],
        "--catalog",
        batch_inputs["catalog"],
        "--out",
        out,
    ]
    assert score(*args, "--part-rows", 25, "--no-progress") == 0
    assert score(*args, "--part-rows", 30, "--no-progress") == 2
    assert "different job (differs in: options.part_rows)" in capsys.readouterr().err
    assert score(*args, "--part-rows", 25, "--no-progress") == 0
    assert "Nothing to do" in capsys.readouterr().out
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert score(*args[:-1], tmp_path / "other", "--no-progress") == 2
    assert "holds no _manifest.json" in capsys.readouterr().err


def test_a_killed_run_resumes_without_duplicates_or_gaps(batch_store, tmp_path, capsys):
    rng = np.random.default_rng(0)
    words = np.array(["red", "mug", "trail", "shoe", "lamp", "linen", "wool", "desk", "tea"])
    rows = 40_000
    texts = [" ".join(rng.choice(words, size=4)) for _ in range(rows)]
    pd.DataFrame({"item_id": [f"i{i}" for i in range(rows)], "text": texts}).to_csv(
        tmp_path / "texts.csv", index=False
    )
    args = ["score", "--model", str(batch_store["classifier"]), "--catalog",
            str(tmp_path / "texts.csv"), "--id-column", "item_id", "--part-rows", "2000",
            "--batch-size", "8", "--no-progress"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "reference")]) == 0
    out = tmp_path / "out"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    with open(tmp_path / "killed.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "recsys.cli", *args, "--out", str(out)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 240
        while not (out / "part-00000.parquet").exists():
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no part appeared"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finished = len(list(out.glob("part-*.parquet")))
    assert 1 <= finished < 20, f"the kill should land mid-run; {finished} of 20 parts were done"
    capsys.readouterr()
    assert main([*args, "--out", str(out)]) == 0
    assert "from an earlier run" in capsys.readouterr().out
    assert not list(out.glob(".part-*"))  # no temporary file left behind
    resumed, reference = read_parts(out), read_parts(tmp_path / "reference")
    assert len(resumed) == rows and resumed["item_id"].is_unique
    pd.testing.assert_frame_equal(resumed, reference)


@pytest.mark.skipif(
    importlib.util.find_spec("apache_beam") is not None, reason="Apache Beam is installed"
)
def test_the_beam_runner_says_how_to_install_beam(batch_store, batch_inputs, tmp_path, capsys):
    out = tmp_path / "out"
    assert score("--model", batch_store["classifier"], "--catalog", batch_inputs["catalog"],
                 "--out", out, "--runner", "beam") == 2  # fmt: skip
    assert "pip install -e '.[beam]'" in capsys.readouterr().err
    assert not out.exists()
