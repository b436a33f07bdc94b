"""The registry of task adapters used by `training.train`.

A task adapter is a module (`training/buy.py` is the reference) with these functions; the
generic loop in `training/train.py` calls them in this order:

- `prepare(config) -> data`: load and split the data. `data` has `train_size` (int),
  `fingerprint` (str) and `describe()` (str). An adapter whose `prepare` takes a `run_dir`
  keyword gets the run directory (to cache derived data there, e.g. text embeddings).
- `build(config, data) -> (model, preprocessor)`: called inside `strategy.scope()`.
- `training_model(model, config) -> keras.Model`: the model `fit` trains (usually `model`).
- `objectives(config, data) -> [Objective]`: losses and metrics per model output.
- `monitor(config) -> (metric name, "max" | "min")`: early stopping on validation.
- `dataset(data, split, preprocessor, batch_size, config, training=False, labels=True,
  model=None) -> tf.data.Dataset` for split "train", "validation" or "test".
- `evaluate(model, preprocessor, data, config, run_dir) -> dict` with "headline" (a few
  metrics for the model card and `recsys models`) and "test"; plots go into `run_dir`.
- `export(model, preprocessor, data, config, export_dir) -> dict`: writes the SavedModel (and
  any assets) and returns its signatures as {name: {"inputs": {...}, "outputs": {...}}}.
- `card_extras(data, config) -> dict`: task-specific fields for `model_card.json`.
- optional `callbacks(config, data, model, run_dir) -> [keras.callbacks.Callback]`: run before
  the generic callbacks in each epoch, so metrics they write into the epoch logs (e.g. ranking's
  `val_ndcg_at_10`) can be what `monitor` names.
"""

from __future__ import annotations

import importlib

_ADAPTERS = {
    "buy_probability": "training.buy",
    "text_classification": "training.classify",
    "ranking": "training.rank",
}


def adapter(task):
    """The module that prepares, builds, evaluates and exports models of `task`."""
    if task not in _ADAPTERS:
        raise NotImplementedError(f"Unknown task {task!r}; available: {sorted(_ADAPTERS)}.")
    return importlib.import_module(_ADAPTERS[task])
