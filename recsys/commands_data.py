"""`recsys data synth` and `recsys data check`."""

from __future__ import annotations

import json
import pathlib
import time

from recsys.config import ConfigError
from recsys.data import catalog as catalog_table
from recsys.data import events as events_table
from recsys.data import reviews as reviews_table


def synth(out, products, users, seed) -> int:
    """Writes the synthetic store into `out` and prints its summary."""
    from recsys.data import synthetic

    if pathlib.Path(out).exists():  # checked before generating; write_store would refuse too
        raise ConfigError(
            f"--out {out} already exists; choose a new folder (synth never overwrites)"
        )
    start = time.perf_counter()
    try:
        store = synthetic.generate(products=products, users=users, seed=seed)
    except ValueError as e:
        raise ConfigError(f"recsys data synth: {e}") from None
    synthetic.write_store(store, out)
    summary = store.summary()
    print(f"Wrote the synthetic store to {out} in {time.perf_counter() - start:.1f} s")
    print(json.dumps(summary, indent=2, default=str))
    return 0


def check(path, kind, catalog_path=None, drop_unknown=False) -> int:
    """Validates one table file and prints its counts; a `DataError` propagates (exit 2)."""
    if kind == "catalog":
        table = catalog_table.load_catalog(path)
        report = {"rows": len(table), "categories": int(table["category"].nunique())}
    elif kind == "events":
        catalog = catalog_table.load_catalog(catalog_path) if catalog_path else None
        table = events_table.load_events(
            path, catalog=catalog, on_unknown="drop" if drop_unknown else "error"
        )
        report = {
            "rows": len(table),
            "users": int(table["user_id"].nunique()),
            "products": int(table["product_id"].nunique()),
            "events": {k: int(v) for k, v in table["event"].value_counts().items()},
            "from": str(table["timestamp"].min()),
            "to": str(table["timestamp"].max()),
        }
        if catalog is not None:
            report["dropped_unknown_products"] = table.attrs.get("dropped_unknown_products", 0)
    else:
        table = reviews_table.load_reviews(path)
        report = {
            "rows": len(table),
            "products": int(table["product_id"].nunique()),
            "mean_rating": round(float(table["rating"].mean()), 3),
        }
    print(f"{path}: valid {kind} table")
    print(json.dumps(report, indent=2))
    return 0
