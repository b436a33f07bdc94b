"""The `recsys` command: help, `data check`, `data synth`, `models` and `train` errors."""

import json
import pathlib
import subprocess
import sys

import pandas as pd
import pytest

from recsys import cli
from recsys.data import synthetic
from recsys.data.catalog import load_catalog
from recsys.data.events import load_events
from recsys.data.reviews import load_reviews

REPO = pathlib.Path(__file__).resolve().parents[2]

CATALOG = pd.DataFrame(
    {
        "product_id": ["p1", "p2", "p3", "p4"],
        "title": ["Linen shirt", "Trail boot", "Desk lamp", "Oxford shirt"],
        "category": ["shirts", "boots", "lamps", "shirts"],
        "price": [19.5, 120.0, 45.0, 30.0],
    }
)
EVENTS = pd.DataFrame(
    {
        "user_id": ["u1", "u1", "u2", "u3", "u2"],
        "product_id": ["p1", "p2", "p1", "p9", "p3"],
        "event": ["view", "cart", "purchase", "view", "view"],
        "timestamp": [
            "2024-03-01T10:00:00",
            "2024-03-01T10:05:00",
            "2024-03-02T08:00:00",
            "2024-03-02T09:00:00",
            "2024-03-03T12:00:00",
        ],
    }
)


def _report(out):
    """The JSON counts printed after the first line of `data check`."""
    return json.loads(out.split("\n", 1)[1])


@pytest.fixture
def catalog_csv(tmp_path):
    path = tmp_path / "catalog.csv"
    CATALOG.to_csv(path, index=False)
    return path


@pytest.fixture
def bad_catalog_csv(tmp_path):
    path = tmp_path / "bad_catalog.csv"
    CATALOG.drop(columns="category").to_csv(path, index=False)
    return path


@pytest.fixture
def events_csv(tmp_path):
    path = tmp_path / "events.csv"
    EVENTS.to_csv(path, index=False)
    return path


# Help.


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["demo"],
        ["data"],
        ["data", "synth"],
        ["data", "check"],
        ["train"],
        ["models"],
    ],
)
def test_help_exits_zero_and_prints_usage(argv, capsys):
    with pytest.raises(SystemExit) as excinfo:
        cli.main([*argv, "--help"])
    assert excinfo.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {' '.join(['recsys', *argv])}")


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for command in ("demo", "data", "train", "models"):
        assert command in out


@pytest.mark.parametrize("argv", [[], ["data"], ["data", "check"], ["nonsense"]])
def test_incomplete_commands_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as excinfo:
        cli.main(argv)
    assert excinfo.value.code == cli.EXIT_BAD_INPUT
    assert "usage:" in capsys.readouterr().err


# data check.


def test_data_check_on_a_good_catalog(catalog_csv, capsys):
    assert cli.main(["data", "check", str(catalog_csv), "--kind", "catalog"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert f"{catalog_csv}: valid catalog table" in out
    report = _report(out)
    assert report["rows"] == len(CATALOG)
    assert report["categories"] == CATALOG["category"].nunique()


def test_data_check_on_good_events(events_csv, capsys):
    assert cli.main(["data", "check", str(events_csv), "--kind", "events"]) == cli.EXIT_OK
    report = _report(capsys.readouterr().out)
    assert report["rows"] == len(EVENTS)
    assert report["users"] == EVENTS["user_id"].nunique()
    assert report["events"] == EVENTS["event"].value_counts().to_dict()
    assert "dropped_unknown_products" not in report


def test_data_check_on_good_reviews(tmp_path, capsys):
    path = tmp_path / "reviews.csv"
    ratings = [5, 4, 2]
    path.write_text("product_id,text,rating\n" + "".join(f"p1,ok,{r}\n" for r in ratings))
    assert cli.main(["data", "check", str(path), "--kind", "reviews"]) == cli.EXIT_OK
    report = _report(capsys.readouterr().out)
    assert report["rows"] == len(ratings)
    assert report["mean_rating"] == pytest.approx(sum(ratings) / len(ratings), abs=1e-3)


def test_data_check_on_a_bad_file_exits_2_naming_the_column(bad_catalog_csv, capsys):
    code = cli.main(["data", "check", str(bad_catalog_csv), "--kind", "catalog"])
    assert code == cli.EXIT_BAD_INPUT
    captured = capsys.readouterr()
    assert captured.err.startswith("recsys: error:")
    assert "'category'" in captured.err
    assert str(bad_catalog_csv) in captured.err
    assert "valid" not in captured.out


def test_data_check_on_a_missing_file_exits_2(tmp_path, capsys):
    path = tmp_path / "absent.csv"
    assert cli.main(["data", "check", str(path), "--kind", "catalog"]) == cli.EXIT_BAD_INPUT
    assert str(path) in capsys.readouterr().err


def test_data_check_refuses_unknown_products(events_csv, catalog_csv, capsys):
    argv = ["data", "check", str(events_csv), "--kind", "events", "--catalog", str(catalog_csv)]
    assert cli.main(argv) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    unknown = EVENTS.loc[~EVENTS["product_id"].isin(CATALOG["product_id"]), "product_id"]
    assert "'product_id'" in err
    assert repr(unknown.iloc[0]) in err
    assert "--drop-unknown" in err


def test_data_check_drops_unknown_products_when_asked(events_csv, catalog_csv, capsys):
    argv = ["data", "check", str(events_csv), "--kind", "events", "--catalog", str(catalog_csv)]
    assert cli.main([*argv, "--drop-unknown"]) == cli.EXIT_OK
    report = _report(capsys.readouterr().out)
    unknown = int((~EVENTS["product_id"].isin(CATALOG["product_id"])).sum())
    assert unknown > 0
    assert report["dropped_unknown_products"] == unknown
    assert report["rows"] == len(EVENTS) - unknown


def test_data_check_with_a_bad_catalog_exits_2(events_csv, bad_catalog_csv, capsys):
    argv = ["data", "check", str(events_csv), "--kind", "events", "--catalog", str(bad_catalog_csv)]
    assert cli.main(argv) == cli.EXIT_BAD_INPUT
    assert str(bad_catalog_csv) in capsys.readouterr().err


def test_data_check_kind_is_required_and_checked(catalog_csv, capsys):
    for extra in ([], ["--kind", "orders"]):
        with pytest.raises(SystemExit) as excinfo:
            cli.main(["data", "check", str(catalog_csv), *extra])
        assert excinfo.value.code == cli.EXIT_BAD_INPUT
        assert "--kind" in capsys.readouterr().err


# data synth.


def test_data_synth_writes_four_valid_parquet_files(tmp_path, capsys):
    out = tmp_path / "shop"
    argv = ["data", "synth", "--out", str(out), "--products", "60", "--users", "40"]
    assert cli.main(argv) == cli.EXIT_OK
    assert str(out) in capsys.readouterr().out

    for name in ("catalog", "events", "reviews", "truth"):
        assert (out / f"{name}.parquet").is_file(), name
    catalog = load_catalog(out / "catalog.parquet")
    assert len(catalog) == 60
    events = load_events(out / "events.parquet", catalog=catalog)
    assert events["user_id"].nunique() <= 40
    assert set(load_reviews(out / "reviews.parquet")["product_id"]) <= set(catalog["product_id"])
    loaded = synthetic.load_store_dir(out)  # also validates truth.parquet
    assert len(loaded.truth) > 0


def test_data_synth_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "shop"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    argv = ["data", "synth", "--out", str(out), "--products", "60", "--users", "40"]
    assert cli.main(argv) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert str(out) in err and "already exists" in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


# models and train.


def test_models_on_an_empty_store(tmp_path, capsys):
    assert cli.main(["models", "--store", str(tmp_path)]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert str(tmp_path) in out and "recsys train" in out


def test_models_reads_the_store_from_the_environment(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECSYS_STORE", str(tmp_path / "from_env"))
    assert cli.main(["models"]) == cli.EXIT_OK
    assert str(tmp_path / "from_env") in capsys.readouterr().out


def test_train_with_a_missing_config_exits_2(tmp_path, capsys):
    path = tmp_path / "absent.yaml"
    argv = ["train", str(path), "--store", str(tmp_path / "store")]
    assert cli.main(argv) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert str(path) in err and "not found" in err
    assert not (tmp_path / "store").exists()


# The real console entry point.


def _run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "recsys.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_console_script_exit_codes(catalog_csv, bad_catalog_csv):
    good = _run_cli("data", "check", str(catalog_csv), "--kind", "catalog")
    assert good.returncode == 0, good.stderr
    assert _report(good.stdout)["rows"] == len(CATALOG)

    bad = _run_cli("data", "check", str(bad_catalog_csv), "--kind", "catalog")
    assert bad.returncode == 2
    assert "'category'" in bad.stderr
    assert "Traceback" not in bad.stderr
