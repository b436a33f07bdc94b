"""Corrupt inputs to `recsys train` and `recsys score`: a clear error (exit code 2, naming the
file, column and row) before any work starts, and nothing half-written left behind: no model
version (nor a temporary one) in the store, no run folder, no output folder."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from recsys.cli import main
from tests.conftest import tiny_buy_config


@pytest.fixture(scope="module")
def tables(tiny_store, tmp_path_factory):
    """Good and corrupt copies of a catalog, an events table, a users table and a texts table."""
    folder = tmp_path_factory.mktemp("corrupt")
    catalog, events = tiny_store.catalog, tiny_store.events
    paths = {"folder": folder}

    def save(name, frame, **kwargs):
        path = folder / name
        if name.endswith(".parquet"):
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False, **kwargs)
        paths[name] = path
        return path

    def truncate(name, source):
        data = source.read_bytes()
        (folder / name).write_bytes(data[: len(data) // 2])
        paths[name] = folder / name

    save("catalog.parquet", catalog)
    save("events.parquet", events)
    truncate("truncated_catalog.parquet", paths["catalog.parquet"])
    truncate("truncated_events.parquet", paths["events.parquet"])
    accented = catalog.assign(title=catalog["title"].str.replace("o", "\u00f6"))
    save("latin1_catalog.csv", accented, encoding="latin-1")
    save("utf16_events.csv", events, encoding="utf-16")
    price = pa.array(
        [float("nan") if i == 7 else p for i, p in enumerate(catalog["price"])], from_pandas=False
    )
    table = pa.Table.from_pandas(catalog, preserve_index=False)
    pq.write_table(table.set_column(table.column_names.index("price"), "price", price),
                   folder / "nan_price.parquet")  # fmt: skip
    paths["nan_price.parquet"] = folder / "nan_price.parquet"
    save("nan_price.csv", catalog.astype({"price": str}).assign(
        price=lambda f: f["price"].where(f.index != 7, "NaN")))  # fmt: skip
    save("negative_price.parquet", catalog.assign(price=catalog["price"].where(catalog.index != 7, -3.0)))  # fmt: skip
    save("duplicate_products.parquet", pd.concat([catalog, catalog.iloc[[11]]]))
    users = pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(30)],
            "history": [" ".join(catalog["product_id"].iloc[i : i + 3]) for i in range(30)],
        }
    )
    save("users.parquet", users)
    truncate("truncated_users.parquet", paths["users.parquet"])
    save("duplicate_users.csv", pd.concat([users, users.iloc[[4]].assign(history="P00001")]))
    rows = 5000
    texts = pd.DataFrame({"item_id": [f"i{i}" for i in range(rows)], "text": ["red mug"] * rows})
    save("texts.parquet", texts)
    truncate("truncated_texts.parquet", paths["texts.parquet"])
    raw = texts.to_csv(index=False).encode()
    late = raw.rfind(b"red mug")  # a bad byte in the last row: found before anything is scored
    (folder / "latin1_late.csv").write_bytes(
        raw[:late] + "caf\u00e9".encode("latin-1") + raw[late + 3 :]
    )
    paths["latin1_late.csv"] = folder / "latin1_late.csv"
    save("duplicate_ids.csv", pd.concat([texts, texts.iloc[[9]]]))
    return paths


# -- training ------------------------------------------------------------------------------------
TRAIN = {
    "truncated catalog Parquet": ("truncated_catalog.parquet", "events.parquet",
                                  "not a readable Parquet file"),
    "truncated events Parquet": ("catalog.parquet", "truncated_events.parquet",
                                 "not a readable Parquet file"),
    "Latin-1 catalog": ("latin1_catalog.csv", "events.parquet",
                        "unreadable encoding at byte"),
    "UTF-16 events": ("catalog.parquet", "utf16_events.csv", "unreadable encoding at byte 0"),
    "NaN price (Parquet)": ("nan_price.parquet", "events.parquet",
                            "column 'price', row 7 (value 'NaN'): NaN is not a number"),
    "NaN price (CSV)": ("nan_price.csv", "events.parquet",
                        "column 'price', row 7 (value 'NaN'): expected a number"),
    "negative price": ("negative_price.parquet", "events.parquet",
                       "column 'price', row 7 (value -3.0): a price must be >= 0"),
    "duplicate product ids": ("duplicate_products.parquet", "events.parquet",
                              "duplicate product_id"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(TRAIN))
def test_training_refuses_corrupt_data_before_it_starts(case, tables, tmp_path, capsys):
    catalog, events, message = TRAIN[case]
    config = tiny_buy_config(tmp_path / "buy.yaml", epochs=1)
    data = yaml.safe_load(config.read_text())
    data["data"] = {"source": "events", "path": str(tables[events]),
                    "catalog": str(tables[catalog]), "negatives": 2, "history_length": 4}  # fmt: skip
    config.write_text(yaml.safe_dump(data))
    store, run_dir = tmp_path / "store", tmp_path / "run"
    code = main(["train", str(config), "--store", str(store), "--run-dir", str(run_dir)])
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    assert message in err and (str(tables[catalog]) in err or str(tables[events]) in err), err
    assert "Traceback" not in err
    assert not store.exists(), sorted(store.rglob("*"))  # no version, no temporary version
    assert not run_dir.exists() or not any(run_dir.iterdir()), sorted(run_dir.rglob("*"))


# -- scoring -------------------------------------------------------------------------------------
SCORE = {
    "truncated users Parquet": ("ranker", ["--users", "truncated_users.parquet"],
                                "not a readable Parquet file"),
    "truncated texts Parquet": ("classifier", ["--catalog", "truncated_texts.parquet",
                                               "--text-column", "text"],
                                "not a readable Parquet file"),
    "Latin-1 byte in the last row": ("classifier", ["--catalog", "latin1_late.csv",
                                                    "--text-column", "text"],
                                     "invalid UTF8 data"),
    "UTF-16 file": ("ranker", ["--users", "utf16_events.csv"], "utf-8"),
    "duplicate user ids": ("ranker", ["--users", "duplicate_users.csv"],
                           "column 'user_id', row 30 (value 'u4'): duplicate user_id"),
    "duplicate row ids": ("classifier", ["--catalog", "duplicate_ids.csv", "--text-column",
                                         "text", "--id-column", "item_id"],
                          "column 'item_id', row 5000 (value 'i9'): duplicate item_id"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(SCORE))
def test_scoring_refuses_corrupt_data_before_it_starts(case, tables, fault_models, tmp_path,
                                                       capsys):  # fmt: skip
    model, argv, message = SCORE[case]
    argv = [str(tables.get(a, a)) for a in argv]
    out = tmp_path / "out"
    code = main(["score", "--model", str(fault_models[model]), "--out", str(out),
                 "--no-progress", *argv])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    assert message in err and "Traceback" not in err, err
    assert not out.exists()  # nothing written, not even the folder


def test_a_good_copy_of_each_corrupt_input_is_accepted(tables, fault_models, tmp_path):
    """The corrupt cases fail for their corruption, not for something else."""
    assert main(["score", "--model", str(fault_models["ranker"]), "--out", str(tmp_path / "a"),
                 "--no-progress", "--users", str(tables["users.parquet"])]) == 0  # fmt: skip
    assert main(["score", "--model", str(fault_models["classifier"]), "--out",
                 str(tmp_path / "b"), "--no-progress", "--catalog", str(tables["texts.parquet"]),
                 "--text-column", "text", "--id-column", "item_id"]) == 0  # fmt: skip
    frame = pd.read_parquet(tables["catalog.parquet"])
    assert np.isfinite(frame["price"]).all()
