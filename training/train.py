"""Train a task model from a YAML config, evaluate it and publish it into the model store.

    python -m training.train --config training/configs/buy_demo.yaml [--set train.epochs=1]
    recsys train training/configs/buy_demo.yaml --set train.epochs=1

Each task adapter (`training/tasks.py`) prepares data, builds the model and preprocessor,
evaluates and exports; this module owns what they share: strategy, optimiser, callbacks,
the fit loop, the report and publishing.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import math
import pathlib
import sys
import time
import warnings

from recsys import store
from recsys.config import load_config
from recsys.report import plot_training_curves, write_json

logger = logging.getLogger("training.train")
# BERT's pooler is unused (the towers mean-pool), so Keras warns that it gets no gradients.
warnings.filterwarnings("ignore", message="Gradients do not exist for variables")
warnings.filterwarnings("ignore", message="`shuffle=True` was passed")


def _callbacks(strategy, run_dir, monitor, mode, patience, verbose):
    import keras

    from training.distribute import backup_and_restore

    callbacks = [
        backup_and_restore(strategy, run_dir / "backup"),
        keras.callbacks.CSVLogger(str(run_dir / "training_log.csv"), append=True),
        keras.callbacks.TensorBoard(str(run_dir / "tensorboard"), write_graph=False),
    ]
    if patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=monitor,
                mode=mode,
                patience=patience,
                restore_best_weights=True,
                verbose=verbose,
            )
        )
    return callbacks


def _prepare(adapter, config, run_dir):
    """`adapter.prepare(config)`, passing `run_dir` to adapters that cache derived data there."""
    if "run_dir" in inspect.signature(adapter.prepare).parameters:
        return adapter.prepare(config, run_dir=run_dir)
    return adapter.prepare(config)


def _task_callbacks(adapter, config, data, model, run_dir):
    """The adapter's own callbacks (optional hook), run before the generic ones so that the
    metrics they add to the epoch logs reach early stopping and the CSV log."""
    hook = getattr(adapter, "callbacks", None)
    return list(hook(config, data, model, run_dir)) if hook else []


def run(config_path, overrides=(), store="saved_models", run_dir=None, export=True) -> int:
    """Trains, evaluates and (optionally) publishes; returns the process exit code."""
    config = load_config(config_path, overrides)  # bad configs fail before TensorFlow loads
    import keras

    from training import distribute, restart, tasks

    logger.info("Config: %s", config.to_dict())
    strategy_name, strategy = distribute.make_strategy(config.train.strategy)  # before any op
    run_dir = pathlib.Path(run_dir or pathlib.Path("runs") / config.name)
    run_dir = distribute.worker_run_dir(strategy, run_dir)  # workers may share `run_dir`
    run_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.train.seed)
    distribute.set_precision(distribute.resolve_precision(config.train.precision, strategy_name))
    adapter = tasks.adapter(config.task)
    # A one-process run that was killed may already have trained, or even published.
    state = None if strategy_name == "multi_worker" else restart.RunState(run_dir)
    done = state.published(store, config.name) if state and export else None
    if done is not None:
        print(f"Published {config.name} version {done.name}: {done} (by an earlier attempt)")
        state.finish()
        return 0

    started = time.perf_counter()
    data = _prepare(adapter, config, run_dir)
    logger.info("Data ready in %.1f s: %s", time.perf_counter() - started, data.describe())
    global_batch = config.train.batch_size * strategy.num_replicas_in_sync
    steps = config.train.steps_per_epoch or max(1, math.ceil(data.train_size / global_batch))
    with strategy.scope():
        model, preprocessor = adapter.build(config, data)
        from recsys.objectives import compile_kwargs
        from training.optimization import make_optimizer

        fit_model = adapter.training_model(model, config)
        fit_model.compile(
            optimizer=make_optimizer(config.train, steps * config.train.epochs),
            **compile_kwargs(adapter.objectives(config, data)),
        )
    train_ds = adapter.dataset(
        data, "train", preprocessor, global_batch, config, training=True, model=model
    )
    val_ds = adapter.dataset(data, "validation", preprocessor, global_batch, config, model=model)
    verbose = 1 if sys.stdout.isatty() else 2
    monitor, mode = adapter.monitor(config)
    fitted = state.fitted() if state else None
    if fitted is not None:  # an earlier attempt finished the fit, then was killed
        state.load_fitted(fit_model, val_ds)
    else:
        fit_started = time.perf_counter()
        # Workers must run the same number of steps: fix the epoch length under multi-worker.
        steps_per_epoch = config.train.steps_per_epoch or (
            steps if strategy_name == "multi_worker" else None
        )
        history = fit_model.fit(
            train_ds.repeat() if steps_per_epoch else train_ds,
            validation_data=val_ds,
            epochs=config.train.epochs,
            steps_per_epoch=steps_per_epoch,
            callbacks=_task_callbacks(adapter, config, data, model, run_dir)
            + _callbacks(
                strategy, run_dir, monitor, mode, config.train.early_stopping_patience, verbose
            ),
            verbose=verbose,
        ).history
        fitted = {
            "epochs_run": len(history.get("loss", [])),
            "fit_seconds": round(time.perf_counter() - fit_started, 1),
            "history": {k: [float(v) for v in vs] for k, vs in history.items()},
        }
        if state:
            state.save_fitted(fit_model, fitted)
    plot_training_curves(fitted["history"], run_dir / "training_curves.png")
    report = adapter.evaluate(model, preprocessor, data, config, run_dir)
    report["training"] = {
        "epochs_run": fitted["epochs_run"],
        "fit_seconds": fitted["fit_seconds"],
        "train_examples": data.train_size,
        "global_batch": global_batch,
        "strategy": strategy_name,
        "replicas": strategy.num_replicas_in_sync,
        "history": fitted["history"],
    }
    write_json(run_dir / "report.json", report)
    logger.info("Report: %s", run_dir / "report.json")
    print(f"Evaluation: {report['headline']}")
    if export and distribute.is_chief(strategy):
        run_id = state.run_id if state else None
        path = _publish(adapter, model, preprocessor, data, config, report, store, run_id)
        print(f"Published {config.name} version {path.name}: {path}")
    if state:
        state.finish()
    return 0


def _publish(adapter, model, preprocessor, data, config, report, store_root, run_id=None):
    from recsys.export import write_model_card

    def write(tmp):
        signatures = adapter.export(model, preprocessor, data, config, tmp)
        write_model_card(
            tmp,
            {
                "name": config.name,
                "task": config.task,
                "backbone": config.backbone,
                "sequence_length": config.model.sequence_length,
                "config": config.to_dict(),
                "data_fingerprint": data.fingerprint,
                "signatures": signatures,
                "metrics": report.get("test", {}),
                "headline_metrics": report["headline"],
                **({"run_id": run_id} if run_id else {}),
                **adapter.card_extras(data, config),
            },
        )

    return store.publish(store_root, config.name, write)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.train", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--config", required=True, help="YAML config")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE"
    )
    parser.add_argument("--store", default="saved_models")
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("--no-export", action="store_true")
    args = parser.parse_args(argv)
    from recsys.cli import main as cli_main

    argv = ["train", args.config, "--store", args.store]
    for item in args.overrides:
        argv += ["--set", item]
    if args.run_dir:
        argv += ["--run-dir", args.run_dir]
    if args.no_export:
        argv.append("--no-export")
    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
