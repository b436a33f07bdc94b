"""Fixtures for the fault tests: a model store with tiny exports, a tiny synthetic store."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def fault_models(tmp_path_factory, tiny_store):
    """Version directories of `ranker` and `classifier` (tiny `tf.Module` exports)."""
    from tests.recsys import batch_models

    root = tmp_path_factory.mktemp("fault-models") / "store"
    return {
        "ranker": batch_models.publish_ranker(root, tiny_store.catalog),
        "classifier": batch_models.publish_classifier(root),
    }
