"""End-to-end: `recsys train` for text classification on tiny tables, the store and the export."""

import json

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import yaml

from recsys import store
from recsys.cli import main
from recsys.config import from_dict
from tests.conftest import TINY_BERT
from training import classify

WORDS = {
    "shoes": ["running shoe", "leather boot", "sneaker"],
    "hats": ["wool hat", "sun cap", "beanie"],
    "mugs": ["coffee mug", "tea cup", "glass mug"],
}


def _table(path, rows=60, multi_label=False):
    rng = np.random.default_rng(0)
    names = sorted(WORDS)
    records = []
    for i in range(rows):
        first = names[i % 3]
        labels = [first]
        if multi_label and i % 2:
            labels.append(names[(i + 1) % 3])
        words = [str(rng.choice(WORDS[label])) for label in labels]
        records.append(
            {"title": f"item {i}", "body": " and ".join(words), "tags": "|".join(labels)}
        )
    frame = pd.DataFrame(records)
    frame.to_csv(path, index=False)
    return path


def _config(path, data, model=None, **train):
    config = {
        "task": "text_classification",
        "name": "cls",
        "data": {"source": "table", "text_columns": ["title", "body"], "label": "tags", **data},
        "backbone": TINY_BERT,
        "model": {"sequence_length": 32, "hidden_dim": 8, **(model or {})},
        "train": {"epochs": 2, "batch_size": 16, "learning_rate": 1e-2, **train},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _train(tmp, config, name="run"):
    argv = ["train", str(config), "--store", str(tmp / "store"), "--run-dir", str(tmp / name)]
    assert main(argv) == 0
    return tmp / name


@pytest.fixture(scope="module")
def multi_class(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cls")
    table = _table(tmp / "items.csv")
    model = {"class_weights": "balanced", "ngram_blend": True, "neighbour_blend": True}
    return tmp, _train(tmp, _config(tmp / "cls.yaml", {"path": str(table)}, model))


def test_train_publishes_a_classifier_with_report_and_plots(multi_class):
    tmp, run = multi_class
    card = store.read_card(tmp / "store" / "cls" / "1")
    assert card["task"] == "text_classification"
    assert card["labels"] == ["hats", "mugs", "shoes"] and card["multi_label"] is False
    assert card["signatures"]["classify"]["outputs"] == {
        "probabilities": "float32[N, 3]",
        "label": "string[N]",
    }
    assert set(card["headline_metrics"]) == {"accuracy", "macro_f1"}
    report = json.loads((run / "report.json").read_text())
    assert set(report["test"]["per_class"]) == {"hats", "mugs", "shoes"}
    assert {"precision", "recall"} <= set(report["test"]["per_class"]["hats"])
    assert np.asarray(report["test"]["confusion_matrix"]).shape == (3, 3)
    for name in ("confusion.png", "training_curves.png", "test_predictions.npz"):
        assert (run / name).stat().st_size > 0


def test_export_matches_the_evaluated_probabilities(multi_class):
    tmp, run = multi_class
    loaded = tf.saved_model.load(str(tmp / "store" / "cls" / "1"))
    config = from_dict(yaml.safe_load((tmp / "cls.yaml").read_text()))
    texts = classify.prepare(config).test["text"].tolist()
    out = loaded.signatures["classify"](text=tf.constant(texts))
    saved = np.load(run / "test_predictions.npz")
    np.testing.assert_allclose(out["probabilities"].numpy(), saved["probabilities"], atol=1e-5)
    assert [n.decode() for n in loaded.label_names.numpy()] == ["hats", "mugs", "shoes"]


def test_ngram_blend_is_chosen_on_validation_reported_and_exported(multi_class):
    from recsys.tasks.ngram_linear import WEIGHT_GRID

    tmp, run = multi_class
    blend = store.read_card(tmp / "store" / "cls" / "1")["ngram_blend"]
    assert blend["ngram_weight"] in WEIGHT_GRID and blend["logit_scale"] > 0
    assert blend["validation_log_loss_blend"] <= blend["validation_log_loss_model"]
    reported = json.loads((run / "report.json").read_text())["test"]["ngram_blend"]
    assert {k: v for k, v in reported.items() if k != "without_blend"} == blend
    assert set(reported["without_blend"]) == {"accuracy", "macro_f1"}
    loaded = tf.saved_model.load(str(tmp / "store" / "cls" / "1"))
    assert float(loaded.logit_scale.numpy()) == pytest.approx(blend["logit_scale"])
    # The neighbours' votes travel in the SavedModel with their chosen weight (the export test
    # above checks the probabilities they give against the evaluated ones).
    assert blend["neighbour_k"] in (1, 3, 5) and blend["neighbour_weight"] > 0
    assert float(loaded.neighbours.weight.numpy()) == blend["neighbour_weight"]


def test_multi_label_frozen_backbone_tunes_and_exports_thresholds(tmp_path):
    table = _table(tmp_path / "items.csv", multi_label=True)
    model = {"multi_label": True, "freeze_backbone": True, "class_weights": "balanced"}
    config = _config(tmp_path / "ml.yaml", {"path": str(table)}, model, epochs=3)
    run = _train(tmp_path, config)
    card = store.read_card(tmp_path / "store" / "cls" / "1")
    assert card["multi_label"] is True and len(card["thresholds"]) == 3
    assert card["signatures"]["classify"]["outputs"]["predicted"] == "bool[N, 3]"
    loaded = tf.saved_model.load(str(tmp_path / "store" / "cls" / "1"))
    np.testing.assert_allclose(loaded.thresholds.numpy(), card["thresholds"], rtol=1e-6)
    data = classify.prepare(from_dict(yaml.safe_load(config.read_text())))
    out = loaded.signatures["classify"](text=tf.constant(data.test["text"].tolist()))
    saved = np.load(run / "test_predictions.npz")
    np.testing.assert_allclose(out["probabilities"].numpy(), saved["probabilities"], atol=1e-5)
    expected = saved["probabilities"] >= np.asarray(card["thresholds"])[None, :]
    np.testing.assert_array_equal(out["predicted"].numpy(), expected)
    report = json.loads((run / "report.json").read_text())
    assert {"subset_accuracy", "macro_f1", "micro_f1"} <= set(report["test"])


def test_one_class_and_empty_data_are_refused_with_exit_2(tmp_path, capsys):
    one = tmp_path / "one.csv"
    pd.DataFrame({"title": ["a", "b", "c", "d"], "body": ["x"] * 4, "tags": ["hats"] * 4}).to_csv(
        one, index=False
    )
    assert main(["train", str(_config(tmp_path / "a.yaml", {"path": str(one)}))]) == 2
    assert "at least two classes" in capsys.readouterr().err
    empty = tmp_path / "empty.csv"
    empty.write_text("title,body,tags\n")
    assert main(["train", str(_config(tmp_path / "b.yaml", {"path": str(empty)}))]) == 2
    assert "no examples" in capsys.readouterr().err
    assert main(["train", str(_config(tmp_path / "c.yaml", {"path": str(one), "label": "x"}))]) == 2
    assert "no column 'x'" in capsys.readouterr().err


def test_split_column_and_multi_label_parsing(tmp_path):
    table = pd.read_csv(_table(tmp_path / "t.csv", rows=12, multi_label=True))
    table["part"] = ["train"] * 8 + ["validation"] * 2 + ["test"] * 2
    table.to_parquet(tmp_path / "t.parquet")
    data_cfg = {"path": str(tmp_path / "t.parquet"), "split_column": "part"}
    config = from_dict(yaml.safe_load(_config(tmp_path / "s.yaml", data_cfg).read_text()))
    data = classify.prepare(config)
    assert (len(data.train), len(data.validation), len(data.test)) == (8, 2, 2)
    assert data.test["row"].tolist() == [10, 11]
    multi = dataclass_replace(config, multi_label=True)
    targets = classify.prepare(multi).targets("train")
    assert targets.shape == (8, 3) and targets.sum(axis=1).tolist() == [1, 2] * 4


def dataclass_replace(config, **model):
    import dataclasses

    return dataclasses.replace(config, model=dataclasses.replace(config.model, **model))


def test_pricerunner_split_keeps_each_cluster_on_one_side(tmp_path):
    rows = [
        {
            "Product ID": i,
            "Product Title": f"product {i % 20} offer {i}",
            "Merchant ID": i % 7,
            "Cluster ID": i % 20,
            "Cluster Label": f"c{i % 20}",
            "Category ID": i % 2,
            "Category Label": ["TVs", "CPUs"][i % 2],
        }
        for i in range(100)
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "pr.csv", index=False)
    config = from_dict(
        {
            "task": "text_classification",
            "name": "p",
            "data": {"source": "pricerunner", "path": str(tmp_path / "pr.csv")},
        }
    )
    data = classify.prepare(config)
    clusters = [
        {int(t.split()[1]) for t in part["text"]}
        for part in (data.train, data.validation, data.test)
    ]
    assert not (clusters[0] & clusters[1]) and not (clusters[0] & clusters[2])
    assert not (clusters[1] & clusters[2]) and data.labels == ("CPUs", "TVs")


def test_synthetic_reviews_as_sentiment_and_recommendation(tiny_store_dir):
    base = {
        "task": "text_classification",
        "name": "s",
        "data": {"source": "synthetic", "path": str(tiny_store_dir)},
    }
    data = classify.prepare(from_dict(base))
    assert data.labels == ("negative", "neutral", "positive")
    assert data.train["text"].str.contains(r"\. ").all()  # "title. text"
    base["data"]["label"] = "recommended"
    assert classify.prepare(from_dict(base)).labels == ("not_recommended", "recommended")
