"""Next-item ranking on MovieLens-1M, protocol P2 (docs/PROTOCOLS.md): train, or evaluate.

    python bench/ranking_ml1m.py [--config training/configs/ranker_ml1m.yaml] [--set k=v ...]
        [--run-dir runs/ranker_ml1m] [--store saved_models]
    python bench/ranking_ml1m.py --model saved_models/ranker_ml1m [--config ...]

Without `--model`, trains with the config through the training pipeline (`recsys train`),
which evaluates P2 on the best validation epoch (full ranking with the history excluded, and
100 sampled negatives), and prints those figures with the training time. With `--model`,
evaluates an exported SavedModel on the config's data instead: each user's history goes
through `recommend` with `k` = the catalog size, so the ranks come from the exported graph
itself (the history excluded by the model, as in serving). Prints JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import pathlib
import platform
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

DEFAULT_CONFIG = "training/configs/ranker_ml1m.yaml"


def _machine():
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "load": os.getloadavg()}


def train(config_path, overrides, run_dir, store_dir, export):
    from training import train as train_lib

    run_dir = pathlib.Path(run_dir)
    with contextlib.redirect_stdout(sys.stderr):  # progress to stderr, the JSON alone to stdout
        code = train_lib.run(
            config_path, overrides, store=store_dir, run_dir=run_dir, export=export
        )
    if code:
        raise SystemExit(code)
    report = json.loads((run_dir / "report.json").read_text())
    training = report["training"]
    return {
        "validation": report["validation"],
        "test": report["test"],
        "training_minutes": round(training["fit_seconds"] / 60, 1),
        "epochs_run": training["epochs_run"],
        "best_val_ndcg_at_10": max(training["history"].get("val_ndcg_at_10", [float("nan")])),
    }


def evaluate_saved_model(model_dir, config, batch_size=256):
    """P2 figures of an exported ranker, computed from `recommend` over the whole catalog."""
    import tensorflow as tf

    from recsys import metrics, store
    from recsys.schema import NUM_RESERVED_IDS
    from training import rank

    path = store.resolve_path(model_dir)
    module = tf.saved_model.load(str(path))
    data = rank.prepare(config)
    items = np.array([""] * NUM_RESERVED_IDS + data.vocabulary.to_list(), dtype=object)
    num_items = len(data.vocabulary.items)
    out = {}
    for name, split in (("validation", data.validation), ("test", data.test)):
        rng = np.random.default_rng(config.train.seed)
        full, sampled = [], []
        for start in range(0, len(split), batch_size):
            users = range(start, min(start + batch_size, len(split)))
            width = max(1, max(len(split.histories[u]) for u in users))
            history = [
                list(items[split.histories[u]]) + [""] * (width - len(split.histories[u]))
                for u in users
            ]
            result = module.signatures["recommend_simple"](
                history=tf.constant(history), k=tf.constant(num_items)
            )
            ranked = result["product_ids"].numpy()
            for row, u in enumerate(users):
                position = {p.decode(): i for i, p in enumerate(ranked[row]) if p}
                target = items[split.targets[u]]
                full.append(position[target] if target in position else len(position))
                negatives = metrics.sampled_negatives(
                    rng, len(items), split.interacted[u], n=rank.SAMPLED_NEGATIVES
                )
                # Negatives are never in the history, so all of them are ranked here.
                scores = [-position[items[n]] for n in negatives]
                sampled.append(metrics.sampled_rank(-full[-1], scores))
        out[name] = {
            "full": metrics.ranking_report(np.array(full)),
            "sampled_100": metrics.ranking_report(np.array(sampled)),
        }
    return {"model": str(path), **out}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--run-dir", default="runs/ranker_ml1m")
    parser.add_argument("--store", default="saved_models")
    parser.add_argument("--no-export", action="store_true")
    parser.add_argument("--model", help="evaluate this exported model instead of training")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from recsys.config import load_config

    config = load_config(args.config, args.overrides)
    started = time.perf_counter()
    if args.model:
        result = evaluate_saved_model(args.model, config)
    else:
        result = train(args.config, args.overrides, args.run_dir, args.store, not args.no_export)
    result = {
        "protocol": "P2",
        "config": args.config,
        "overrides": args.overrides,
        "data": config.data.path or "ml-1m-sasrec.txt.gz (default)",
        "date": datetime.date.today().isoformat(),
        "wall_minutes": round((time.perf_counter() - started) / 60, 1),
        "machine": _machine(),
        **result,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
