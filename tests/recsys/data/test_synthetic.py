import json
import re
import time

import numpy as np
import pandas as pd
import pytest

from recsys.data import catalog as catalog_table
from recsys.data import events as events_table
from recsys.data import reviews as reviews_table
from recsys.data import synthetic
from recsys.data.errors import DataError

SMALL = {"products": 60, "users": 40, "events_target": 2000}


@pytest.fixture(scope="module")
def default_store():
    start = time.perf_counter()
    store = synthetic.generate(seed=0)
    print(f"default synthetic store generated in {time.perf_counter() - start:.2f} s")
    return store


@pytest.fixture(scope="module")
def small_store():
    return synthetic.generate(seed=1, **SMALL)


def _tables(store):
    return (store.catalog, store.events, store.reviews, store.truth)


def test_same_seed_gives_identical_tables():
    a, b = synthetic.generate(seed=3, **SMALL), synthetic.generate(seed=3, **SMALL)
    for x, y in zip(_tables(a), _tables(b), strict=True):
        pd.testing.assert_frame_equal(x, y)
        assert pd.util.hash_pandas_object(x).equals(pd.util.hash_pandas_object(y))


def test_different_seed_gives_different_tables():
    a, b = synthetic.generate(seed=3, **SMALL), synthetic.generate(seed=4, **SMALL)
    assert not a.catalog["title"].equals(b.catalog["title"])
    assert not a.events.equals(b.events)


def test_default_scale_counts(default_store):
    summary = default_store.summary()
    print(json.dumps(summary, indent=1))
    assert summary["products"] == 2000 and summary["users"] == 3000
    assert len(summary["categories"]) == 12
    assert 95_000 <= summary["events"] <= 105_000
    assert 1_500 <= summary["reviews"] <= 8_000
    assert 5_000 <= summary["truth_pairs"] <= 12_000
    mix = summary["event_mix"]
    assert mix["view"] > mix["cart"] > 0 and mix["view"] > mix["purchase"] > 0
    assert 0.03 <= summary["purchase_rate"] <= 0.25
    assert default_store.events["user_id"].nunique() == 3000  # every user has a session
    json.dumps(summary)  # plain types only


def test_tables_pass_validation(small_store):
    pd.testing.assert_frame_equal(
        catalog_table.from_frame(small_store.catalog), small_store.catalog
    )
    pd.testing.assert_frame_equal(events_table.from_frame(small_store.events), small_store.events)
    pd.testing.assert_frame_equal(
        reviews_table.from_frame(small_store.reviews), small_store.reviews
    )
    events_table.check_products(small_store.events, small_store.catalog)
    assert set(small_store.reviews["product_id"]) <= set(small_store.catalog["product_id"])


def test_ids_titles_and_timestamps(small_store):
    assert all(re.fullmatch(r"P\d{5}", p) for p in small_store.catalog["product_id"])
    assert all(re.fullmatch(r"U\d{5}", u) for u in small_store.events["user_id"])
    assert all(
        re.fullmatch(r".+ .+ .+ .+, (Size .+|One Size)", t) for t in small_store.catalog["title"]
    )
    stamps = small_store.events["timestamp"]
    assert str(stamps.dt.tz) == "UTC" and stamps.is_monotonic_increasing
    assert pd.Timedelta(days=150) < stamps.max() - stamps.min() < pd.Timedelta(days=190)
    assert small_store.truth["timestamp"].min() > stamps.max()
    assert small_store.reviews["rating"].between(1, 5).all()


def test_purchases_follow_a_view_and_usually_a_cart(default_store):
    ev = default_store.events
    first = ev.groupby(["user_id", "product_id", "event"])["timestamp"].min().unstack("event")
    buys = ev[ev["event"] == "purchase"].join(first, on=["user_id", "product_id"])
    assert (buys["view"] < buys["timestamp"]).all()
    assert (buys["cart"] < buys["timestamp"]).mean() > 0.7


def test_purchases_are_drawn_from_buy_probability(default_store):
    ev = default_store.events
    viewed = ev[ev["event"] == "view"].drop_duplicates(["user_id", "product_id"])
    bought = ev[ev["event"] == "purchase"].set_index(["user_id", "product_id"]).index
    label = viewed.set_index(["user_id", "product_id"]).index.isin(bought)
    prob = default_store.buy_probability(viewed["user_id"], viewed["product_id"])
    assert synthetic._roc_auc(label, prob) > 0.75
    high = prob > np.quantile(prob, 0.8)
    assert label[high].mean() > 3 * label[~high].mean()


def test_history_raises_the_probability(default_store):
    hidden = default_store.hidden
    assert hidden.bought_category.any() and hidden.bought_brand.any()
    u, p = np.arange(3000) % 3000, np.arange(3000) % 2000
    none = np.zeros_like(hidden.bought_category), np.zeros_like(hidden.bought_brand)
    assert (hidden.logits(u, p) >= hidden.logits(u, p, *none)).all()


def test_bayes_optimal_auc_is_high_but_not_perfect(default_store):
    auc = default_store.bayes_optimal_auc()
    print(f"Bayes-optimal AUC at default scale: {auc:.4f}")
    assert 0.6 < auc < 0.99
    truth = default_store.truth
    np.testing.assert_allclose(
        default_store.buy_probability(truth["user_id"], truth["product_id"]), truth["probability"]
    )


def test_roc_auc_matches_pair_counting():
    rng = np.random.default_rng(0)
    labels, scores = rng.random(300) < 0.3, rng.integers(0, 10, 300).astype(float)
    pos, neg = scores[labels], scores[~labels]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert synthetic._roc_auc(labels, scores) == pytest.approx(pairs)
    with pytest.raises(ValueError, match="both labels"):
        synthetic._roc_auc(np.zeros(3), np.arange(3.0))


def test_buy_probability_rejects_bad_ids(small_store):
    with pytest.raises(ValueError, match="Unknown id in `user_ids`"):
        small_store.buy_probability(["U99999"], ["P00000"])
    with pytest.raises(ValueError, match="same length"):
        small_store.buy_probability(["U00000", "U00001"], ["P00000"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"products": 5}, "products"),
        ({"users": 0}, "users"),
        ({"seed": -1}, "seed"),
        ({"events_target": 10}, "events_target"),
        ({"products": 60.5}, "int"),
        ({"products": 100_000, "users": 1000}, "products \\* users"),
    ],
)
def test_generate_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthetic.generate(**{**SMALL, **kwargs})


def test_write_and_load_round_trip(small_store, tmp_path):
    out = synthetic.write_store(small_store, tmp_path / "store")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]  # no temporary leftovers
    loaded = synthetic.load_store_dir(out)
    for x, y in zip(_tables(small_store), _tables(loaded), strict=True):
        pd.testing.assert_frame_equal(x, y)
    ids = small_store.truth["user_id"], small_store.truth["product_id"]
    np.testing.assert_array_equal(small_store.buy_probability(*ids), loaded.buy_probability(*ids))
    assert json.loads((out / "summary.json").read_text())["products"] == 60
    with pytest.raises(FileExistsError, match="overwrite"):
        synthetic.write_store(small_store, out)
    synthetic.write_store(small_store, out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]
    (out / "truth.parquet").unlink()
    with pytest.raises(DataError, match="truth.parquet"):
        synthetic.load_store_dir(out)


def test_review_words_follow_the_rating(default_store):
    reviews = default_store.reviews
    text = reviews["text"].str.lower()
    positive = text.str.contains(r"\b(?:love|perfect|excellent|superb|fantastic|adore)\b")
    negative = text.str.contains(r"\b(?:terrible|awful|worst|disappointed|cheap|waste)\b")
    rating = reviews["rating"]
    assert rating[positive].mean() > rating[~positive].mean() + 1.0
    assert rating[negative].mean() < rating[~negative].mean() - 1.0
    assert 0.0 < (rating[positive] < 4).mean() < 0.3  # noisy, not a lookup table
    assert reviews["recommended"][rating >= 4].mean() > reviews["recommended"][rating <= 2].mean()
    assert rating.nunique() == 5
