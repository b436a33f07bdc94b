"""Text fusion and cold items: the ranker with and without title embeddings on the synthetic store.

    python bench/ranking_cold.py [--config training/configs/ranker_demo.yaml] [--cold 0.05]
        [--out runs/ranking_cold] [--set key=value ...]

The synthetic store (the config's size and seed) with a share `--cold` of its products made
cold: every event of those products is removed except where one is a user's last item, so they
appear only as test targets (never in training, never as validation targets). The config is then
trained twice through the pipeline on those events and the full catalog, with
`model.text_fusion` false and true, and the test figures (P2 full ranking and sampled-100) are
printed as JSON for all users and split by warm and cold targets.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def make_cold(events, catalog, share, seed):
    """Events without the cold products, except in each user's final run of events."""
    rng = np.random.default_rng(seed)
    ids = catalog["product_id"].astype(str).to_numpy()
    cold = set(rng.choice(ids, int(round(share * len(ids))), replace=False).tolist())
    ordered = events.sort_values(["user_id", "timestamp"], kind="stable")
    product = ordered["product_id"].astype(str)
    last = ordered.groupby("user_id")["product_id"].transform("last").astype(str)
    # the final run: the trailing events whose product is the user's last product
    changes = (product != last).astype(int)[::-1].groupby(ordered["user_id"][::-1]).cumsum()
    final_run = (changes[::-1] == 0).to_numpy()
    keep = ~product.isin(cold).to_numpy() | final_run
    return ordered[keep], cold


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="training/configs/ranker_demo.yaml")
    parser.add_argument("--cold", type=float, default=0.05)
    parser.add_argument("--out", default="runs/ranking_cold")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from recsys.config import load_config
    from recsys.data import synthetic
    from training import train

    config = load_config(args.config, args.overrides)
    store = synthetic.generate(
        products=config.data.products, users=config.data.users, seed=config.train.seed
    )
    events, cold = make_cold(store.events, store.catalog, args.cold, config.train.seed)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store.catalog.to_parquet(out / "catalog.parquet", index=False)
    events.to_parquet(out / "events.parquet", index=False)
    results = {}
    for fusion in (False, True):
        name = "text_fusion" if fusion else "ids_only"
        overrides = [
            *args.overrides,
            "data.source=events",
            f"data.path={out / 'events.parquet'}",
            f"data.catalog={out / 'catalog.parquet'}",
            f"model.text_fusion={str(fusion).lower()}",
        ]
        run_dir = out / name
        with contextlib.redirect_stdout(sys.stderr):  # the JSON alone goes to stdout
            code = train.run(args.config, overrides, run_dir=run_dir, export=False)
        if code:
            return code
        report = json.loads((run_dir / "report.json").read_text())
        test = report["test"]
        results[name] = {
            "all_targets": test["full"],
            "warm_targets": test.get("full_warm_targets"),
            "cold_targets": test.get("full_cold_targets"),
            "sampled_100": test["sampled_100"],
            "fit_minutes": round(report["training"]["fit_seconds"] / 60, 1),
            "epochs_run": report["training"]["epochs_run"],
        }
    print(
        json.dumps(
            {
                "config": args.config,
                "overrides": args.overrides,
                "cold_share": args.cold,
                "cold_products": len(cold),
                "events": len(events),
                "date": datetime.date.today().isoformat(),
                "load": os.getloadavg(),
                **results,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
