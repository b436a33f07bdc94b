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
import os

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


def resolve_precision(name, strategy_name, gpus=None):
    """Turns precision `auto` into a policy: bfloat16 on TPU, float16 on capable GPUs, else float32."""
    if name != "auto":
        return name
    if strategy_name == "tpu":
        return "mixed_bfloat16"
    if gpus is None:
        import tensorflow as tf

        gpus = len(tf.config.list_physical_devices("GPU"))
    return "mixed_float16" if gpus > 0 else "float32"


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


def set_precision(policy):
    import keras

    keras.mixed_precision.set_global_policy(policy)
    logger.info("Precision policy %s", policy)
