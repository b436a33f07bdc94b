"""The real tf.distribute code paths on this CPU machine: mirrored over two logical CPUs (every
task, and metric parity with one device), two local multi-worker processes (and a worker killed
and restarted), strategy and precision resolution, mixed precision, the TPU resolver path."""

import json
import os
import pathlib
import socket
import subprocess
import sys
from unittest import mock

import pytest
import yaml

from tests.conftest import REPO, TINY_BERT, tiny_buy_config
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


def _signatures(export_dir):
    """{signature: {"inputs": {name: (dtype, shape)}, "outputs": {...}}} of a SavedModel."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the tokenizers' ops)

    def spec(value):
        shape = None if value.shape.rank is None else value.shape.as_list()
        return value.dtype.name, shape

    module = tf.saved_model.load(str(export_dir))
    return {
        name: {
            "inputs": {k: spec(v) for k, v in fn.structured_input_signature[1].items()},
            "outputs": {k: spec(v) for k, v in fn.structured_outputs.items()},
        }
        for name, fn in module.signatures.items()
    }


def _classify_config(path, model=None, **train):
    """A tiny 3-class text classifier config over a 48-row table next to `path`."""
    import pandas as pd
    import yaml

    words = {"shoes": "running shoe", "hats": "wool hat", "mugs": "coffee mug"}
    rows = [
        {"text": f"item {i} {words[label]}", "label": label}
        for i, label in enumerate(sorted(words) * 16)
    ]
    table = path.with_suffix(".csv")
    pd.DataFrame(rows).to_csv(table, index=False)
    config = {
        "task": "text_classification",
        "name": "cls",
        "data": {"source": "table", "path": str(table), "text_columns": ["text"], "label": "label"},
        "backbone": TINY_BERT,
        "model": {"sequence_length": 16, "hidden_dim": 8, **(model or {})},
        "train": {"epochs": 3, "batch_size": 8, "learning_rate": 1e-2, **train},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_auto_strategy_and_precision_resolution():
    assert distribute.resolve_strategy_name("auto", env={"TPU_NAME": "t1"}, gpus=0) == "tpu"
    assert distribute.resolve_strategy_name("auto", env={}, gpus=4) == "mirrored"
    assert distribute.resolve_strategy_name("auto", env={}, gpus=1) == "default"
    one_worker = json.dumps({"cluster": {"worker": ["localhost:1"]}})
    assert (
        distribute.resolve_strategy_name("auto", env={"TF_CONFIG": one_worker}, gpus=0) == "default"
    )
    assert distribute.resolve_precision("auto", "mirrored", gpus=2) == "mixed_float16"
    assert distribute.resolve_precision("auto", "default", gpus=1, capabilities=[(7, 0)]) == (
        "mixed_float16"
    )
    assert distribute.resolve_precision("auto", "default", gpus=1, capabilities=[(6, 0)]) == (
        "float32"
    )
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


@pytest.mark.parametrize(
    "task", ["buy", "ranking", "text_classification", "frozen_text_classification"]
)
def test_every_task_trains_mirrored_and_exports_like_one_device(task, tmp_path, tiny_store_dir):
    from tests.training.test_train_rank import tiny_rank_config

    if task == "buy":
        config = tiny_buy_config(tmp_path / "c.yaml", store_dir=tiny_store_dir, epochs=3)
        name = "buy"
    elif task == "ranking":
        config = tiny_rank_config(
            tmp_path / "c.yaml", data={"path": str(tiny_store_dir)}, epochs=3, batch_size=8
        )
        name = "ranker"
    else:
        model = {"freeze_backbone": True} if task.startswith("frozen") else None
        config, name = _classify_config(tmp_path / "c.yaml", model), "cls"
    overrides = ("train.early_stopping_patience=null",)
    single = _train(config, tmp_path / "store1", tmp_path / "run1", _env(), *overrides)
    mirrored = _train(
        config,
        tmp_path / "store2",
        tmp_path / "run2",
        _env(RECSYS_CPU_REPLICAS="2"),
        "train.strategy=mirrored",
        *overrides,
    )
    for proc in (single, mirrored):
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
    report = json.loads((tmp_path / "run2" / "report.json").read_text())["training"]
    assert report["strategy"] == "mirrored" and report["replicas"] == 2
    batch_size = yaml.safe_load(pathlib.Path(config).read_text())["train"]["batch_size"]
    assert report["global_batch"] == 2 * batch_size  # `train.batch_size` is per replica
    losses = report["history"]["loss"]
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    exports = [tmp_path / f"store{i}" / name / "1" for i in (1, 2)]
    cards = [json.loads((e / "model_card.json").read_text()) for e in exports]
    assert cards[0]["signatures"] == cards[1]["signatures"]
    assert _signatures(exports[0]) == _signatures(exports[1])


def test_two_replicas_compute_the_same_metrics_and_updates_as_one_device():
    """Same data, same initial weights, plain SGD: a two-replica mirrored run reports the same
    loss and metrics (aggregated across replicas, not averaged twice), takes the same number of
    optimizer steps and ends with the same weights as one device on the same global batches, so
    neither the batch nor the learning rate is silently scaled by the replica count."""
    proc = subprocess.run(
        [sys.executable, "-m", "tests.training.replica_parity"],
        env=_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("PARITY ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[-1].removeprefix("PARITY "))
    assert result["replicas"] == 2
    for name in ("classifier", "multi_label_classifier", "ranker"):
        single, mirrored = result[name]["single"], result[name]["mirrored"]
        assert single["steps"] == mirrored["steps"] == 4, name  # 32 examples / global batch 8
        for part in ("train", "evaluate"):
            assert single[part].keys() == mirrored[part].keys()
            for metric, value in single[part].items():
                assert mirrored[part][metric] == pytest.approx(value, rel=1e-5, abs=1e-6), (
                    f"{name} {part} {metric}: one device {value}, mirrored {mirrored[part][metric]}"
                )
        assert result[name]["weights_moved"] > 1e-2, name
        assert result[name]["weight_difference"] < 1e-5, name
    assert {"accuracy", "auc", "loss"} <= result["multi_label_classifier"]["single"]["train"].keys()


@pytest.mark.filterwarnings("ignore:Gradients do not exist")  # BERT's unused pooler
def test_heads_keep_float32_outputs_under_mixed_bfloat16():
    """Under `mixed_bfloat16` the backbones compute in bfloat16, the three task heads (and the
    classifier's head-only model) still return float32, and a training step stays finite."""
    import keras
    import numpy as np

    from recsys import backbones
    from recsys.objectives import compile_kwargs
    from recsys.tasks import buy_probability, ranking, text_classification

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        backbone, _ = backbones.resolve({**TINY_BERT, "dropout": 0.0}, sequence_length=8)
        text = {
            "token_ids": np.tile(np.arange(2, 10, dtype="int32"), (4, 1)),
            "padding_mask": np.ones((4, 8), "int32"),
            "segment_ids": np.zeros((4, 8), "int32"),
        }
        classifier = text_classification.build_model(backbone, 3, hidden_dim=8)
        buy = buy_probability.build_model(backbone, hidden_dim=8)
        ranker = ranking.build_model(20, 8, num_layers=1, num_heads=1, hidden_dim=8)
        features = np.zeros((4, buy_probability.NUM_FEATURES), "float32")
        ids = ranking.pad_right([[2, 3, 4], [5, 6], [7], [8, 9, 10, 11]], 8)
        cases = [
            (
                classifier,
                text,
                {"class_logits": np.array([0, 1, 2, 0], "int32")},
                text_classification.objectives(3),
            ),
            (
                buy,
                {"context": text, "product": text, "features": features},
                {"buy_logit": np.ones((4, 1), "float32")},
                buy_probability.objectives(),
            ),
            (
                ranker,
                {"item_ids": ids},
                {
                    "sequence_output": ranking.pad_right(
                        [[3, 4, 5], [6, 7], [8], [9, 10, 11, 12]], 8
                    )
                },
                ranking.objectives(),
            ),
        ]
        assert keras.backend.standardize_dtype(backbone.compute_dtype) == "bfloat16"
        assert ranker({"item_ids": ids})["sequence_output"].dtype.name == "bfloat16"
        assert ranker.scores(ranker.last_hidden(ids)).dtype.name == "float32"
        head = classifier.get_layer("classification_head")
        assert head(np.ones((2, 8), "float32")).dtype.name == "float32"
        for model, x, y, objectives in cases:
            output = next(iter(y))
            if output != "sequence_output":
                assert model(x)[output].dtype.name == "float32", model.name
            model.compile(optimizer="adam", **compile_kwargs(objectives))
            loss = model.train_on_batch(x, y, return_dict=True)["loss"]
            assert np.isfinite(loss), model.name
    finally:
        keras.mixed_precision.set_global_policy(previous)


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


def _start_workers(config, store, run_dir, *overrides):
    """Two `MultiWorkerMirroredStrategy` workers on loopback ports sharing `run_dir`."""
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = _env(TF_CONFIG=json.dumps(tf_config))
        procs.append(_train(config, store, run_dir, env, "train.strategy=multi_worker", *overrides))
    return procs


def test_a_killed_worker_and_its_peer_resume_from_their_backups(tmp_path, tiny_store_dir):
    import signal
    import time

    from tests.training.test_train_rank import tiny_rank_config

    epochs = 4
    config = tiny_rank_config(
        tmp_path / "rank.yaml",
        data={"path": str(tiny_store_dir)},
        epochs=epochs,
        steps_per_epoch=20,
        early_stopping_patience=None,
    )
    store, run_dir = tmp_path / "store", tmp_path / "run"
    chief, worker = _start_workers(config, store, run_dir)
    deadline = time.monotonic() + 300
    while (
        len(_epochs_logged(run_dir)) < 2
        and chief.poll() is None
        and worker.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert chief.poll() is None and worker.poll() is None, "a worker ended before the kill"
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=60)
    # MultiWorkerMirroredStrategy cannot go on without a worker: the survivor's next collective
    # fails and it exits with an error, to be restarted (by hand here, by the cluster manager in
    # production) together with the killed worker.
    out, _ = chief.communicate(timeout=120)
    assert chief.returncode != 0, out[-3000:]
    killed_after = _epochs_logged(run_dir)
    assert 2 <= len(killed_after) < epochs
    procs = _start_workers(config, store, run_dir)
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out[-3000:]
    # Killed before saving its epoch, the worker may be one epoch behind the chief; then the
    # chief goes back to its previous checkpoint and that one epoch runs again on both.
    redone = "one epoch ahead" in outputs[0]
    for directory in (run_dir, run_dir / "worker-1"):  # the chief's log, then the worker's
        logged = _epochs_logged(directory)
        assert sorted(set(logged)) == list(range(epochs)), f"{directory}: epochs {logged}"
        assert len(logged) - len(set(logged)) <= (1 if redone else 0), logged
    report = json.loads((run_dir / "report.json").read_text())
    assert report["training"]["strategy"] == "multi_worker"
    assert report["training"]["epochs_run"] == epochs - len(killed_after) + (1 if redone else 0)
    assert (store / "ranker" / "1" / "saved_model.pb").is_file()
    assert not (store / "ranker" / "2").exists()  # only the chief publishes


def test_workers_whose_backups_disagree_stop_instead_of_hanging(tmp_path, tiny_store_dir):
    """A worker killed while saving may hold an older backup than its peer; resuming would
    run different numbers of steps and hang in a collective. A worker one epoch ahead goes back
    to its previous checkpoint; when it has none (here), both stop with an error."""
    from tests.training.test_train_rank import tiny_rank_config

    config = tiny_rank_config(tmp_path / "rank.yaml", data={"path": str(tiny_store_dir)})
    run_dir = tmp_path / "run"
    (run_dir / "backup").mkdir(parents=True)  # the chief's backup says epoch 1, worker 1 has none
    (run_dir / "backup" / "training_metadata.json").write_text('{"epoch": 1, "batch": 0}')
    procs = _start_workers(config, tmp_path / "store", run_dir)
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode != 0 and "hold different epochs" in out, out[-3000:]


def test_a_worker_one_epoch_ahead_steps_back_so_both_resume_together(tmp_path, tiny_store_dir):
    """Both workers stopped after epoch 2; worker 1's backup is then rolled back to epoch 1,
    as when it is killed before saving. On restart the chief goes back to its previous
    checkpoint (epoch 1) and both finish."""
    import shutil
    import signal
    import time

    from tests.training.test_train_rank import tiny_rank_config

    epochs = 4
    config = tiny_rank_config(
        tmp_path / "rank.yaml",
        data={"path": str(tiny_store_dir)},
        epochs=epochs,
        steps_per_epoch=20,
        early_stopping_patience=None,
    )
    store, run_dir = tmp_path / "store", tmp_path / "run"
    procs = _start_workers(config, store, run_dir)
    worker_dir = run_dir / "worker-1"
    deadline = time.monotonic() + 300
    while (
        min(len(_epochs_logged(run_dir)), len(_epochs_logged(worker_dir))) < 2
        and all(p.poll() is None for p in procs)
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    for proc in procs:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    chief_epoch = json.loads((run_dir / "backup" / "training_metadata.json").read_text())
    assert chief_epoch["epoch"] >= 2
    backup = worker_dir / "backup"
    for name in ("latest.weights.h5", "training_metadata.json"):  # one epoch behind the chief
        shutil.copy(backup / f"{name}.bkp", backup / name)
    behind = json.loads((backup / "training_metadata.json").read_text())["epoch"]
    if behind != chief_epoch["epoch"] - 1:
        pytest.skip(f"the kill did not leave the backups at epochs n, n: {chief_epoch}, {behind}")
    procs = _start_workers(config, store, run_dir)
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out[-3000:]
    assert "one epoch ahead" in outputs[0], outputs[0][-3000:]
    report = json.loads((run_dir / "report.json").read_text())
    assert report["training"]["epochs_run"] == epochs - behind
    assert (store / "ranker" / "1" / "saved_model.pb").is_file()
