import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from recsys.backbones import tiny_bert
from recsys.data import buy_pairs
from recsys.heads import BuyProbabilityHead, MaskedMeanPooling
from recsys.tasks import buy_probability as bp


def test_head_config_round_trip():
    head = BuyProbabilityHead(hidden_dim=4, dropout=0.2, name="buy")
    assert BuyProbabilityHead.from_config(head.get_config()).get_config() == head.get_config()


def test_pooling_ignores_masked_positions():
    sequence = np.array([[[1.0, 0.0], [0.0, 100.0]]])
    pooled = np.asarray(MaskedMeanPooling(normalize=False)(sequence, np.array([[1, 0]])))
    np.testing.assert_allclose(pooled, [[1.0, 0.0]])


def test_history_features_count_recency_and_category():
    context = tf.constant(
        ["query: mug ; Cap | hats | Acme ; bought: Mug | kitchen | Acme ; bought: Cap | hats", ""]
    )
    product = tf.constant(["Cap | hats | Acme | price low", "Cap | hats"])
    stats = bp.ProductStats(
        ["Cap | hats | Acme | price low"], [4.0], [30.0], [-0.5], [2.0], [0.25], [90.0]
    )
    features = dict(
        zip(bp.FEATURE_NAMES, bp.history_features(context, product, stats).numpy().T, strict=False)
    )
    expected = {
        "log_times_in_history": [np.log1p(2), 0],
        "log_times_bought": [np.log1p(1), 0],
        "recency": [1.0, 0],
        "category_share": [2 / 3, 0],
        "bought_category": [1, 0],
        "brand_share": [2 / 3, 0],
        "bought_brand": [1, 0],
        "log_history_length": [np.log1p(3), 0],
        "log_product_purchases": [np.log1p(4), 0],
        "product_conversion": [5 / 40, 1 / 10],
        "log_relative_price": [-0.5, 0],
        "log_recent_buyers": [np.log1p(2), 0],
        "sale_recency": [0.25, 0],
        "log_product_age": [np.log1p(90), 0],
        "mean_title_overlap": [2 / 3, 0],
        "max_title_overlap": [1, 0],
    }
    for name, values in expected.items():
        np.testing.assert_allclose(features[name], values, rtol=1e-5, err_msg=name)


def test_preprocessor_outputs_int32_masks_and_fixed_lengths():
    _, text_pre = tiny_bert(sequence_length=16)
    pre = bp.BuyProbabilityPreprocessor(text_pre.tokenizer, 16, 8)
    x = pre({"context": ["red cap | hats"], "product": ["blue mug | kitchen"]})
    assert x["context"]["padding_mask"].dtype == tf.int32
    assert x["product"]["token_ids"].shape == (1, 8)
    assert x["context"]["token_ids"].shape == (1, 16)
    assert pre.get_config()["product_length"] == 8


def test_a_few_steps_reduce_the_loss():
    import keras

    from recsys.objectives import compile_kwargs

    keras.utils.set_random_seed(0)
    backbone, text_pre = tiny_bert(sequence_length=16, hidden_dim=8)
    pre = bp.BuyProbabilityPreprocessor(text_pre.tokenizer, 16, 8)
    model = bp.build_model(backbone, hidden_dim=8)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), **compile_kwargs(bp.objectives()))
    contexts = ["red cap | hats", "blue mug | kitchen"] * 16
    products = ["red cap | hats", "green hat | hats"] * 16
    labels = np.array([1.0, 0.0] * 16, dtype="float32")[:, None]
    x = pre({"context": contexts, "product": products})
    history = model.fit(x, {"buy_logit": labels}, epochs=8, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0] * 0.9


def _events(rows):
    frame = pd.DataFrame(rows, columns=["user_id", "product_id", "event", "timestamp"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return frame


def test_pairs_context_uses_only_events_before_the_candidate_session():
    catalog = pd.DataFrame(
        {
            "product_id": list("abcd"),
            "title": ["A", "B", "C", "D"],
            "category": ["x", "y", "x", "y"],
        }
    )
    events = _events(
        [
            ("u", "a", "purchase", "2024-01-01 10:00"),
            ("u", "b", "view", "2024-01-02 10:00"),
            ("u", "b", "purchase", "2024-01-02 10:10"),
            ("u", "c", "purchase", "2024-01-05 10:00"),
            ("u", "d", "view", "2024-02-01 10:00"),
        ]
    )
    pairs = buy_pairs.build_pairs(events, catalog, negatives=2, history_length=10, seed=0)
    for row in pairs.itertuples():
        earlier = events[events["timestamp"] < row.timestamp - buy_pairs.SESSION_GAP]
        by_id = catalog.set_index("product_id")
        allowed = {
            ("bought: " if event == "purchase" else "")
            + f"{by_id.loc[p, 'title']} | {by_id.loc[p, 'category']}"
            for p, event in zip(earlier["product_id"], earlier["event"], strict=True)
        }
        items = [s for s in row.context.split(" ; ") if s]
        assert set(items) <= allowed, (row, items)
    purchase_b = pairs[(pairs["product_id"] == "b") & (pairs["label"] == 1)].iloc[0]
    assert (
        purchase_b["context"] == "bought: A | x"
    )  # the same-session view of b is not in the context
    assert set(pairs.loc[pairs["label"] == 1, "product_id"]) == {"a", "b", "c"}
    assert not ((pairs["label"] == 0) & pairs["product_id"].isin(["a", "b", "c"])).any()


def test_pairs_on_the_synthetic_store_never_leak_future_events(tiny_store):
    pairs = buy_pairs.build_pairs(
        tiny_store.events, tiny_store.catalog, negatives=2, history_length=5, seed=1
    )
    index = buy_pairs.HistoryIndex(
        tiny_store.events, buy_pairs.catalog_texts(tiny_store.catalog)[0]
    )
    sample = pairs.sample(50, random_state=0)
    for row in sample.itertuples():
        cutoff = row.timestamp - buy_pairs.SESSION_GAP
        history = index.history(row.user_id, cutoff, 5)
        user_events = tiny_store.events[
            (tiny_store.events["user_id"] == row.user_id)
            & (tiny_store.events["timestamp"] < cutoff)
        ]
        assert history == list(user_events["product_id"].iloc[::-1][:5])
    assert pairs["timestamp"].is_monotonic_increasing
    assert 0.2 < pairs["label"].mean() < 0.5


def test_pairs_refuse_events_without_purchases():
    catalog = pd.DataFrame({"product_id": ["a"], "title": ["A"], "category": ["x"]})
    events = _events([("u", "a", "view", "2024-01-01")])
    with pytest.raises(ValueError, match="no purchases"):
        buy_pairs.build_pairs(events, catalog)


def test_features_are_finite_when_no_row_has_history():
    features = bp.history_features(
        tf.constant(["", "query: red mug"]), tf.constant(["Cap | hats", "Mug | kitchen"])
    ).numpy()
    assert np.isfinite(features).all()
    np.testing.assert_allclose(features[:, :8], 0.0)


def test_product_counts_see_only_events_before_the_cutoff_and_recent_distinct_buyers():
    catalog = pd.DataFrame(
        {"product_id": list("abc"), "title": ["A", "B", "A"], "category": ["x", "y", "x"]}
    )
    events = _events(
        [
            ("u", "a", "purchase", "2024-01-01"),  # outside the 30-day window
            ("v", "a", "purchase", "2024-02-20"),
            ("v", "a", "purchase", "2024-02-25"),  # the same buyer again
            ("w", "c", "purchase", "2024-02-28"),  # c has a's text: one entry
            ("w", "b", "view", "2024-02-28"),
            ("z", "b", "purchase", "2024-03-05"),  # after the cutoff
        ]
    )
    texts, bought, seen, _, recent, sold, age, repeat, week, two_months = buy_pairs.product_counts(
        events, catalog, before=pd.Timestamp("2024-03-01", tz="UTC")
    )
    by_text = dict(
        zip(texts, zip(bought, seen, recent, sold, age, repeat, strict=True), strict=True)
    )
    # A last sold on 2024-02-28 (2 days before: a leap year), first on 2024-01-01 (60 days);
    # of a's buyers v came back on another day (0.5; c's only buyer did not, and a text takes
    # the larger share); B was only viewed.
    assert by_text == {
        "A | x": (4.0, 0.0, 2.0, 7 / 9, 60.0, 0.5),
        "B | y": (0.0, 1.0, 0.0, 0.0, 2.0, 0.0),
    }
    # distinct buyers of A's products in the 7 days to 03-01 (from 02-23): v (a), w (c); in the
    # 60 days (from 01-01, 00:00 included): u too
    assert dict(zip(texts, week, strict=True)) == {"A | x": 2.0, "B | y": 0.0}
    assert dict(zip(texts, two_months, strict=True)) == {"A | x": 3.0, "B | y": 0.0}
    _, bought, _, _, recent, sold, *_ = buy_pairs.product_counts(events, catalog)  # to 03-05
    assert dict(zip(texts, recent, strict=True)) == {"A | x": 2.0, "B | y": 1.0}
    assert dict(zip(texts, sold, strict=True)) == {"A | x": 7 / 13, "B | y": 1.0}


def test_an_offset_head_starts_from_the_taste_logit_and_learns_a_correction():
    index = bp.FEATURE_NAMES.index("taste_logit")
    head = BuyProbabilityHead(hidden_dim=4, interaction="cosine", offset_feature=index)
    assert BuyProbabilityHead.from_config(head.get_config()).offset_feature == index
    rng = np.random.default_rng(1)
    user, product = rng.normal(size=(2, 8, 6)).astype("float32")
    features = rng.normal(size=(8, bp.NUM_FEATURES)).astype("float32")
    np.testing.assert_allclose(np.asarray(head(user, product, features))[:, 0], features[:, index])
    head._logit.kernel.assign(np.ones((2, 1), "float32"))  # a trained correction moves it
    assert not np.allclose(np.asarray(head(user, product, features))[:, 0], features[:, index])


def test_history_contexts_mark_purchases_and_carts():
    events = pd.DataFrame(
        {
            "user_id": ["u"] * 3,
            "product_id": ["a", "b", "a"],
            "event": ["view", "cart", "purchase"],
            "timestamp": pd.to_datetime(
                ["2024-01-01 00:00", "2024-01-01 00:01", "2024-01-01 00:02"], utc=True
            ),
        }
    )
    catalog = pd.DataFrame(
        {"product_id": ["a", "b"], "title": ["Mug", "Cap"], "category": ["k", "h"]}
    )
    items, _ = buy_pairs.catalog_texts(catalog)
    index = buy_pairs.HistoryIndex(events, items)
    context = index.context("u", pd.Timestamp("2024-02-01", tz="UTC"), 10)
    assert context == "bought: Mug | k ; cart: Cap | h ; Mug | k"
    plain, bought, carted = bp._parse_contexts(tf.constant([context]))
    assert plain.to_list() == [[b"Mug | k", b"Cap | h", b"Mug | k"]]
    assert bought.to_list() == [[True, False, False]] and carted.to_list() == [[False, True, False]]
    # the history features read a carted item as the same product as a viewed one
    features = bp.history_features(tf.constant([context]), tf.constant(["Cap | h"]))
    assert float(features[0, bp.FEATURE_NAMES.index("log_times_in_history")]) == pytest.approx(
        np.log(2.0)
    )


def test_cosine_head_sees_the_embeddings_only_through_their_similarity():
    head = BuyProbabilityHead(hidden_dim=4, interaction="cosine", normalize_features=True)
    assert BuyProbabilityHead.from_config(head.get_config()).get_config() == head.get_config()
    rng = np.random.default_rng(0)
    user, product = rng.normal(size=(2, 3, 6)).astype("float32")
    features = rng.normal(size=(3, bp.NUM_FEATURES)).astype("float32")
    logits = np.asarray(head(user, product, features))
    turn = rng.permutation(6)  # the same permutation of both: the dot products are unchanged
    permuted = np.asarray(head(user[:, turn], product[:, turn], features))
    np.testing.assert_allclose(permuted, logits, rtol=1e-6)  # up to the summation order
    other = np.asarray(head(user, product[::-1], features))
    assert not np.allclose(other, logits)
    # the features are batch-normalised: the statistics move while training, not at inference
    norm = head._norm
    before = np.asarray(norm.moving_mean).copy()
    head(user, product, features + 5.0, training=True)
    assert not np.allclose(np.asarray(norm.moving_mean), before)
    with pytest.raises(ValueError, match="interaction"):
        BuyProbabilityHead(interaction="concat")


def test_features_of_a_batch_equal_those_of_each_pair_alone():
    from recsys.tasks.item_affinity import ItemAffinity

    # contexts shared by several candidates (parsed once per batch), titles of different word
    # counts on both sides (padding), a query, purchase marks, brands and an empty history
    shared = "query: red ; bought: Red wool hat | hats | Acme ; Big blue mug | kitchen ; Cap | hats"
    contexts = [shared, "", shared, "Mug | kitchen ; bought: Mug | kitchen", shared, ""]
    products = [
        "Red hat | hats | Acme | price low",
        "Cap | hats | price low",
        "Big blue mug | kitchen | price mid",
        "Red hat | hats | Acme | price low",
        "Cap | hats | price low",
        "Mug | kitchen | price mid",
    ]
    texts = sorted(set(products))
    stats = bp.ProductStats(texts, [1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0])
    items = ["Big blue mug | kitchen", "Cap | hats", "Mug | kitchen", "Red hat | hats | Acme"]
    weights = np.random.default_rng(0).normal(size=(4, 4)).astype("float32")
    affinity = ItemAffinity(items, texts, weights)
    batch = bp.history_features(tf.constant(contexts), tf.constant(products), stats, affinity)
    batch = batch.numpy()
    alone = [
        bp.history_features(tf.constant([c]), tf.constant([p]), stats, affinity)[0]
        for c, p in zip(contexts, products, strict=True)
    ]
    np.testing.assert_allclose(batch, np.stack(alone), rtol=1e-6)
    overlap = bp.FEATURE_NAMES.index("max_title_overlap")
    mean_overlap = bp.FEATURE_NAMES.index("mean_title_overlap")
    # "Red hat" against "Red wool hat" (2 of 3 words), "Big blue mug" and "Cap" (none)
    assert batch[0, overlap] == pytest.approx(2 / 3)
    assert batch[0, mean_overlap] == pytest.approx(2 / 9)
    assert batch[4, overlap] == pytest.approx(1.0)  # "Cap" is in the history
