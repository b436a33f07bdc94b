"""The P5 bound fits a model of the store's own form to what the events show."""

from __future__ import annotations

import numpy as np
import pytest

from bench import buy_synthetic_bound as bound
from recsys.data import synthetic


@pytest.fixture(scope="module")
def store():
    return synthetic.generate(products=60, users=40, seed=3, events_target=3000)


def test_sessions_group_each_view_with_its_cart_and_purchase(store):
    (view_users, _), units, (bought_category, bought_brand) = bound.observed(store)
    events = store.events
    assert units["k"].sum() == len(view_users) == (events["event"] == "view").sum()
    # every purchase follows a view of its product in the same session (the simulation's rule)
    assert units["buy"].sum() == (events["event"] == "purchase").sum()
    h = store.hidden
    # the bought-before flags over all events are the simulation's own final state
    np.testing.assert_array_equal(bought_category, h.bought_category)
    np.testing.assert_array_equal(bought_brand, h.bought_brand)


def test_with_the_hidden_parameters_it_scores_the_true_probabilities(store):
    _, _, bought_end = bound.observed(store)
    model = bound.StoreModel(store.hidden)
    h = store.hidden
    for name, values in (
        ("category", h.category_taste),
        ("brand", h.brand_taste),
        ("material", h.material_taste),
    ):
        model.tastes[name].assign(values.astype(np.float32))
    model.quality.assign(h.quality.astype(np.float32))
    model.log_price_sensitivity.assign(np.log(h.price_sensitivity).astype(np.float32))
    np.testing.assert_allclose(
        model.score(store, bought_end), store.truth["probability"].to_numpy(), atol=1e-5
    )


@pytest.mark.parametrize("learn_weights", [False, True])
def test_fitting_on_the_events_lowers_the_loss_and_ranks_the_truth_pairs(store, learn_weights):
    views, units, bought_end = bound.observed(store)
    model = bound.StoreModel(store.hidden, learn_weights=learn_weights)
    start = float(model.negative_log_posterior(*bound.as_tensors(views, units)))
    end = model.fit(views, units, steps=150)
    assert end < start
    scores = model.score(store, bought_end)
    auc = synthetic._roc_auc(store.truth["label"].to_numpy(), scores)
    assert auc > 0.6
    assert model.weights["bias"].trainable is learn_weights
    assert not model.weights["view_brand"].trainable


def test_review_ratings_are_likelier_under_the_hidden_parameters_than_neutral_ones(store):
    reviews = bound.review_ratings(store)
    assert int(reviews["u"].shape[0]) == len(store.reviews) > 0
    model = bound.StoreModel(store.hidden, reviews=reviews)
    neutral = float(np.sum(model.review_log_likelihood()))
    h = store.hidden
    model.tastes["brand"].assign(h.brand_taste.astype(np.float32))
    model.tastes["material"].assign(h.material_taste.astype(np.float32))
    model.quality.assign(h.quality.astype(np.float32))
    model.log_price_sensitivity.assign(np.log(h.price_sensitivity).astype(np.float32))
    hidden = model.review_log_likelihood().numpy()
    assert np.all(hidden <= 0.0)
    assert hidden.sum() > neutral


def test_reading_reviews_needs_the_simulations_weights(store):
    with pytest.raises(ValueError, match="simulation's weights"):
        bound.StoreModel(store.hidden, learn_weights=True, reviews=bound.review_ratings(store))
