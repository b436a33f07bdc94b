"""The registry of task adapters used by `training.train`."""

from __future__ import annotations

import importlib

_ADAPTERS = {
    "buy_probability": "training.buy",
}


def adapter(task):
    """The module that prepares, builds, evaluates and exports models of `task`."""
    if task not in _ADAPTERS:
        raise NotImplementedError(
            f"Training for task {task!r} is not available yet; available: {sorted(_ADAPTERS)}."
        )
    return importlib.import_module(_ADAPTERS[task])
