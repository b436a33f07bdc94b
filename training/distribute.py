"""Distribution strategy and precision policy, resolved in one place.

`auto` picks a TPU when one is configured (`TPU_NAME`), multi-worker when `TF_CONFIG` names
more than one worker, mirrored over all GPUs when there are several, one device otherwise.

Example:
>>> resolve_strategy_name("auto", env={}, gpus=0)
'default'
>>> resolve_strategy_name("auto", env={"TF_CONFIG": '{"cluster": {"worker": ["a:1", "b:2"]}}'}, gpus=0)
'multi_worker'
>>> resolve_precision("auto", "tpu", gpus=0), resolve_precision("auto", "default", gpus=0)
('mixed_bfloat16', 'float32')
"""

from __future__ import annotations

import json
import logging
import math
import os
import pathlib

logger = logging.getLogger(__name__)


def _workers(env):
    raw = env.get("TF_CONFIG")
    if not raw:
        return 0
    try:
        cluster = json.loads(raw).get("cluster", {})
    except (ValueError, AttributeError):
        raise ValueError(f"TF_CONFIG is not valid JSON with a 'cluster' mapping: {raw!r}") from None
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def resolve_strategy_name(name, env=None, gpus=None):
    """Turns `auto` into a concrete strategy name from the environment."""
    env = os.environ if env is None else env
    if name != "auto":
        return name
    if env.get("TPU_NAME"):
        return "tpu"
    if _workers(env) > 1:
        return "multi_worker"
    if gpus is None:
        import tensorflow as tf

        gpus = len(tf.config.list_logical_devices("GPU"))
    return "mirrored" if gpus > 1 else "default"


# float16 pays off from compute capability 7.0 (Volta tensor cores); older NVIDIA GPUs run
# mixed_float16 no faster than float32, and only add loss scaling.
MIN_FLOAT16_CAPABILITY = (7, 0)


def _gpu_capabilities():
    """Compute capability `(major, minor)` of each visible GPU; None where TF does not know it."""
    import tensorflow as tf

    return [
        tf.config.experimental.get_device_details(gpu).get("compute_capability")
        for gpu in tf.config.list_physical_devices("GPU")
    ]


def resolve_precision(name, strategy_name, gpus=None, capabilities=None):
    """Turns precision `auto` into a policy: bfloat16 on TPU, float16 on capable GPUs, else float32.

    Args:
        name: str. `train.precision`: auto, float32, mixed_float16 or mixed_bfloat16.
        strategy_name: str. The resolved strategy (`resolve_strategy_name`).
        gpus: int or None. Number of GPUs (None: ask TensorFlow).
        capabilities: list of `(major, minor)` or None, one per GPU (None: ask TensorFlow when
            `gpus` is None, else assume capable). A GPU of unknown capability counts as capable.

    >>> resolve_precision("auto", "mirrored", gpus=2, capabilities=[(8, 0), (8, 0)])
    'mixed_float16'
    >>> resolve_precision("auto", "default", gpus=1, capabilities=[(6, 1)])  # Pascal
    'float32'
    """
    if name != "auto":
        return name
    if strategy_name == "tpu":
        return "mixed_bfloat16"
    if gpus is None:
        capabilities = _gpu_capabilities() if capabilities is None else capabilities
        gpus = len(capabilities)
    if not gpus:
        return "float32"
    if capabilities and any(
        c is not None and tuple(c) < MIN_FLOAT16_CAPABILITY for c in capabilities
    ):
        logger.info("A GPU older than compute capability 7.0: precision auto -> float32")
        return "float32"
    return "mixed_float16"


def split_cpu(replicas):
    """Splits the CPU into `replicas` logical devices (before TensorFlow initialises).

    Set `RECSYS_CPU_REPLICAS=2` to run the mirrored code path on a CPU-only machine, as the
    tests do. Returns the logical CPU device names.
    """
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(replicas)]
        )
    except RuntimeError:
        logger.warning("TensorFlow was already initialised; cannot split the CPU any more")
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def make_strategy(name):
    """Builds the `tf.distribute.Strategy` for a (resolved or `auto`) strategy name."""
    import tensorflow as tf

    cpu_replicas = int(os.environ.get("RECSYS_CPU_REPLICAS", "0") or 0)
    cpu_devices = split_cpu(cpu_replicas) if cpu_replicas > 1 else []
    name = resolve_strategy_name(name)
    if name == "default":
        strategy = tf.distribute.get_strategy()
    elif name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        strategy = tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    elif name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] if gpus else (cpu_devices or None)
        strategy = tf.distribute.MirroredStrategy(devices=devices)
    elif name == "multi_worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=os.environ.get("TPU_NAME", "")
        )
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
    else:
        raise ValueError(f"Unknown strategy {name!r}")
    logger.info("Strategy %s with %d replica(s)", name, strategy.num_replicas_in_sync)
    return name, strategy


def worker(strategy):
    """`(task_type, task_id)` of this process in a multi-worker cluster, else None."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return None
    return resolver.task_type, int(resolver.task_id or 0)


def is_chief(strategy):
    """True for a single process, and for the chief (or worker 0) of a cluster: the one that
    publishes the model."""
    task = worker(strategy)
    return task is None or task[0] == "chief" or task == ("worker", 0)


def worker_run_dir(strategy, run_dir):
    """The run directory this process writes: `run_dir` for the chief (or a single process),
    `run_dir/<task_type>-<task_id>` for the other workers.

    Workers may share one run directory (a shared filesystem); each still writes its own
    training log, report and `BackupAndRestore` checkpoint, so no two processes write the same
    file. Every worker keeps its own backup because Keras 3's `BackupAndRestore` is not
    multi-worker aware (tf.keras's was).

    >>> import pathlib
    >>> worker_run_dir(None, pathlib.Path("runs/buy")).as_posix()
    'runs/buy'
    """
    if is_chief(strategy):
        return run_dir
    task_type, task_id = worker(strategy)
    return run_dir / f"{task_type}-{task_id}"


def backup_and_restore(strategy, backup_dir):
    """`keras.callbacks.BackupAndRestore` into `backup_dir` that, under multi-worker, also makes
    every worker resume at the same epoch.

    Each worker restores its own backup (see `worker_run_dir`). All of them save at the end of
    every epoch, after the epoch's last collective step, so after a failure they normally hold
    the same epoch; a worker killed while saving may be one epoch behind the others. Workers
    that resumed at different epochs would run different numbers of steps and hang in a
    collective, so they compare epochs first (all-reduces): when some are one epoch ahead,
    those go back to their previous checkpoint (kept by `double_checkpoint`); any other
    disagreement stops every worker with an error.
    """
    import keras
    import tensorflow as tf

    from recsys.distributed_model import is_multi_worker

    def spread(epoch):
        """(mean, variance) of `epoch` over the workers."""
        value = tf.constant([epoch, epoch * epoch])
        mean = strategy.reduce("MEAN", strategy.run(lambda: tf.identity(value)), axis=None)
        first, second = (float(v) for v in mean.numpy())
        return first, max(second - first * first, 0.0)

    class _BackupAndRestore(keras.callbacks.BackupAndRestore):
        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            if not is_multi_worker(strategy):
                return
            epoch = float(self.model._initial_epoch or 0)
            mean, variance = spread(epoch)
            if variance > 1e-6:
                behind = math.floor(mean)
                share = mean - behind  # epochs in {behind, behind + 1}: variance share(1-share)
                if abs(variance - share * (1 - share)) < 1e-6 and epoch == behind + 1:
                    epoch = self._step_back(behind)
                mean, variance = spread(epoch)
            if variance > 1e-6:
                raise RuntimeError(
                    f"The workers' BackupAndRestore checkpoints hold different epochs (this "
                    f"worker: {int(epoch)}, mean over workers: {mean:g}), so they cannot resume "
                    f"together. Delete the `backup` directories of all workers to start over. "
                    f"This worker's: {backup_dir}"
                )
            logger.info("All workers start at epoch %d", int(epoch))

        def _step_back(self, target):
            """Loads the previous checkpoint if it is at epoch `target`; returns the epoch."""
            path = pathlib.Path(self._prev_training_metadata_path)
            if not path.is_file() or json.loads(path.read_text())["epoch"] != target:
                return float(self.model._initial_epoch or 0)
            import shutil

            shutil.copyfile(self._prev_weights_path, self._weights_path)  # Keras wants .weights.h5
            shutil.copyfile(self._prev_training_metadata_path, self._training_metadata_path)
            self.model.load_weights(self._weights_path)
            self.model._initial_epoch = target
            logger.warning(
                "This worker's backup is one epoch ahead of another worker's; resuming all "
                "from epoch %d with this worker's previous checkpoint",
                target,
            )
            return float(target)

    return _BackupAndRestore(str(backup_dir), double_checkpoint=True)


def set_precision(policy):
    import keras

    keras.mixed_precision.set_global_policy(policy)
    logger.info("Precision policy %s", policy)
