"""Trains and evaluates task models on one device and on two mirrored replicas; prints JSON.

Run by `tests/training/test_distribute.py` in a subprocess, because the CPU must be split into
two logical devices before TensorFlow initialises:

    python -m tests.training.replica_parity

For each model, the single-device and the mirrored copy start from the same weights, train
one epoch with plain SGD on the same global batches (so a gradient summed over replicas without
scaling would show up as a different update; Adam would hide it), then evaluate on the same
data. The output holds, per model, both runs' training logs, evaluation results, optimizer
steps and the largest weight difference after training.
"""

from __future__ import annotations

import json

import numpy as np
import tensorflow as tf

REPLICAS = 2
PER_REPLICA_BATCH = 4
GLOBAL_BATCH = PER_REPLICA_BATCH * REPLICAS
EXAMPLES = 4 * GLOBAL_BATCH
WORDS = ["red", "blue", "shoe", "hat", "mug", "tea", "wool", "sun"]


def _split_cpu():
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(REPLICAS)]
    )
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def _classifier_case(multi_label):
    """Text classifier (multi-class: accuracy; multi-label: binary accuracy and ROC-AUC)."""
    from recsys import backbones
    from recsys.tasks import text_classification

    rng = np.random.default_rng(1)
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(1, 6))) for _ in range(EXAMPLES)]
    if multi_label:
        y = np.array([[w in t for w in ("red", "shoe", "tea")] for t in texts], "float32")
    else:
        y = np.array([sum(w in t for w in ("red", "shoe")) for t in texts], "int32")
    spec = {
        "family": "bert",
        "num_layers": 1,
        "num_heads": 1,
        "hidden_dim": 8,
        "intermediate_dim": 16,
        "dropout": 0.0,
    }

    def build():
        backbone, text_preprocessor = backbones.resolve(spec, sequence_length=16)
        model = text_classification.build_model(backbone, 3, multi_label, hidden_dim=8, dropout=0)
        preprocessor = text_classification.TextClassificationPreprocessor(
            text_preprocessor.tokenizer, 16
        )
        return model, preprocessor

    def data(preprocessor):
        x = {k: v.numpy() for k, v in preprocessor(texts).items()}
        return tf.data.Dataset.from_tensor_slices((x, {text_classification.OUTPUT: y}))

    objectives = text_classification.objectives(3, multi_label)
    return build, data, objectives


def _ranker_case():
    """Next-item ranker: its own `compute_loss`; rows of different lengths, so the replicas
    score different numbers of positions."""
    from recsys.tasks import ranking

    rng = np.random.default_rng(2)
    rows = [rng.integers(2, 20, size=rng.integers(2, 9)).tolist() for _ in range(EXAMPLES)]
    inputs = ranking.pad_right([r[:-1] for r in rows], 8)
    targets = ranking.pad_right([r[1:] for r in rows], 8)

    def build():
        model = ranking.build_model(
            num_items=20, sequence_length=8, num_layers=1, num_heads=1, hidden_dim=8, dropout=0.0
        )
        return model, None

    def data(preprocessor):
        return tf.data.Dataset.from_tensor_slices(
            ({ranking.INPUT: inputs}, {ranking.OUTPUT: targets})
        )

    return build, data, ranking.objectives()


def _run(case, strategy, weights=None):
    import keras

    from recsys.objectives import compile_kwargs

    build, data, objectives = case
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model, preprocessor = build()
        if weights is not None:
            model.set_weights(weights)
        initial = model.get_weights()
        model.compile(optimizer=keras.optimizers.SGD(0.5), **compile_kwargs(objectives))
    ds = data(preprocessor).batch(GLOBAL_BATCH)
    history = model.fit(ds, epochs=1, verbose=0)
    evaluation = model.evaluate(ds, verbose=0, return_dict=True)
    return {
        "initial": initial,
        "weights": model.get_weights(),
        "train": {k: float(v[-1]) for k, v in history.history.items()},
        "evaluate": {k: float(v) for k, v in evaluation.items()},
        "steps": int(model.optimizer.iterations.numpy()),
    }


def _max_difference(weights, others):
    return max(float(np.abs(a - b).max()) for a, b in zip(weights, others, strict=True))


def main():
    devices = _split_cpu()
    single = tf.distribute.get_strategy()
    mirrored = tf.distribute.MirroredStrategy(devices)
    cases = {
        "classifier": _classifier_case(multi_label=False),
        "multi_label_classifier": _classifier_case(multi_label=True),
        "ranker": _ranker_case(),
    }
    out = {"replicas": mirrored.num_replicas_in_sync}
    for name, case in cases.items():
        one = _run(case, single)
        two = _run(case, mirrored, weights=one["initial"])
        moved = _max_difference(one["initial"], one["weights"])
        diff = _max_difference(one["weights"], two["weights"])
        out[name] = {
            "single": {k: one[k] for k in ("train", "evaluate", "steps")},
            "mirrored": {k: two[k] for k in ("train", "evaluate", "steps")},
            "weights_moved": moved,
            "weight_difference": diff,
        }
    print("PARITY " + json.dumps(out))


if __name__ == "__main__":
    main()
