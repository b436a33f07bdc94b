"""`recsys score --runner beam` (Beam's local FnApiRunner) writes the same rows as the local
runner."""

from __future__ import annotations

import json
import tempfile

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.batch_beam import pipeline_options
from recsys.cli import main

pytest.importorskip("apache_beam", reason="the Beam extra is not installed: pip install -e .[beam]")

CASES = {
    "classifier": ("classifier", ["--catalog", "catalog", "--all-probabilities"], ["product_id"]),
    "ranker": ("ranker", ["--users", "events", "--k", "4"], ["user_id", "rank"]),
    "buy pairs": ("buy", ["--users", "users", "--catalog", "catalog10"], ["user_id", "product_id"]),
    "buy candidates": ("buy", ["--users", "users", "--candidates", "candidates"], None),
}


def _read(paths) -> pd.DataFrame:
    return pa.concat_tables(pq.read_table(p) for p in sorted(paths)).to_pandas()


@pytest.mark.parametrize("case", list(CASES))
def test_beam_and_local_runners_write_the_same_scores(
    case, batch_store, batch_inputs, tmp_path, monkeypatch
):
    model, argv, key = CASES[case]
    temp = tmp_path / "temp"  # the process's temporary directory during the Beam run
    temp.mkdir()
    argv = [str(batch_inputs.get(a, a)) for a in argv]
    common = ["score", "--model", str(batch_store[model]), *argv, "--part-rows", "30"]
    assert main([*common, "--out", str(tmp_path / "local"), "--no-progress"]) == 0
    beam_out = tmp_path / "beam"
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    assert main([*common, "--out", str(beam_out), "--runner", "beam", "--",
                 "--direct_num_workers=1"]) == 0  # fmt: skip
    monkeypatch.undo()
    assert not list(temp.glob("beam-temp*"))  # no try of the Prism runner left its folder
    local = _read((tmp_path / "local").glob("part-*.parquet"))
    beam = _read(beam_out.glob("beam-part-*.parquet"))
    assert list(beam.columns) == list(local.columns) and len(beam) == len(local)
    if key is None:  # candidate pairs: compare as a multiset of rows
        key = list(local.columns)
    local = local.sort_values(key, kind="stable").reset_index(drop=True)
    beam = beam.sort_values(key, kind="stable").reset_index(drop=True)
    numeric = [c for c in local.columns if c in ("probability", "score")]
    pd.testing.assert_frame_equal(local.drop(columns=numeric), beam.drop(columns=numeric))
    for column in numeric:
        np.testing.assert_allclose(beam[column], local[column], atol=1e-6)
    manifest = json.loads((beam_out / "_manifest.json").read_text())
    assert manifest["complete"] and manifest["runner"] == "beam"
    assert manifest["summary"]["rows"] == len(local)


def test_beam_options_need_the_beam_runner(batch_store, batch_inputs, tmp_path, capsys):
    argv = ["score", "--model", str(batch_store["classifier"]), "--catalog"]
    argv += [str(batch_inputs["catalog"]), "--out", str(tmp_path / "o"), "--", "--runner=X"]
    assert main(argv) == 2
    assert "need --runner beam" in capsys.readouterr().err


def test_beam_runs_locally_unless_the_options_name_a_runner():
    assert pipeline_options([]).get_all_options()["runner"] == "FnApiRunner"
    named = pipeline_options(["--runner=PrismRunner", "--direct_num_workers=2"]).get_all_options()
    assert named["runner"] == "PrismRunner" and named["direct_num_workers"] == 2
