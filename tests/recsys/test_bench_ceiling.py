"""The P5 ceiling analysis counts what each user did, from the events alone."""

from __future__ import annotations

import numpy as np
import pytest

from bench import buy_synthetic_ceiling as ceiling
from recsys.data import synthetic


@pytest.fixture(scope="module")
def store():
    return synthetic.generate(products=60, users=40, seed=3, events_target=3000)


def test_event_features_count_the_users_events_in_the_candidates_category(store):
    features, users, products = ceiling.event_features(store)
    h, events = store.hidden, store.events
    assert all(len(v) == len(store.truth) for v in features.values())
    assert all(np.isfinite(v).all() for v in features.values())
    category_of = dict(zip(h.product_ids, h.category, strict=True))
    for row in range(0, len(store.truth), 7):
        user, product = store.truth["user_id"].iloc[row], store.truth["product_id"].iloc[row]
        mine = events[(events["user_id"] == user) & (events["event"] == "view")]
        same = sum(category_of[p] == category_of[product] for p in mine["product_id"])
        assert features["views_in_category"][row] == pytest.approx(np.log1p(same))
        assert h.user_ids[users[row]] == user and h.product_ids[products[row]] == product


def test_a_hidden_term_is_worth_more_than_noise(store):
    features, users, products = ceiling.event_features(store)
    labels = store.truth["label"].to_numpy()
    truth_logit = {"logit": store.hidden.logits(users, products)}
    noise = {"noise": np.random.default_rng(0).normal(size=len(labels))}
    assert ceiling.cross_validated_auc(truth_logit, labels, users) > ceiling.cross_validated_auc(
        noise, labels, users
    )


def test_events_per_user_sets_the_density_of_the_analysed_store(capsys):
    import json

    counts = []
    for density in (20, 60):
        ceiling.main(["--products", "60", "--users", "40", "--events-per-user", str(density)])
        result = json.loads(capsys.readouterr().out)
        assert result["store"]["users"] == 40 and 0.5 <= result["ceiling_ratio"] <= 1.2
        counts.append(result["store"]["events"])
    assert counts[0] == pytest.approx(20 * 40, rel=0.2)
    assert counts[1] == pytest.approx(60 * 40, rel=0.2)
