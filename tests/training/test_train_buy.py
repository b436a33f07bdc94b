"""End-to-end: `recsys train` on a tiny config, the store, and the exported SavedModel."""

import json
import subprocess
import sys

import numpy as np
import pytest

from recsys import store
from recsys.cli import main
from tests.conftest import tiny_buy_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_store_dir):
    tmp = tmp_path_factory.mktemp("train")
    config = tiny_buy_config(tmp / "buy.yaml", store_dir=tiny_store_dir)
    code = main(
        ["train", str(config), "--store", str(tmp / "store"), "--run-dir", str(tmp / "run")]
    )
    assert code == 0
    return tmp


def test_train_publishes_a_version_with_report_and_plots(trained):
    assert store.versions(trained / "store", "buy") == [1]
    card = store.read_card(trained / "store" / "buy" / "1")
    assert card["task"] == "buy_probability"
    assert set(card["signatures"]) == {"score", "score_catalog"}
    assert 0.0 <= card["headline_metrics"]["roc_auc"] <= 1.0
    assert "bayes_optimal_auc" in card["headline_metrics"]
    report = json.loads((trained / "run" / "report.json").read_text())
    assert report["training"]["epochs_run"] >= 1
    for name in ("roc.png", "calibration.png", "training_curves.png", "training_log.csv"):
        assert (trained / "run" / name).stat().st_size > 0
    assert (trained / "store" / "buy" / "1" / "catalog.parquet").is_file()


def test_export_carries_product_counts_up_to_the_test_period(trained):
    import tensorflow as tf

    from recsys.config import load_config
    from recsys.tasks.buy_probability import ProductStats
    from training import buy

    data = buy.prepare(load_config(trained / "buy.yaml"))
    assert data.test_counts[0] == data.product_counts[0]  # the same products, in order
    assert data.test_counts[1] != data.product_counts[1]  # more purchases by the test period
    loaded = tf.saved_model.load(str(trained / "store" / "buy" / "1"))
    keys, rows = (
        t.numpy()
        for t in tf.raw_ops.LookupTableExportV2(
            table_handle=loaded.product_stats.table.resource_handle,
            Tkeys=tf.string,
            Tvalues=tf.int64,
        )
    )
    values = loaded.product_stats.values.numpy()
    exported = {key.decode(): values[row] for key, row in zip(keys, rows, strict=True)}
    assert values.shape[1] == len(ProductStats.COLUMNS)
    for text, *expected in zip(*data.test_counts, strict=True):
        np.testing.assert_allclose(exported[text], expected, rtol=1e-6, err_msg=text)
    assert sum(data.test_counts[4]) > 0  # products bought in the 30 days before the test


def test_a_second_run_publishes_the_next_version(trained, tiny_store_dir):
    config = tiny_buy_config(trained / "buy2.yaml", store_dir=tiny_store_dir, epochs=1)
    assert (
        main(
            [
                "train",
                str(config),
                "--store",
                str(trained / "store"),
                "--run-dir",
                str(trained / "run2"),
            ]
        )
        == 0
    )
    assert store.versions(trained / "store", "buy") == [1, 2]


_FRESH = """
import json, sys
import tensorflow as tf
import tensorflow_text  # registers the tokenizer ops
model = tf.saved_model.load(sys.argv[1])
contexts = json.loads(sys.argv[2]); products = json.loads(sys.argv[3])
out = model.signatures["score"](context=tf.constant(contexts), product=tf.constant(products))
history = json.loads(sys.argv[4])
cat = model.signatures["score_catalog"](history=tf.constant(history),
    history_events=tf.constant(json.loads(sys.argv[6])),
    candidates=tf.constant(json.loads(sys.argv[5])), query=tf.constant(""))
print(json.dumps({"score": out["probability"].numpy().tolist(),
                  "catalog": [None if p != p else p for p in cat["probability"].numpy().tolist()],
                  "known": cat["known"].numpy().tolist(),
                  "modules": sorted(m for m in sys.modules if m.startswith(("keras", "recsys")))}))
"""


@pytest.mark.parametrize("tastes", [False, True], ids=["features", "attribute-tastes"])
def test_saved_model_in_a_fresh_process_matches_keras(tiny_store, tmp_path, tastes):
    import keras

    from recsys.backbones import tiny_bert
    from recsys.data.buy_pairs import catalog_texts, product_counts
    from recsys.tasks import buy_probability as bp
    from recsys.tasks import buy_probability_export
    from recsys.tasks.attribute_tastes import AttributeTastes

    keras.utils.set_random_seed(3)
    backbone, text_pre = tiny_bert(sequence_length=32, hidden_dim=8)
    catalog = tiny_store.catalog
    counts = product_counts(tiny_store.events, catalog)
    attribute_tastes = None
    if tastes:  # the per-user estimate and its Laplace variance run inside the SavedModel
        attribute_tastes = AttributeTastes.fit(tiny_store.events, catalog, fit_steps=50)
    pre = bp.BuyProbabilityPreprocessor(
        text_pre.tokenizer,
        32,
        16,
        product_stats=bp.ProductStats(*counts),
        attribute_tastes=attribute_tastes,
    )
    model = bp.build_model(backbone, hidden_dim=8, taste_offset=tastes)
    buy_probability_export.export(model, pre, catalog, tmp_path / "m", history_length=4)

    items, products = catalog_texts(catalog)
    history = list(catalog["product_id"][:3])
    events = ["purchase", "cart", "view"]
    candidates = list(catalog["product_id"][2:7])
    context = bp.context_text(
        [bp.event_prefix(e) + items[p] for p, e in zip(history, events, strict=True)]
    )
    pairs = {"context": [context] * len(candidates), "product": [products[p] for p in candidates]}
    expected = 1 / (1 + np.exp(-model(pre(pairs))["buy_logit"].numpy().reshape(-1)))
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            _FRESH,
            str(tmp_path / "m"),
            json.dumps(pairs["context"]),
            json.dumps(pairs["product"]),
            json.dumps(history),
            json.dumps(candidates + ["nope"]),
            json.dumps(events),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if tastes:  # the taste feature is in play: it moves the scores
        features = pre(pairs)["features"].numpy()
        assert np.abs(features[:, bp.FEATURE_NAMES.index("taste_logit")]).min() > 0
    np.testing.assert_allclose(result["score"], expected, atol=1e-5)
    np.testing.assert_allclose(result["catalog"][:-1], expected, atol=1e-5)
    assert result["known"] == [True] * len(candidates) + [False]
    assert result["catalog"][-1] is None
    assert not [m for m in result["modules"] if m.startswith(("keras_hub", "recsys"))]


def test_models_command_lists_the_published_version(trained, capsys):
    assert main(["models", "--store", str(trained / "store")]) == 0
    out = capsys.readouterr().out
    assert "buy" in out and "buy_probability" in out and "roc_auc=" in out


def test_bad_config_value_exits_2_naming_the_key(tmp_path, capsys):
    config = tiny_buy_config(tmp_path / "buy.yaml")
    assert main(["train", str(config), "--set", "train.epochs=0", "--store", str(tmp_path)]) == 2
    assert "train.epochs" in capsys.readouterr().err
    assert main(["train", str(config), "--set", "model.bogus=1", "--store", str(tmp_path)]) == 2
    assert "model.bogus" in capsys.readouterr().err


def test_next_period_pairs_train_with_product_counts_at_each_cutoff(tiny_store_dir, tmp_path):
    import tensorflow as tf

    from recsys.config import load_config
    from recsys.data import buy_pairs
    from recsys.tasks.attribute_tastes import AttributeTastes
    from recsys.tasks.buy_probability import FEATURE_NAMES, history_features
    from recsys.tasks.item_affinity import ItemAffinity
    from training import buy

    path = tiny_buy_config(
        tmp_path / "buy.yaml",
        store_dir=tiny_store_dir,
        model={"freeze_backbone": True, "item_affinity_l2": 5.0, "attribute_tastes": True},
    )
    config = load_config(path, ["data.horizon_days=42"])
    data = buy.prepare(config)
    assert data.counts_at_cutoffs and data.train["timestamp"].nunique() >= 2
    model, preprocessor = buy.build(config, data)
    # the validation pairs use the preprocessor's tables, counted once, before their cutoff
    validation_cutoff = data.validation["timestamp"].min()
    assert buy._tables_at(data, validation_cutoff) == (
        preprocessor.product_stats,
        data.affinity,
        data.tastes,
    )
    features = buy._features(data, data.train, "train", preprocessor)
    column = FEATURE_NAMES.index("log_product_purchases")
    first = data.train["timestamp"].min()
    texts, purchases = buy_pairs.product_counts(data.events, data.catalog, before=first)[:2]
    expected = dict(zip(texts, purchases, strict=True))
    rows = np.flatnonzero(data.train["timestamp"] == first)
    got = features[rows, column]
    want = np.log1p([expected[p] for p in data.train["product"].iloc[rows]])
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # the single table (counted before validation) would have shown later, larger counts
    table = buy._features(data, data.train, "test", preprocessor)[rows, column]
    assert (table > got).any()
    # the item affinity too comes from EASE weights fitted before each pair's cutoff
    column = FEATURE_NAMES.index("item_affinity")
    part = data.train.iloc[rows]
    at_cutoff = history_features(
        tf.constant(part["context"].tolist()),
        tf.constant(part["product"].tolist()),
        None,
        ItemAffinity.fit(data.events, data.catalog, 5.0, before=first),
    ).numpy()[:, column]
    np.testing.assert_allclose(features[rows, column], at_cutoff, rtol=1e-5, atol=1e-6)
    assert np.abs(at_cutoff).max() > 0
    # and the attribute tastes' appeal and weights from the events before each pair's cutoff
    column = FEATURE_NAMES.index("product_appeal")
    tastes = AttributeTastes.fit(data.events, data.catalog, before=first, history_length=4)
    at_cutoff = history_features(
        tf.constant(part["context"].tolist()),
        tf.constant(part["product"].tolist()),
        attribute_tastes=tastes,
    ).numpy()[:, column]
    np.testing.assert_allclose(features[rows, column], at_cutoff, rtol=1e-5, atol=1e-6)
    later = buy._features(data, data.train, "test", preprocessor)[rows, column]
    assert np.abs(at_cutoff).max() > 0 and not np.allclose(later, at_cutoff)
    # evaluation gives the preprocessor test-period tables and leaves the validation ones alone
    validation_features = buy._features(data, data.validation, "validation", preprocessor)
    buy.evaluate(model, preprocessor, data, config, tmp_path)
    assert preprocessor.item_affinity is data.test_affinity
    assert preprocessor.attribute_tastes is data.test_tastes
    again = buy._features(data, data.validation, "validation", preprocessor)
    np.testing.assert_array_equal(again, validation_features)
    test_period = buy._features(data, data.validation, "test", preprocessor)
    assert not np.allclose(test_period, validation_features)
    # the frozen encoder is traced per field and chunk shape, not again for every split
    for split in ("train", "validation", "test"):
        buy._cached_inputs(data, buy._frame(data, split), split, preprocessor, model)
    assert sorted(data.encoders) == ["context", "product"]
    assert all(f.experimental_get_tracing_count() <= 2 for f in data.encoders.values())

    code = main(
        [
            "train",
            str(path),
            "--set",
            "data.horizon_days=42",
            "--store",
            str(tmp_path / "store"),
            "--run-dir",
            str(tmp_path / "run"),
        ]
    )
    assert code == 0 and store.versions(tmp_path / "store", "buy") == [1]
    # the SavedModel holds the weights fitted up to the test period
    loaded = tf.saved_model.load(str(tmp_path / "store" / "buy" / "1"))
    np.testing.assert_allclose(
        loaded.item_affinity.weights.numpy(), data.test_affinity.weights.numpy()
    )
    assert not np.allclose(data.test_affinity.weights.numpy(), data.affinity.weights.numpy())


def test_item_affinity_is_refused_where_training_pairs_would_see_their_own_labels(
    tiny_store_dir, tmp_path
):
    from recsys.config import ConfigError, load_config
    from training import buy

    path = tiny_buy_config(
        tmp_path / "buy.yaml", store_dir=tiny_store_dir, model={"item_affinity_l2": 5.0}
    )
    with pytest.raises(ConfigError, match="data.horizon_days"):
        buy.prepare(load_config(path, ["model.freeze_backbone=true"]))
    with pytest.raises(ConfigError, match="freeze_backbone"):
        buy.prepare(load_config(path, ["data.horizon_days=28"]))
    with pytest.raises(ConfigError, match="item_affinity_l2"):
        load_config(path, ["model.item_affinity_l2=0"])


def test_attribute_tastes_train_on_the_training_period_and_export_the_test_periods(
    tiny_store_dir, tmp_path
):
    import tensorflow as tf

    from recsys.config import load_config
    from training import buy

    model = {"attribute_tastes": True, "freeze_backbone": True, "embedding_interaction": "cosine"}
    config = tiny_buy_config(tmp_path / "buy.yaml", store_dir=tiny_store_dir, model=model)
    code = main(
        ["train", str(config), "--store", str(tmp_path / "store"), "--run-dir", str(tmp_path / "r")]
    )
    assert code == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert 0.5 < report["synthetic_truth"]["roc_auc"] <= 1.0
    data = buy.prepare(load_config(config))
    # fitted before the validation period for training, up to the test period for export
    assert not np.allclose(data.tastes.appeal.numpy(), data.test_tastes.appeal.numpy())
    loaded = tf.saved_model.load(str(tmp_path / "store" / "buy" / "1"))
    np.testing.assert_allclose(
        loaded.attribute_tastes.appeal.numpy(), data.test_tastes.appeal.numpy(), atol=1e-6
    )
