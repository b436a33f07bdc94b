"""Ranking inference speed: users per second for full-ranking top-10 from the SavedModel.

    python bench/ranking_inference.py --model saved_models/ranker_ml1m [--batch 256] [--k 10]
        [--data ../shared/data/movielens-1m/ml-1m-sasrec.txt.gz] [--passes 3]

Each MovieLens-1M user's test history (every item but the last, oldest first, right-padded
with "") goes through the exported `recommend_simple` signature, `--batch` users per call: the
model reads the most recent `sequence_length` items, scores the whole catalog, excludes every
history item and returns the top `k`. Users are taken in file order (no sorting by length).
One warm-up pass, then `--passes` timed passes; prints JSON with users/s (best and median
pass) and the thread settings. Only TensorFlow is imported (no Keras, no recsys).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import pathlib
import time

DEFAULT_DATA = (
    pathlib.Path(__file__).resolve().parents[2] / "shared/data/movielens-1m/ml-1m-sasrec.txt.gz"
)


def histories(path):
    """user -> items (oldest first) of a SASRec file, without each user's last item."""
    opener = gzip.open if str(path).endswith(".gz") else open
    users = {}
    with opener(path, "rt") as f:
        for line in f:
            user, item = line.split()
            users.setdefault(user, []).append(item)
    return [items[:-1] for items in users.values() if len(items) > 1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="saved_models/<name>[/<version>]")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args(argv)
    import numpy as np
    import tensorflow as tf

    path = pathlib.Path(args.model)
    if not (path / "saved_model.pb").is_file():  # saved_models/<name>: the newest version
        path = max((p for p in path.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    module = tf.saved_model.load(str(path))
    recommend = module.signatures["recommend_simple"]
    users = histories(args.data)
    batches = []
    for start in range(0, len(users), args.batch):
        rows = users[start : start + args.batch]
        width = max(len(r) for r in rows)
        batches.append(tf.constant([r + [""] * (width - len(r)) for r in rows]))
    k = tf.constant(args.k, tf.int32)

    def one_pass():
        started = time.perf_counter()
        for history in batches:
            recommend(history=history, k=k)["product_ids"].numpy()
        return len(users) / (time.perf_counter() - started)

    one_pass()  # warm-up
    rates = [one_pass() for _ in range(args.passes)]
    print(
        json.dumps(
            {
                "model": str(path),
                "users": len(users),
                "batch": args.batch,
                "k": args.k,
                "users_per_second_best": round(max(rates), 1),
                "users_per_second_median": round(float(np.median(rates)), 1),
                "passes": [round(r, 1) for r in rates],
                "history": "each user's items but the last (full history; the model reads "
                "the most recent sequence_length)",
                "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
                "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
                "cpus": os.cpu_count(),
                "load": os.getloadavg(),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
