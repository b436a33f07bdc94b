"""`DistributionSafeModel` fixes two Keras 3.15 problems under tf.distribute; these tests show
the problem with a plain `keras.Model` and the fix, and fail if Keras changes under the fix."""

import inspect
import os
import subprocess
import sys

from tests.conftest import REPO

_SCRIPT = """
import sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from recsys.distributed_model import DistributionSafeModel

strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
cls = DistributionSafeModel if sys.argv[1] == "safe" else keras.Model
with strategy.scope():
    ids = keras.Input((4,), name="ids")
    mask = keras.Input((4,), dtype="bool", name="mask")
    x = keras.layers.Embedding(10, 3)(ids) * keras.ops.cast(mask, "float32")[..., None]
    model = cls({"ids": ids, "mask": mask}, keras.layers.Dense(1)(keras.ops.mean(x, axis=1)))
    model.compile("adam", "mse")
data = tf.data.Dataset.from_tensor_slices((
    {"ids": np.arange(32).reshape(8, 4) % 10, "mask": np.ones((8, 4), bool)},
    np.ones((8, 1), "float32"))).batch(4)
model.fit(data, epochs=1, verbose=0)
print("FIT_OK")
"""


def _run(kind):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-c", _SCRIPT, kind],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=REPO,
    )


def test_boolean_inputs_under_mirrored_fail_with_keras_model_and_work_with_the_fix():
    plain, safe = _run("plain"), _run("safe")
    assert "FIT_OK" not in plain.stdout, "Keras fixed the first-batch averaging: drop the fix"
    assert "bool" in plain.stderr
    assert "FIT_OK" in safe.stdout, safe.stderr[-3000:]


def test_keras_still_has_the_code_the_fixes_work_around():
    from keras.src.backend.tensorflow import trainer

    build = inspect.getsource(trainer.TensorFlowTrainer._maybe_symbolic_build)
    assert 'reduce(\n                        "MEAN"' in build or '"MEAN"' in build, (
        "Keras no longer averages the first batch; re-check DistributionSafeModel"
    )
    reduce = inspect.getsource(trainer.reduce_per_replica)
    assert 'strategy.reduce("MEAN", v, axis=0)' in reduce, (
        "Keras changed its multi-worker log reduction; re-check DistributionSafeModel"
    )


def test_functional_and_subclassed_task_models_all_get_the_fixes_in_one_process():
    """Building a functional `DistributionSafeModel` makes Keras swap `Functional` into its
    class's bases; the subclassed ranker uses the mixin, so it still builds afterwards."""
    import keras

    from recsys.backbones import tiny_bert
    from recsys.distributed_model import DistributionSafeMixin, DistributionSafeModel
    from recsys.tasks import buy_probability, ranking, text_classification

    x = keras.Input((2,))
    DistributionSafeModel(inputs=x, outputs=keras.layers.Dense(1)(x))
    backbone, _ = tiny_bert(sequence_length=8)
    models = [
        buy_probability.build_model(backbone, hidden_dim=4),
        text_classification.build_model(backbone, num_classes=2),
        ranking.build_model(
            num_items=12, sequence_length=4, num_layers=1, num_heads=1, hidden_dim=4
        ),
    ]
    for model in models:
        assert isinstance(model, DistributionSafeMixin), type(model)
