import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from recsys.tasks import buy_probability as bp
from recsys.tasks.item_affinity import ItemAffinity, ease_weights, interaction_matrix
from tests.recsys.tasks.test_buy_probability import _events

CATALOG = pd.DataFrame(
    {
        "product_id": list("abcd"),
        "title": ["Mug", "Cap", "Hat", "Bowl"],
        "category": ["kitchen", "hats", "hats", "kitchen"],
    }
)


def test_ease_weights_are_ridge_regressions_on_the_other_products():
    rng = np.random.default_rng(0)
    matrix = (rng.random((40, 6)) < 0.3).astype(np.float32)
    weights = ease_weights(matrix, l2=2.5)
    assert np.all(np.diag(weights) == 0.0)
    for j in range(6):
        others = [i for i in range(6) if i != j]
        x = matrix[:, others].astype(np.float64)
        ridge = np.linalg.solve(x.T @ x + 2.5 * np.eye(5), x.T @ matrix[:, j])
        np.testing.assert_allclose(weights[others, j], ridge, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="l2"):
        ease_weights(matrix, l2=0.0)


def test_interaction_matrix_sees_only_events_before_the_cutoff():
    events = _events(
        [
            ("u", "a", "purchase", "2024-01-01"),
            ("u", "b", "view", "2024-01-02"),
            ("v", "a", "purchase", "2024-02-01"),  # after the cutoff
            ("v", "zzz", "purchase", "2024-01-01"),  # not in the catalog: ignored
        ]
    )
    matrix, texts = interaction_matrix(events, CATALOG, before=pd.Timestamp("2024-01-15", tz="UTC"))
    assert texts == ["Mug | kitchen", "Cap | hats", "Hat | hats", "Bowl | kitchen"]
    assert matrix.tolist() == [[1.0, 1.0, 0.0, 0.0]]


def _reference(weights, rows_by_user, candidate):
    """Sum of weights over distinct history rows; share of rows seen more than once."""
    out = []
    for rows, c in zip(rows_by_user, candidate, strict=True):
        distinct = set(rows)
        affinity = sum(weights[h, c] for h in distinct)
        repeated = sum(rows.count(h) > 1 for h in distinct)
        out.append((affinity, repeated / max(len(distinct), 1)))
    return np.array(out)


def test_affinity_counts_each_history_product_once_and_ignores_unknown_items():
    rng = np.random.default_rng(1)
    weights = rng.normal(size=(4, 4)).astype(np.float32)
    np.fill_diagonal(weights, 0.0)
    items = ["Mug | kitchen", "Cap | hats", "Hat | hats", "Bowl | kitchen"]
    products = [t + " | price low" for t in items]
    affinity = ItemAffinity(items, products, weights)
    history = tf.constant(
        [
            [items[0], items[1], items[0], items[0], "Sofa | living", ""],
            [items[3], "", "", "", "", ""],
            ["", "", "", "", "", ""],
        ]
    )
    got = affinity(history, tf.constant([products[2], products[0], products[1]])).numpy()
    want = _reference(weights, [[0, 1, 0, 0], [3], []], [2, 0, 1])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    # an unknown candidate has no affinity
    unknown = affinity(history[:1], tf.constant(["Sofa | living | price high"])).numpy()
    np.testing.assert_allclose(unknown[0], [0.0, 0.5])


def test_history_features_carry_the_affinity_and_the_product_repeat_rate():
    events = _events(
        [
            ("u", "a", "purchase", "2024-01-01"),
            ("u", "b", "purchase", "2024-01-01"),
            ("v", "a", "purchase", "2024-01-02"),
            ("v", "b", "purchase", "2024-01-02"),
            ("v", "b", "purchase", "2024-01-09"),
        ]
    )
    from recsys.data import buy_pairs

    affinity = ItemAffinity.fit(events, CATALOG, l2=1.0)
    stats = bp.ProductStats(*buy_pairs.product_counts(events, CATALOG))
    context = tf.constant(["bought: Mug | kitchen ; bought: Mug | kitchen", ""])
    product = tf.constant(["Cap | hats", "Cap | hats"])
    features = bp.history_features(context, product, stats, affinity).numpy()
    names = list(bp.FEATURE_NAMES)
    # a and b were bought together by both users: ridge weight 2 / (2 + 1)
    np.testing.assert_allclose(features[:, names.index("item_affinity")], [2 / 3, 0.0], rtol=1e-5)
    np.testing.assert_allclose(features[:, names.index("user_repeat_share")], [1.0, 0.0])
    # of b's two buyers, v bought it again a week later
    np.testing.assert_allclose(features[:, names.index("product_repeat_rate")], [0.5, 0.5])
    without = bp.history_features(context, product, stats).numpy()
    np.testing.assert_allclose(without[:, names.index("item_affinity")], 0.0)


def test_affinity_survives_a_savedmodel_round_trip(tmp_path):
    events = _events([("u", "a", "purchase", "2024-01-01"), ("u", "b", "purchase", "2024-01-01")])
    affinity = ItemAffinity.fit(events, CATALOG, l2=1.0)
    module = tf.Module()
    module.affinity = affinity
    module.call = tf.function(
        lambda h, p: affinity(h, p),
        input_signature=[tf.TensorSpec([None, None], tf.string), tf.TensorSpec([None], tf.string)],
    )
    tf.saved_model.save(module, str(tmp_path / "m"))
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    history, product = tf.constant([["Cap | hats", ""]]), tf.constant(["Mug | kitchen"])
    np.testing.assert_allclose(loaded.call(history, product), affinity(history, product))


def test_too_large_catalogs_are_refused_with_the_setting_to_change(monkeypatch):
    from recsys.tasks import item_affinity

    monkeypatch.setattr(item_affinity, "MAX_PRODUCTS", 3)
    events = _events([("u", "a", "purchase", "2024-01-01")])
    with pytest.raises(ValueError, match="item_affinity_l2: null"):
        ItemAffinity.fit(events, CATALOG, l2=1.0)
