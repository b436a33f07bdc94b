"""Next-period buy pairs: labels from the window after each cutoff, context from before it."""

from __future__ import annotations

import pandas as pd
import pytest

from recsys.data import buy_pairs

HORIZON = 28


@pytest.fixture(scope="module")
def pairs(tiny_store):
    return buy_pairs.build_horizon_pairs(
        tiny_store.events, tiny_store.catalog, HORIZON, negatives=2, history_length=6, seed=1
    )


def test_labels_are_purchases_in_the_window_after_the_cutoff(tiny_store, pairs):
    events = tiny_store.events
    cutoffs = buy_pairs.horizon_cutoffs(events, HORIZON)
    assert len(cutoffs) >= 4 and set(pairs["timestamp"]) <= set(cutoffs)
    step = pd.Timedelta(days=HORIZON)
    bought = events[events["event"] == "purchase"]
    for row in pairs.sample(120, random_state=0).itertuples():
        window = bought[
            (bought["user_id"] == row.user_id)
            & (bought["timestamp"] >= row.timestamp)
            & (bought["timestamp"] < row.timestamp + step)
        ]
        assert (row.product_id in set(window["product_id"])) == bool(row.label)
        seen_before = set(events.loc[events["timestamp"] < row.timestamp, "product_id"])
        assert row.product_id in seen_before
    assert 0.25 < pairs["label"].mean() < 0.4  # one positive per two negatives
    assert pairs["timestamp"].is_monotonic_increasing


def test_contexts_do_not_change_when_the_future_is_removed(tiny_store, pairs):
    items, _ = buy_pairs.catalog_texts(tiny_store.catalog)
    for cutoff, group in pairs.groupby("timestamp"):
        past = tiny_store.events[tiny_store.events["timestamp"] < cutoff]
        index = buy_pairs.HistoryIndex(past, items)
        for row in group.head(10).itertuples():
            assert row.context == index.context(row.user_id, pd.Timestamp.max.tz_localize("UTC"), 6)


def test_cutoff_split_keeps_each_cutoff_in_one_part(pairs):
    train, validation, test = buy_pairs.cutoff_split(pairs, 0.2, 0.2)
    assert len(train) + len(validation) + len(test) == len(pairs)
    assert train["timestamp"].max() < validation["timestamp"].min()
    assert validation["timestamp"].max() < test["timestamp"].min()
    assert test["timestamp"].nunique() == validation["timestamp"].nunique() == 1
    everything, none, nothing = buy_pairs.cutoff_split(pairs, 0.0, 0.0)
    assert (len(everything), len(none), len(nothing)) == (len(pairs), 0, 0)
    with pytest.raises(ValueError, match="Too few cutoffs"):
        buy_pairs.cutoff_split(pairs[pairs["timestamp"] == pairs["timestamp"].max()], 0.2, 0.2)


def test_a_horizon_longer_than_the_events_is_refused(tiny_store):
    with pytest.raises(ValueError, match="horizon_days"):
        buy_pairs.build_horizon_pairs(tiny_store.events, tiny_store.catalog, 400)
    with pytest.raises(ValueError, match="must be > 0"):
        buy_pairs.build_horizon_pairs(tiny_store.events, tiny_store.catalog, 0)
