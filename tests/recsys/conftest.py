"""Fixtures for the batch-scoring tests: a store with tiny models, and input files."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def batch_store(tmp_path_factory, tiny_store):
    """Version directories of `buy` (the real tiny export), `ranker` and `classifier`."""
    from tests.recsys import batch_models

    root = tmp_path_factory.mktemp("batch") / "store"
    return {
        "buy": batch_models.publish_buy(root, tiny_store),
        "ranker": batch_models.publish_ranker(root, tiny_store.catalog),
        "classifier": batch_models.publish_classifier(root),
    }


@pytest.fixture(scope="session")
def batch_inputs(tmp_path_factory, tiny_store, tiny_store_dir):
    """Input files: users (Parquet with events, CSV with space-separated ids), events, catalog,
    a 10-product catalog (CSV) and candidate pairs in no particular order (CSV)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.recsys import batch_models

    folder = tmp_path_factory.mktemp("batch_inputs")
    users = batch_models.users_table(tiny_store.events, max_history=6)
    cold = pd.DataFrame({"user_id": ["U-COLD"], "history": [[]], "history_events": [[]]})
    users = pd.concat([users, cold], ignore_index=True)
    pq.write_table(pa.Table.from_pandas(users, preserve_index=False), folder / "users.parquet")
    full = batch_models.users_table(tiny_store.events, max_history=1000)
    full.assign(history=full["history"].map(" ".join)).drop(columns="history_events").to_csv(
        folder / "users.csv", index=False
    )
    catalog = tiny_store.catalog
    catalog.head(10).to_csv(folder / "catalog10.csv", index=False)
    ids = catalog["product_id"].tolist()
    some_users = users["user_id"].tolist()
    pairs = pd.DataFrame(
        {
            "user_id": [some_users[(7 * i) % len(some_users)] for i in range(30)],
            "product_id": [ids[(11 * i) % len(ids)] for i in range(30)],
        }
    )
    pairs.to_csv(folder / "candidates.csv", index=False)
    return {
        "users": folder / "users.parquet",
        "users_csv": folder / "users.csv",
        "events": tiny_store_dir / "events.parquet",
        "catalog": tiny_store_dir / "catalog.parquet",
        "catalog10": folder / "catalog10.csv",
        "candidates": folder / "candidates.csv",
        "folder": folder,
    }
