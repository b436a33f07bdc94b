"""Protocol P1 (Online Retail, next-month purchases): our model beside the four baselines.

    python bench/buy_retail.py --train                    # train buy_retail.yaml, then compare
    python bench/buy_retail.py --run-dir runs/buy_retail  # compare a finished run

The baselines score the same pairs in the same run: popularity, repeat purchase (ties by
popularity), item co-occurrence kNN over the user's train products, and repeat then kNN.
Prints JSON with global ROC-AUC and mean per-user ROC-AUC for each.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def item_knn(train_events, pairs):
    """Item co-occurrence kNN: the summed cosine similarity (over users who bought both) of each
    pair's product with the products its user bought in `train_events`."""
    products = np.array(sorted(train_events["product_id"].unique()))
    index = {p: i for i, p in enumerate(products)}
    users = np.array(sorted(train_events["user_id"].unique()))
    user_index = {u: i for i, u in enumerate(users)}
    matrix = np.zeros((len(users), len(products)), dtype=np.float32)
    bought = train_events.drop_duplicates(["user_id", "product_id"])
    matrix[
        bought["user_id"].map(user_index).to_numpy(), bought["product_id"].map(index).to_numpy()
    ] = 1.0
    norms = np.sqrt(matrix.sum(axis=0)) + 1e-9
    similarity = (matrix.T @ matrix) / norms[:, None] / norms[None, :]
    np.fill_diagonal(similarity, 0.0)
    knn = np.zeros(len(pairs))
    for user, rows in pairs.groupby("user_id").indices.items():
        history = matrix[user_index[user]]
        cols = pairs["product_id"].iloc[rows].map(index).to_numpy()
        knn[rows] = similarity[cols] @ history
    return knn


def baselines(train_events, pairs):
    """Global and per-user AUC of the four baselines on `pairs`."""
    popularity = train_events["product_id"].value_counts()
    pop = pairs["product_id"].map(popularity).fillna(0).to_numpy(float)
    counts = train_events.groupby(["user_id", "product_id"]).size()
    repeat = np.array(
        [counts.get((u, p), 0) for u, p in zip(pairs["user_id"], pairs["product_id"], strict=True)],
        float,
    )
    knn = item_knn(train_events, pairs)
    scores = {
        "popularity": pop,
        "repeat_purchase": repeat + pop / (pop.max() + 1.0),
        "item_knn": knn,
        "repeat_then_knn": repeat * 1e6 + knn,
    }
    labels, user_ids = pairs["label"].to_numpy(), pairs["user_id"].to_numpy()
    return {name: aucs(labels, user_ids, score) for name, score in scores.items()}


def aucs(labels, user_ids, scores):
    """Global ROC-AUC and mean per-user AUC, rounded to 4 places."""
    from recsys import metrics

    return {
        "roc_auc": round(metrics.roc_auc(labels, scores), 4),
        "per_user_auc": round(metrics.per_user_auc(user_ids, labels, scores)[0], 4),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default="runs/buy_retail")
    parser.add_argument("--train", action="store_true", help="train buy_retail.yaml first")
    parser.add_argument("--store", default="saved_models")
    args = parser.parse_args(argv)
    if args.train:
        from training import train

        train.run(ROOT / "training/configs/buy_retail.yaml", store=args.store, run_dir=args.run_dir)
    from recsys.data import formats, protocols

    catalog, events = formats.load_online_retail(
        formats.shared_data_dir() / "online-retail" / "online_retail.csv.gz"
    )
    train_events, _, pairs = protocols.retail_next_month(events, catalog, seed=0)
    result = {
        "protocol": "P1",
        "pairs": len(pairs),
        "positives": int(pairs["label"].sum()),
        "users": int(pairs["user_id"].nunique()),
        "baselines": baselines(train_events, pairs),
    }
    report = pathlib.Path(args.run_dir) / "report.json"
    if report.is_file():
        test = json.loads(report.read_text())["test"]
        result["model"] = {
            k: round(float(v), 4) for k, v in test.items() if isinstance(v, (int, float))
        }
        result["model"]["run_dir"] = str(args.run_dir)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
