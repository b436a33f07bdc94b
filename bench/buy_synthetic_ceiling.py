"""Protocol P5 analysis: how close can any model that sees only the events get to Bayes-optimal?

    python bench/buy_synthetic_ceiling.py                 # buy_demo.yaml's store (seed 0)
    python bench/buy_synthetic_ceiling.py --seed 1 --users 3000 --products 2000
    python bench/buy_synthetic_ceiling.py --events-per-user 100   # denser histories

The synthetic store's Bayes-optimal AUC uses each user's hidden tastes. A model only sees the
events, from which those tastes are estimated (a median user has about 20 views and one
purchase). This script counts, from the events alone, what a user did in the candidate's
category, brand and material (views, carts, purchases, smoothed shares), the product's
popularity and conversion, its relative price and the user's price level, and fits gradient
boosting **on the truth pairs' own labels** (5-fold cross-validation grouped by user). That is an
optimistic ceiling for event features: it is tuned on the very distribution it is scored on.
It then adds each hidden term of the buy logit in turn (what perfect knowledge of that one taste
would be worth). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _user_counts(users, values, mask, shape):
    """`[users, shape[1]]` counts of the `mask` events per user and attribute value."""
    out = np.zeros(shape)
    np.add.at(out, (users[mask], values[mask]), 1.0)
    return out


def event_features(store):
    """Features of each truth pair from the events only, as a dict of arrays."""
    h, events, truth = store.hidden, store.events, store.truth
    product_pos = {p: i for i, p in enumerate(h.product_ids)}
    user_pos = {u: i for i, u in enumerate(h.user_ids)}
    eu = events["user_id"].map(user_pos).to_numpy()
    ep = events["product_id"].map(product_pos).to_numpy()
    kind = events["event"].to_numpy()
    n_users, n_products = len(user_pos), len(product_pos)
    u = truth["user_id"].map(user_pos).to_numpy()
    p = truth["product_id"].map(product_pos).to_numpy()
    features = {}
    attributes = {"category": h.category, "brand": h.brand, "material": h.material}
    views = _user_counts(eu, h.category[ep], kind == "view", (n_users, h.category.max() + 1))
    n_views = views.sum(axis=1)
    for name, attr in attributes.items():
        width = attr.max() + 1
        for event in ("view", "cart", "purchase"):
            counts = _user_counts(eu, attr[ep], kind == event, (n_users, width))
            features[f"{event}s_in_{name}"] = np.log1p(counts[u, attr[p]])
            if event == "view":
                share = (counts[u, attr[p]] + 0.5) / (n_views[u] + 0.5 * width)
                features[f"view_share_{name}"] = share
    product_views = np.bincount(ep[kind == "view"], minlength=n_products)
    product_buys = np.bincount(ep[kind == "purchase"], minlength=n_products)
    features["product_conversion"] = (product_buys[p] + 1.0) / (product_views[p] + 10.0)
    features["log_product_purchases"] = np.log1p(product_buys[p])
    features["log_user_views"] = np.log1p(n_views[u])
    features["relative_price"] = h.rel_price[p]  # log(price / category median), from the catalog
    for event in ("view", "purchase"):
        mask = kind == event
        total = np.zeros(n_users)
        count = np.zeros(n_users)
        np.add.at(total, eu[mask], h.rel_price[ep[mask]])
        np.add.at(count, eu[mask], 1.0)
        features[f"user_{event}_price"] = total[u] / np.maximum(count[u], 1.0)
    return features, u, p


def hidden_terms(h, u, p):
    """The buy logit's hidden terms for the pairs (unknowable from the events)."""
    from recsys.data import synthetic_sim as sim

    return {
        "category_taste": sim.W_CATEGORY * h.category_taste[u, h.category[p]],
        "brand_taste": h.brand_taste[u, h.brand[p]],
        "material_taste": h.material_taste[u, h.material[p]],
        "quality": h.quality[p],
        "price_term": -sim.W_PRICE * h.price_sensitivity[u] * h.rel_price[p],
    }


def cross_validated_auc(columns, labels, groups, folds=5):
    """ROC-AUC of out-of-fold gradient-boosting scores (folds grouped by user)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold

    x = np.stack(list(columns.values()), axis=1)
    scores = np.zeros(len(labels))
    for fit_rows, score_rows in GroupKFold(folds).split(x, labels, groups):
        model = HistGradientBoostingClassifier(
            max_iter=200, learning_rate=0.05, max_leaf_nodes=15, random_state=0
        ).fit(x[fit_rows], labels[fit_rows])
        scores[score_rows] = model.predict_proba(x[score_rows])[:, 1]
    return float(roc_auc_score(labels, scores))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--products", type=int, default=2000)
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--events-per-user",
        type=float,
        default=None,
        help="simulate about this many events per user (default: the store's 33)",
    )
    args = parser.parse_args(argv)

    from recsys.data import synthetic

    target = None if args.events_per_user is None else round(args.events_per_user * args.users)
    store = synthetic.generate(
        products=args.products, users=args.users, seed=args.seed, events_target=target
    )
    features, u, p = event_features(store)
    labels = store.truth["label"].to_numpy()
    bayes = store.bayes_optimal_auc()
    ceiling = cross_validated_auc(features, labels, u)
    hidden = hidden_terms(store.hidden, u, p)
    with_hidden = {
        name: round(cross_validated_auc({**features, name: values}, labels, u), 4)
        for name, values in hidden.items()
    }
    every_hidden = {**features, **hidden}
    result = {
        "store": {
            "products": args.products,
            "users": args.users,
            "seed": args.seed,
            "events": len(store.events),
        },
        "truth_pairs": len(labels),
        "median_views_per_user": float(
            np.median(store.events[store.events["event"] == "view"].groupby("user_id").size())
        ),
        "bayes_optimal_auc": round(bayes, 4),
        "event_feature_ceiling_auc": round(ceiling, 4),
        "ceiling_ratio": round(ceiling / bayes, 4),
        "ceiling_with_one_hidden_term": with_hidden,
        "ceiling_with_every_hidden_term": round(cross_validated_auc(every_hidden, labels, u), 4),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
