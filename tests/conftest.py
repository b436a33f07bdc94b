"""Shared fixtures: tiny backbones, a tiny synthetic store and tiny training configs."""

from __future__ import annotations

import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]

# The slowest test files first: `make test` hands whole files to two processes
# (`--dist loadfile`) in collection order, and a long file handed out last would leave one
# process working alone at the end.
SLOW_FIRST = (
    "tests/training/test_distribute.py",
    "tests/training/",
    "tests/reliability/",
    "tests/recsys/test_demo.py",
)


def pytest_collection_modifyitems(items):
    prefixes = [f"{REPO.as_posix()}/{slow}" for slow in SLOW_FIRST]

    def rank(item):
        path = item.path.as_posix()
        return next((i for i, p in enumerate(prefixes) if path.startswith(p)), len(prefixes))

    items.sort(key=rank)  # stable: the order within a file and among the rest is kept


TINY_BERT = {
    "family": "bert",
    "num_layers": 1,
    "num_heads": 1,
    "hidden_dim": 8,
    "intermediate_dim": 16,
}


@pytest.fixture(scope="session")
def tiny_store():
    from recsys.data import synthetic

    return synthetic.generate(products=60, users=40, seed=0, events_target=1400)


@pytest.fixture(scope="session")
def tiny_store_dir(tmp_path_factory, tiny_store):
    from recsys.data import synthetic

    path = tmp_path_factory.mktemp("store") / "synth"
    synthetic.write_store(tiny_store, path)
    return path


def tiny_buy_config(path, store_dir=None, model=None, **train):
    """Writes a tiny buy-probability YAML config; returns its path."""
    import yaml

    config = {
        "task": "buy_probability",
        "name": "buy",
        "data": {
            "source": "synthetic",
            "products": 60,
            "users": 40,
            "negatives": 2,
            "history_length": 4,
        },
        "backbone": TINY_BERT,
        "model": {
            "sequence_length": 32,
            "product_sequence_length": 16,
            "hidden_dim": 8,
            **(model or {}),
        },
        "train": {"epochs": 2, "batch_size": 16, "learning_rate": 1e-3, **train},
    }
    if store_dir is not None:
        config["data"]["path"] = str(store_dir)
    path = pathlib.Path(path)
    path.write_text(yaml.safe_dump(config))
    return path
