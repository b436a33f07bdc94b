"""The real tf.distribute code paths on this CPU machine: mirrored over two logical CPUs,
two local multi-worker processes, strategy and precision resolution, the TPU resolver path."""

import json
import os
import socket
import subprocess
import sys
from unittest import mock

import pytest

from tests.conftest import REPO, tiny_buy_config
from training import distribute


def _env(**extra):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _train(config, store, run_dir, env, *overrides, timeout=600):
    command = [
        sys.executable,
        "-m",
        "recsys.cli",
        "train",
        str(config),
        "--store",
        str(store),
        "--run-dir",
        str(run_dir),
    ]
    for item in overrides:
        command += ["--set", item]
    return subprocess.Popen(
        command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_auto_strategy_and_precision_resolution():
    assert distribute.resolve_strategy_name("auto", env={"TPU_NAME": "t1"}, gpus=0) == "tpu"
    assert distribute.resolve_strategy_name("auto", env={}, gpus=4) == "mirrored"
    assert distribute.resolve_strategy_name("auto", env={}, gpus=1) == "default"
    one_worker = json.dumps({"cluster": {"worker": ["localhost:1"]}})
    assert (
        distribute.resolve_strategy_name("auto", env={"TF_CONFIG": one_worker}, gpus=0) == "default"
    )
    assert distribute.resolve_precision("auto", "mirrored", gpus=2) == "mixed_float16"
    assert distribute.resolve_precision("float32", "tpu", gpus=0) == "float32"
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.resolve_strategy_name("auto", env={"TF_CONFIG": "{not json"}, gpus=0)


def test_tpu_path_uses_the_cluster_resolver(monkeypatch):
    import tensorflow as tf

    monkeypatch.setenv("TPU_NAME", "my-tpu")
    resolver = mock.MagicMock(name="resolver")
    with (
        mock.patch.object(
            tf.distribute.cluster_resolver, "TPUClusterResolver", return_value=resolver
        ) as make_resolver,
        mock.patch.object(tf.config, "experimental_connect_to_cluster") as connect,
        mock.patch.object(tf.tpu.experimental, "initialize_tpu_system") as initialise,
        mock.patch.object(tf.distribute, "TPUStrategy") as tpu_strategy,
    ):
        tpu_strategy.return_value.num_replicas_in_sync = 8
        name, strategy = distribute.make_strategy("auto")
    assert name == "tpu" and strategy is tpu_strategy.return_value
    make_resolver.assert_called_once_with(tpu="my-tpu")
    connect.assert_called_once_with(resolver)
    initialise.assert_called_once_with(resolver)


def test_mirrored_over_two_cpu_replicas_trains_and_exports(tmp_path, tiny_store_dir):
    config = tiny_buy_config(tmp_path / "buy.yaml", store_dir=tiny_store_dir, epochs=3)
    single = _train(config, tmp_path / "store1", tmp_path / "run1", _env())
    mirrored = _train(
        config,
        tmp_path / "store2",
        tmp_path / "run2",
        _env(RECSYS_CPU_REPLICAS="2"),
        "train.strategy=mirrored",
    )
    for proc in (single, mirrored):
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
    report = json.loads((tmp_path / "run2" / "report.json").read_text())
    assert report["training"]["replicas"] == 2 and report["training"]["strategy"] == "mirrored"
    assert report["training"]["global_batch"] == 2 * 16
    losses = report["training"]["history"]["loss"]
    assert losses[-1] < losses[0]
    cards = [
        json.loads(p.read_text())
        for p in (
            tmp_path / "store1/buy/1/model_card.json",
            tmp_path / "store2/buy/1/model_card.json",
        )
    ]
    assert cards[0]["signatures"] == cards[1]["signatures"]


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_local_workers_train_together_and_the_chief_exports(tmp_path, tiny_store_dir):
    config = tiny_buy_config(tmp_path / "buy.yaml", store_dir=tiny_store_dir, epochs=2)
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for index in range(2):
        tf_config = json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        )
        procs.append(
            _train(
                config,
                tmp_path / f"store{index}",
                tmp_path / f"run{index}",
                _env(TF_CONFIG=tf_config),
                "train.strategy=auto",
            )
        )
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out[-3000:]
    report = json.loads((tmp_path / "run0" / "report.json").read_text())
    assert report["training"]["strategy"] == "multi_worker"
    assert report["training"]["replicas"] == 2
    assert (tmp_path / "store0" / "buy" / "1" / "saved_model.pb").is_file()
    assert not (tmp_path / "store1" / "buy").exists()  # only the chief publishes


def _epochs_logged(run_dir):
    log = run_dir / "training_log.csv"
    if not log.is_file():
        return []
    lines = log.read_text().strip().splitlines()[1:]
    return [int(line.split(",", 1)[0]) for line in lines if line and line[0].isdigit()]


def test_a_killed_run_resumes_from_its_backup_with_the_same_total_epochs(tmp_path, tiny_store_dir):
    import signal
    import time

    epochs = 6
    config = tiny_buy_config(
        tmp_path / "buy.yaml", store_dir=tiny_store_dir, epochs=epochs, early_stopping_patience=None
    )
    run_dir = tmp_path / "run"
    first = _train(config, tmp_path / "store", run_dir, _env())
    deadline = time.monotonic() + 300
    while len(_epochs_logged(run_dir)) < 2 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.poll() is None, "training finished before it could be killed"
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    killed_after = _epochs_logged(run_dir)
    assert 2 <= len(killed_after) < epochs
    second = _train(config, tmp_path / "store", run_dir, _env())
    out, _ = second.communicate(timeout=600)
    assert second.returncode == 0, out[-3000:]
    logged = _epochs_logged(run_dir)
    assert len(logged) == len(set(logged)), f"an epoch ran twice: {logged}"
    assert max(logged) == epochs - 1 and set(logged) >= set(range(len(killed_after)))
    report = json.loads((run_dir / "report.json").read_text())
    assert report["training"]["epochs_run"] == epochs - len(killed_after)
