"""Protocol P1 analysis: how far can features of the train period go on next-month purchases?

    python bench/buy_retail_ceiling.py

Counts, at the protocol's cutoff and from train-period purchases only, features of each test
pair: the user with the product (lines, distinct days, days since they last bought it), the user
(lines, distinct products, purchase days, days since their last and first purchase, lines in the
last 30 days), the product (distinct buyers in the last 7, 14, 30 and 60 days and overall, days
since it last sold, its age) and the item co-occurrence score of the kNN baseline. Then fits
gradient boosting **on the test pairs' own labels** (5-fold cross-validation grouped by user):
an optimistic ceiling for features of this kind, since it is tuned on the very distribution it
is scored on. Feature groups are dropped in turn to show what each is worth.

It also fits a valid model of the same kind: the protocol's pairs built one month earlier (the
cutoff moved back a month, labels from the month before the real cutoff, features counted at
that earlier cutoff), gradient boosting fitted on those, scored on the test pairs. No test label
is used, so this is a baseline any trained model can be held to. Prints JSON with global ROC-AUC
and mean per-user AUC.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np
import pandas as pd

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import buy_retail  # noqa: E402

GROUPS = {
    "user_product": ("up_lines", "up_days", "up_days_since"),
    "user": (
        "user_lines",
        "user_products",
        "user_days",
        "user_days_since_last",
        "user_days_since_first",
        "user_lines_30d",
    ),
    "product": (
        "buyers_7d",
        "buyers_14d",
        "buyers_30d",
        "buyers_60d",
        "buyers_all",
        "product_days_since_sale",
        "product_age_days",
    ),
    "co_occurrence": ("item_knn",),
}
_NEVER = 1000.0  # days, for "never happened"


def _days(delta):
    return delta.dt.total_seconds().to_numpy() / 86400.0


def pair_features(events, pairs, cutoff):
    """A frame of the `GROUPS` features for `pairs`, from `events` (all before `cutoff`)."""
    events = events.assign(day=events["timestamp"].dt.floor("D"))
    keys = ["user_id", "product_id"]
    up = events.groupby(keys).agg(
        up_lines=("day", "size"), up_days=("day", "nunique"), up_last=("timestamp", "max")
    )
    user = events.groupby("user_id").agg(
        user_lines=("day", "size"),
        user_products=("product_id", "nunique"),
        user_days=("day", "nunique"),
        user_last=("timestamp", "max"),
        user_first=("timestamp", "min"),
    )
    recent = events[events["timestamp"] >= cutoff - pd.Timedelta(days=30)]
    user["user_lines_30d"] = recent.groupby("user_id").size()
    product = events.groupby("product_id").agg(
        buyers_all=("user_id", "nunique"),
        product_last=("timestamp", "max"),
        product_first=("timestamp", "min"),
    )
    for days in (7, 14, 30, 60):
        window = events[events["timestamp"] >= cutoff - pd.Timedelta(days=days)]
        product[f"buyers_{days}d"] = window.groupby("product_id")["user_id"].nunique()
    frame = pairs.join(up, on=keys).join(user, on="user_id").join(product, on="product_id")
    frame["up_days_since"] = _days(cutoff - frame["up_last"])
    frame["user_days_since_last"] = _days(cutoff - frame["user_last"])
    frame["user_days_since_first"] = _days(cutoff - frame["user_first"])
    frame["product_days_since_sale"] = _days(cutoff - frame["product_last"])
    frame["product_age_days"] = _days(cutoff - frame["product_first"])
    # the kNN baseline's score per product the user bought (user_products is their count)
    frame["item_knn"] = buy_retail.item_knn(events, pairs) / frame["user_products"].clip(lower=1)
    columns = [c for group in GROUPS.values() for c in group]
    out = frame[columns].astype(float)
    never = ["up_days_since", "product_days_since_sale"]
    return out.fillna({c: _NEVER for c in never}).fillna(0.0)


def _boosting():
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        max_iter=300, learning_rate=0.05, max_leaf_nodes=31, random_state=0
    )


def earlier_month_scores(train_events, catalog, features, cutoff):
    """Scores of the test pairs by a model fitted on the pairs of the month before `cutoff`."""
    from recsys.data import protocols

    earlier = cutoff - pd.DateOffset(months=1)
    before, _, pairs = protocols.retail_next_month(train_events, catalog, cutoff=earlier, seed=1)
    fit_x = pair_features(before, pairs, earlier)[features.columns].to_numpy()
    model = _boosting().fit(fit_x, pairs["label"].to_numpy())
    return model.predict_proba(features.to_numpy())[:, 1], len(pairs)


def cross_validated_scores(x, labels, groups, folds=5):
    """Out-of-fold gradient-boosting scores, folds grouped by user."""
    from sklearn.model_selection import GroupKFold

    scores = np.zeros(len(labels))
    for fit_rows, score_rows in GroupKFold(folds).split(x, labels, groups):
        model = _boosting().fit(x[fit_rows], labels[fit_rows])
        scores[score_rows] = model.predict_proba(x[score_rows])[:, 1]
    return scores


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.parse_args(argv)
    from recsys.data import formats, protocols

    catalog, events = formats.load_online_retail(
        formats.shared_data_dir() / "online-retail" / "online_retail.csv.gz"
    )
    train_events, _, pairs = protocols.retail_next_month(events, catalog, seed=0)
    cutoff = protocols.RETAIL_CUTOFF
    features = pair_features(train_events, pairs, cutoff)
    labels, users = pairs["label"].to_numpy(), pairs["user_id"].to_numpy()
    groups = pd.factorize(users)[0]
    result = {
        "protocol": "P1",
        "pairs": len(pairs),
        "ceiling": buy_retail.aucs(
            labels, users, cross_validated_scores(features.to_numpy(), labels, groups)
        ),
        "without_group": {},
    }
    scores, fit_pairs = earlier_month_scores(train_events, catalog, features, cutoff)
    result["fitted_a_month_earlier"] = {
        "fit_pairs": fit_pairs,
        **buy_retail.aucs(labels, users, scores),
    }
    for name, columns in GROUPS.items():
        kept = features.drop(columns=list(columns)).to_numpy()
        scores = cross_validated_scores(kept, labels, groups)
        result["without_group"][name] = buy_retail.aucs(labels, users, scores)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
