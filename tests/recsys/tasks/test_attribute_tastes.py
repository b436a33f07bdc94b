"""Attribute tastes: the context's parsing, the per-user estimate, the fit and the feature."""

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from recsys.data import buy_pairs, synthetic
from recsys.data.buy_pairs import catalog_texts
from recsys.tasks.attribute_tastes import COLUMNS, AttributeTastes
from recsys.tasks.buy_probability import context_text, event_prefix


@pytest.fixture(scope="module")
def shop():
    """Two categories with two brands each, two products per (category, brand)."""
    rows = [
        (f"{c}{b}{i}", f"{kind} {b} {i}", kind, b, price)
        for c, kind, price in (("h", "hat", 20.0), ("m", "mug", 10.0))
        for b in ("Acme", "Bolt")
        for i in range(2)
    ]
    catalog = pd.DataFrame(rows, columns=["product_id", "title", "category", "brand", "price"])
    items, products = catalog_texts(catalog)
    return catalog, items, products


def _context(items, *events):
    """A context from (product id, event) pairs, most recent first."""
    return context_text([event_prefix(e) + items[p] for p, e in events])


def _columns(tastes, contexts, products):
    """The feature columns of each context's user for the same `products`."""
    contexts = list(contexts)
    n = len(products)
    return (
        tastes(
            tf.constant(contexts),
            tf.constant(np.repeat(np.arange(len(contexts)), n)),
            tf.constant(list(products) * len(contexts)),
        )
        .numpy()
        .reshape(len(contexts), n, len(COLUMNS))
    )


def test_history_counts_views_carts_and_purchases_per_distinct_product(shop):
    catalog, items, _ = shop
    tastes = AttributeTastes.from_catalog(catalog)
    # most recent first: hAcme0 viewed twice then bought, hBolt0 carted after a view, an
    # unknown item, and mAcme0 bought before everything else
    context = _context(
        items,
        ("hAcme0", "purchase"),
        ("hAcme0", "view"),
        ("hBolt0", "cart"),
        ("hBolt0", "view"),
        ("hAcme0", "view"),
        ("mAcme0", "purchase"),
    )
    context += " ; Mystery | nowhere"
    h = {k: v.numpy()[0] for k, v in tastes.history(tf.constant([context])).items()}
    assert h["unit"].tolist() == [1, 0, 1, 0, 0, 1, 0]  # the first (most recent) of each product
    assert h["views"][[0, 2, 5]].tolist() == [2.0, 1.0, 1.0]  # a bought-only unit counts 1
    assert h["purchased"][[0, 2, 5]].tolist() == [1.0, 0.0, 1.0]
    assert h["cart"][[0, 2, 5]].tolist() == [0.0, 1.0, 0.0]
    assert h["view"].tolist() == [0, 1, 0, 1, 1, 0, 0]  # purchases, carts, unknowns are no views
    # Acme was bought (the mug) before the hat's first view; no hat was bought before either
    assert h["bought_brand"][[0, 2]].tolist() == [1.0, 0.0]
    assert h["bought_category"][[0, 2]].tolist() == [0.0, 0.0]


def test_views_of_a_brand_raise_its_products_within_the_category(shop):
    catalog, items, products = shop
    tastes = AttributeTastes.from_catalog(catalog)
    acme = _context(items, *[(p, "view") for p in ("hAcme0", "hAcme1") * 3])
    bolt = _context(items, *[(p, "view") for p in ("hBolt0", "hBolt1") * 3])
    columns = _columns(tastes, [acme, bolt], [products["hAcme0"], products["hBolt0"]])
    logit = columns[..., COLUMNS.index("taste_logit")]
    assert logit[0, 0] > logit[0, 1] and logit[1, 1] > logit[1, 0]
    brand = columns[..., COLUMNS.index("brand_taste")]
    assert brand[0, 0] > 0 > brand[0, 1]


def test_more_history_means_less_uncertainty(shop):
    catalog, items, products = shop
    tastes = AttributeTastes.from_catalog(catalog)
    short = _context(items, ("hAcme0", "view"))
    long = _context(items, *[("hAcme0", "view"), ("hAcme1", "view")] * 10)
    variance = _columns(tastes, ["", short, long], [products["hAcme1"]])[
        ..., COLUMNS.index("taste_variance")
    ][:, 0]
    assert variance[0] > variance[1] > variance[2] > 0


def test_a_cart_without_a_purchase_says_more_than_a_view(shop):
    catalog, items, products = shop
    tastes = AttributeTastes.fit(_shop_events(catalog), catalog, fit_steps=100, history_length=16)
    viewed = _context(items, ("hBolt1", "view"), ("hBolt1", "view"))
    carted = _context(items, ("hBolt1", "cart"), ("hBolt1", "view"))
    logit = _columns(tastes, [viewed, carted], [products["hBolt0"]])[..., 0][:, 0]
    assert logit[1] > logit[0]


def _shop_events(catalog):
    """Events of 30 users in `shop`: each views 6 products and carts or buys some."""
    rng = np.random.default_rng(0)
    rows, start = [], pd.Timestamp("2024-01-01", tz="UTC")
    ids = catalog["product_id"].to_numpy()
    for u in range(30):
        t = start + pd.Timedelta(days=u)
        for j, p in enumerate(rng.choice(ids, size=6)):
            event = rng.choice(["view", "view", "cart", "purchase"])
            rows.append((f"u{u}", p, "view", t + pd.Timedelta(minutes=2 * j)))
            if event != "view":
                rows.append((f"u{u}", p, event, t + pd.Timedelta(minutes=2 * j + 1)))
    return pd.DataFrame(rows, columns=["user_id", "product_id", "event", "timestamp"])


def test_products_outside_the_catalog_get_zeros(shop):
    catalog, items, products = shop
    tastes = AttributeTastes.from_catalog(catalog)
    columns = _columns(tastes, [_context(items, ("hAcme0", "view"))], ["Mystery | nowhere"])
    assert columns.tolist() == [[[0.0] * len(COLUMNS)]]


def test_the_estimate_reaches_the_users_optimum(shop):
    catalog, items, _ = shop
    quick = AttributeTastes.from_catalog(catalog)
    slow = AttributeTastes.from_catalog(catalog, steps=600, learning_rate=0.05)
    context = _context(
        items, ("hAcme0", "purchase"), *[(p, "view") for p in ("hAcme0", "mBolt1", "hBolt0")] * 2
    )
    h = quick.history(tf.constant([context]))
    fast_tastes, slow_tastes = quick.estimate(h), slow.estimate(h)

    def loss(t):
        return float(quick._negative_log_posterior(t, h, quick.appeal, quick.weights)[0])

    # the default 60 steps land within 1e-3 of the optimum's value (tastes within 0.05: the
    # posterior is flat along category versus brand)
    assert (
        loss(fast_tastes) - loss(slow_tastes)
        < 1e-3
        < loss(quick._zero_tastes(1)) - loss(slow_tastes)
    )
    for a, b in zip(fast_tastes, slow_tastes, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=0.05)


def test_fitted_tastes_rank_the_synthetic_truth():
    store = synthetic.generate(products=200, users=300, seed=2, events_target=9000)
    tastes = AttributeTastes.fit(store.events, store.catalog, fit_steps=200, history_length=48)
    assert float(tf.reduce_max(tf.abs(tastes.appeal))) > 0  # fitted, not the neutral start
    truth = buy_pairs.with_texts(store.truth, store.events, store.catalog, 48)
    contexts, of = np.unique(truth["context"].to_numpy(), return_inverse=True)
    columns = tastes(tf.constant(contexts), tf.constant(of), tf.constant(truth["product"].tolist()))
    auc = synthetic._roc_auc(truth["label"].to_numpy(), columns.numpy()[:, 0])
    assert auc / store.bayes_optimal_auc() > 0.85


def test_missing_or_zero_prices_give_a_neutral_relative_price():
    catalog = pd.DataFrame(
        {
            "product_id": list("abcd"),
            "title": list("ABCD"),
            "category": ["x", "x", "y", "y"],
            "brand": ["p", "q", "p", None],
            "price": [10.0, 0.0, None, 5.0],
        }
    )
    relative = AttributeTastes.from_catalog(catalog).relative_price.numpy()
    np.testing.assert_allclose(relative, [np.log(2.0), 0.0, 0.0, 0.0, 0.0], rtol=1e-6)
