"""The P1 ceiling analysis counts features at the cutoff from earlier purchases only."""

from __future__ import annotations

import pandas as pd
import pytest

from bench import buy_retail_ceiling as ceiling


def _events(rows):
    frame = pd.DataFrame(rows, columns=["user_id", "product_id", "timestamp"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="mixed")
    return frame.assign(event="purchase")


def test_pair_features_count_days_buyers_and_recency():
    cutoff = pd.Timestamp("2011-11-09", tz="UTC")
    events = _events(
        [
            ("u", "a", "2011-10-01"),
            ("u", "a", "2011-10-01 10:00"),
            ("u", "a", "2011-11-04"),
            ("v", "a", "2011-06-01"),
            ("v", "b", "2011-11-08"),
        ]
    )
    pairs = pd.DataFrame({"user_id": ["u", "u", "v"], "product_id": ["a", "b", "b"]})
    f = ceiling.pair_features(events, pairs, cutoff)
    assert list(f.columns) == [c for group in ceiling.GROUPS.values() for c in group]
    assert f["up_lines"].tolist() == [3.0, 0.0, 1.0]
    assert f["up_days"].tolist() == [2.0, 0.0, 1.0]
    assert f["up_days_since"].tolist() == pytest.approx([5.0, ceiling._NEVER, 1.0])
    assert f["buyers_all"].tolist() == [2.0, 1.0, 1.0]
    assert f["buyers_30d"].tolist() == [1.0, 1.0, 1.0]  # v bought a in June
    assert f["buyers_7d"].tolist() == [1.0, 1.0, 1.0]
    assert f["product_age_days"].iloc[0] == pytest.approx(161.0)
    assert f["user_lines_30d"].tolist() == [1.0, 1.0, 1.0]
    # u bought only a, which v bought too, so b co-occurs with u's history; a has no partner
    assert f["item_knn"].iloc[1] > 0.0
