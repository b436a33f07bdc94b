"""Benchmark protocols that define their own evaluation pairs (see `PROTOCOLS.md`).

`retail_next_month` is protocol P1: Online Retail, next-month purchases.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

RETAIL_CUTOFF = pd.Timestamp("2011-11-09", tz="UTC")


def retail_next_month(events, catalog, cutoff=RETAIL_CUTOFF, negatives=4, seed=0):
    """Protocol P1: train-period events and the labelled test pairs.

    Test users bought in both periods; positives are the distinct train-period products they
    bought in the test period; negatives are `negatives` per positive, drawn uniformly (seed)
    from the train-period products the user did not buy in the test period.

    Returns:
        `(train_events, train_catalog, pairs)`: events before `cutoff`, the catalog of products
        seen in that period, and pairs `user_id`, `product_id`, `label`, `timestamp` (= cutoff).

    Example:
    >>> events = pd.DataFrame({"user_id": ["u", "u", "u"], "product_id": ["a", "b", "a"],
    ...     "event": "purchase", "timestamp": pd.to_datetime(
    ...         ["2011-10-01", "2011-10-02", "2011-11-20"], utc=True)})
    >>> catalog = pd.DataFrame({"product_id": ["a", "b"], "title": ["A", "B"], "category": "x"})
    >>> _, _, pairs = retail_next_month(events, catalog, negatives=1)
    >>> pairs[["product_id", "label"]].values.tolist()
    [['a', 1], ['b', 0]]
    """
    rng = np.random.default_rng(seed)
    before = events[events["timestamp"] < cutoff]
    after = events[events["timestamp"] >= cutoff]
    products = np.array(sorted(before["product_id"].unique()))
    train_catalog = catalog[catalog["product_id"].isin(set(products))].reset_index(drop=True)
    users = sorted(set(before["user_id"]) & set(after["user_id"]))
    bought_after = {u: set(g) for u, g in after.groupby("user_id")["product_id"]}
    known = set(products)
    rows = []
    for user in users:
        positives = sorted(bought_after[user] & known)
        if not positives:
            continue
        excluded = bought_after[user]
        candidates = products[~np.isin(products, list(excluded))]
        drawn = rng.choice(candidates, size=negatives * len(positives), replace=True)
        rows += [(user, p, 1) for p in positives] + [(user, p, 0) for p in drawn]
    pairs = pd.DataFrame(rows, columns=["user_id", "product_id", "label"])
    pairs["timestamp"] = cutoff
    return before.reset_index(drop=True), train_catalog, pairs
