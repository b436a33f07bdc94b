"""End-to-end: `recsys train` for the ranking task on tiny data, the report and the export."""

import csv
import gzip
import json
import pathlib

import numpy as np
import pytest
import tensorflow as tf
import yaml

from recsys import store
from recsys.cli import main
from recsys.config import load_config


def tiny_rank_config(path, data=None, model=None, **train):
    """Writes a tiny ranking YAML config; returns its path."""
    config = {
        "task": "ranking",
        "name": "ranker",
        "data": {"source": "synthetic", "products": 60, "users": 40, **(data or {})},
        "backbone": "gpt2",
        "model": {
            "sequence_length": 12,
            "num_layers": 1,
            "num_heads": 1,
            "embedding_dim": 8,
            "dropout": 0.0,
            **(model or {}),
        },
        "train": {"epochs": 2, "batch_size": 8, "learning_rate": 5e-3, **train},
    }
    path = pathlib.Path(path)
    path.write_text(yaml.safe_dump(config))
    return path


def _train(tmp, config, *extra):
    argv = ["train", str(config), "--store", str(tmp / "store"), "--run-dir", str(tmp / "run")]
    return main(argv + list(extra))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_store_dir):
    tmp = tmp_path_factory.mktemp("rank")
    config = tiny_rank_config(tmp / "rank.yaml", data={"path": str(tiny_store_dir)})
    assert _train(tmp, config) == 0
    return tmp


def test_train_publishes_a_ranker_with_its_report(trained):
    assert store.versions(trained / "store", "ranker") == [1]
    card = store.read_card(trained / "store" / "ranker" / "1")
    assert card["task"] == "ranking"
    assert set(card["signatures"]) == {"recommend", "recommend_simple"}
    assert card["history_order"] == "oldest first" and card["num_items"] == 60
    assert 0.0 <= card["headline_metrics"]["ndcg_at_10"] <= 1.0
    report = json.loads((trained / "run" / "report.json").read_text())
    for split in ("validation", "test"):
        for protocol in ("full", "sampled_100"):
            assert set(report[split][protocol]) == {
                "hr_at_1",
                "hr_at_5",
                "hr_at_10",
                "ndcg_at_5",
                "ndcg_at_10",
                "mrr",
                "users",
            }
    with open(trained / "run" / "training_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and "val_ndcg_at_10" in rows[0]
    assert (trained / "store" / "ranker" / "1" / "catalog.parquet").is_file()


def test_the_exported_ranker_recommends_unseen_products(trained, tiny_store):
    module = tf.saved_model.load(str(trained / "store" / "ranker" / "1"))
    history = tiny_store.events["product_id"].tolist()[:3]
    out = module.signatures["recommend_simple"](history=tf.constant([history]), k=tf.constant(5))
    ids = [p.decode() for p in out["product_ids"].numpy()[0]]
    assert len(ids) == 5 and not set(ids) & set(history)
    assert set(ids) <= set(tiny_store.catalog["product_id"])


def test_loss_goes_down_and_early_stopping_watches_validation_ndcg(tmp_path, tiny_store_dir):
    from training import rank

    config = load_config(
        tiny_rank_config(tmp_path / "r.yaml", data={"path": str(tiny_store_dir)}, epochs=8)
    )
    assert rank.monitor(config) == ("val_ndcg_at_10", "max")
    import keras

    from training.optimization import make_optimizer

    keras.utils.set_random_seed(0)
    data = rank.prepare(config)
    model, _ = rank.build(config, data)
    model.compile(optimizer=make_optimizer(config.train, 40))
    train = rank.dataset(data, "train", None, 8, config, training=True)
    history = model.fit(
        train, epochs=8, callbacks=rank.callbacks(config, data, model, tmp_path), verbose=0
    ).history
    assert history["loss"][-1] < history["loss"][0]
    assert len(history["val_ndcg_at_10"]) == 8


def _write_sasrec(folder, users=30, items=25, gz=True):
    rng = np.random.default_rng(0)
    lines = []
    for user in range(1, users + 1):
        start = rng.integers(1, items)
        for step in range(int(rng.integers(4, 15))):
            lines.append(f"{user} {(start + step) % items + 1}\n")
    path = folder / ("seq.txt.gz" if gz else "seq.txt")
    opener = gzip.open if gz else open
    with opener(path, "wt") as f:
        f.writelines(lines)
    return path


def test_sasrec_source_reads_any_file_and_titles_beside_it(tmp_path):
    path = _write_sasrec(tmp_path)
    with open(tmp_path / "sasrec_item_map.tsv", "w") as f:
        f.write("sasrec_item\tmovie_id\ttitle\tgenres\n")
        for item in range(1, 26):
            f.write(f"{item}\t{item + 100}\tMovie {item} (1999)\tDrama|Comedy\n")
    config = tiny_rank_config(tmp_path / "r.yaml", data={"source": "sasrec"}, epochs=1)
    assert _train(tmp_path, config, "--set", f"data.path={path}") == 0
    card = store.read_card(tmp_path / "store" / "ranker" / "1")
    assert card["num_items"] == 25
    from recsys.data.formats import load_sasrec

    assert len(load_sasrec(_write_sasrec(tmp_path, gz=False))) == 30
    import pandas as pd

    catalog = pd.read_parquet(tmp_path / "store" / "ranker" / "1" / "catalog.parquet")
    assert catalog["title"].str.startswith("Movie").all()


def test_sampled_softmax_and_windows_train(tmp_path, tiny_store_dir):
    config = tiny_rank_config(
        tmp_path / "r.yaml",
        data={"path": str(tiny_store_dir), "windows": 3},
        model={"loss": "sampled_softmax", "num_negatives": 16, "sequence_length": 6},
        epochs=1,
    )
    assert _train(tmp_path, config, "--no-export") == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["training"]["train_examples"] > 40  # several windows per long user


def test_text_fusion_embeds_titles_once_and_ranks_cold_items(tmp_path, tiny_store, monkeypatch):
    # Hide a few products from every event: they exist only in the catalog (cold).
    cold = tiny_store.catalog["product_id"].tolist()[-5:]
    events = tiny_store.events[~tiny_store.events["product_id"].isin(cold)]
    folder = tmp_path / "store_dir"
    folder.mkdir()
    tiny_store.catalog.to_parquet(folder / "catalog.parquet")
    events.to_parquet(folder / "events.parquet")
    config = tiny_rank_config(
        tmp_path / "r.yaml",
        data={
            "source": "events",
            "path": str(folder / "events.parquet"),
            "catalog": str(folder / "catalog.parquet"),
        },
        model={"text_fusion": True},
        epochs=1,
    )
    assert _train(tmp_path, config) == 0
    cached = list((tmp_path / "run").glob("item_text_*.npy"))
    assert len(cached) == 1
    card = store.read_card(tmp_path / "store" / "ranker" / "1")
    assert card["cold_items"] == 5 and card["text_fusion"] is True
    module = tf.saved_model.load(str(tmp_path / "store" / "ranker" / "1"))
    out = module.signatures["recommend_simple"](
        history=tf.constant([events["product_id"].tolist()[:2]]), k=tf.constant(60)
    )
    ranked = [p.decode() for p in out["product_ids"].numpy()[0]]
    assert set(cold) <= set(ranked)  # cold products are ranked like any other
    # Another run with the same run directory reuses the cached embeddings.
    from recsys.tasks import ranking
    from training import rank

    def no_encoding(*args, **kwargs):
        raise AssertionError("the cached embeddings should have been used")

    monkeypatch.setattr(ranking, "encode_texts", no_encoding)
    loaded = load_config(config)
    data = rank.prepare(loaded, run_dir=tmp_path / "run")
    np.testing.assert_array_equal(rank.text_embeddings(data, loaded), np.load(cached[0]))


def test_bad_ranking_configs_exit_2_naming_the_key(tmp_path, capsys):
    config = tiny_rank_config(tmp_path / "r.yaml")
    assert main(["train", str(config), "--set", "backbone=minilm", "--no-export"]) == 2
    assert "backbone" in capsys.readouterr().err
    assert main(["train", str(config), "--set", "model.num_negatives=0", "--no-export"]) == 2
    assert "model.num_negatives" in capsys.readouterr().err
    assert main(["train", str(config), "--set", "data.source=retail", "--no-export"]) == 2
    assert "ranking" in capsys.readouterr().err
    folder = tmp_path / "no_titles"
    folder.mkdir()
    path = _write_sasrec(folder)
    argv = ["train", str(config), "--set", "data.source=sasrec", "--set", f"data.path={path}"]
    assert main(argv + ["--set", "model.text_fusion=true", "--no-export"]) == 2
    assert "item titles" in capsys.readouterr().err


def _write_movielens(folder, users=24, movies=20):
    """movies.dat (Latin-1) and gzipped timestamp-less ratings, as in ../shared/data."""
    folder.mkdir(parents=True, exist_ok=True)
    genres = ["Drama", "Comedy|Romance", "Action|Thriller"]
    with open(folder / "movies.dat", "w", encoding="latin-1") as f:
        for movie in range(1, movies + 1):
            f.write(f"{movie}::Film {movie} caf\u00e9 (1999)::{genres[movie % 3]}\n")
    rng = np.random.default_rng(1)
    with gzip.open(folder / "ratings_users_1-2999.dat.gz", "wt") as f:
        for user in range(1, users + 1):
            start = int(rng.integers(1, movies))
            for step in range(int(rng.integers(5, 12))):
                f.write(f"{user}::{(start + step) % movies + 1}::4\n")
    return folder


def _write_unisrec(folder, users=24, items=20):
    """Scientific.text / .item2index / .test.inter, the UniSRec layout."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "Scientific.text", "w") as f:
        f.write("item_id:token\ttext:token_seq\n")
        for item in range(items):
            f.write(f"A{item}\tPart {item}. Industrial & Scientific Tools. Brand{item % 4}. \n")
    with open(folder / "Scientific.item2index", "w") as f:
        f.writelines(f"A{item}\t{item}\n" for item in range(items))
    rng = np.random.default_rng(2)
    with open(folder / "Scientific.test.inter", "w") as f:
        f.write("user_id:token\titem_id_list:token_seq\titem_id:token\n")
        for user in range(users):
            start = int(rng.integers(0, items))
            seq = [str((start + step) % items) for step in range(int(rng.integers(5, 10)))]
            f.write(f"{user}\t{' '.join(seq[:-1])}\t{seq[-1]}\n")
    return folder


@pytest.mark.parametrize("source", ["movielens", "unisrec"])
def test_movielens_and_unisrec_sources_train_with_their_titles(tmp_path, source):
    folder = (_write_movielens if source == "movielens" else _write_unisrec)(tmp_path / "data")
    config = tiny_rank_config(
        tmp_path / "r.yaml", data={"source": source, "path": str(folder)}, epochs=1
    )
    assert _train(tmp_path, config) == 0
    version = tmp_path / "store" / "ranker" / "1"
    card = store.read_card(version)
    assert card["num_items"] == 20
    import pandas as pd

    catalog = pd.read_parquet(version / "catalog.parquet")
    prefix = "Film" if source == "movielens" else "Part"
    assert catalog["title"].str.startswith(prefix).all()
    if source == "movielens":
        assert "café" in catalog["title"].iloc[0]  # decoded as Latin-1
