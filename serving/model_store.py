"""Models in a worker: loading from the versioned store, readiness and hot reload.

`init_app(app)` starts one background thread per worker (gunicorn does not preload the app, so
this happens after the fork). It loads the newest version of every model in the store, then polls
the store every `RELOAD_INTERVAL` seconds:

- a new version is loaded and warmed up beside the serving one, then swapped in with one
  reference assignment; requests in flight keep the object they started with, so a swap never
  fails them;
- a version that fails to load is logged once and skipped; the last good version keeps serving;
- deleting the newest version rolls back to the one before it; deleting a model unloads it.

A request may name an older version; it is loaded on demand and a few are kept (`KEEP_VERSIONS`).
Serving imports TensorFlow and `tensorflow_text` only, never `keras_hub` or training code.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import pathlib
import threading
import time

from flask import current_app

from recsys import store as store_lib
from serving.errors import ApiError

logger = logging.getLogger(__name__)
TRAIN_HINT = "recsys train training/configs/buy_demo.yaml --store {root}"


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """One loaded, warmed-up version of a model."""

    name: str
    version: int
    path: pathlib.Path
    task: str
    card: dict
    module: object  # the object `tf.saved_model.load` returned
    predictor: object  # the task adapter (serving.predictors)
    identity: tuple  # (inode, mtime) of the version directory: a re-published version differs
    loaded_at: float


def _identity(path):
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_ino, stat.st_mtime_ns)


class ModelStore:
    """The models of one worker.

    Args:
        root: str or Path. The model store (`saved_models/`).
        settings: mapping. The app config (`RELOAD_INTERVAL`, `KEEP_VERSIONS`, batching, ...).
        metrics: serving.metrics.Metrics or None.
        catalog: serving.catalog.Catalog or None. A catalog given to the server.
    """

    def __init__(self, root, settings=None, metrics=None, catalog=None):
        self.root = pathlib.Path(root)
        self.settings = dict(settings or {})
        self.metrics, self.catalog = metrics, catalog
        self.interval = float(self.settings.get("RELOAD_INTERVAL", 2.0))
        self.load_timeout = float(self.settings.get("LOAD_TIMEOUT", 60.0))
        self.keep_versions = int(self.settings.get("KEEP_VERSIONS", 2))
        self._lock = threading.Lock()
        self._latest = {}  # name -> LoadedModel
        self._pinned = collections.OrderedDict()  # (name, version) -> LoadedModel, LRU
        self._pin_locks = collections.defaultdict(threading.Lock)
        self._failed = {}  # (name, version, identity) -> reason
        self._listing = {}  # name -> versions at the last scan
        self._scanned = threading.Event()
        self._stop = threading.Event()
        self._thread = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self):
        self._thread = threading.Thread(target=self._run, name="model-store", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout=10.0):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_scanned(self, timeout=None) -> bool:
        return self._scanned.wait(timeout)

    def _run(self):
        while True:
            try:
                self.refresh()
            except Exception:  # the poller must survive anything; the next scan retries
                logger.exception("Scanning the model store %s failed", self.root)
            if not self._scanned.is_set():
                self._scanned.set()
                self._log_start_state()
            if self.interval <= 0 or self._stop.wait(self.interval):
                return

    def _log_start_state(self):
        if not self._listing:
            logger.warning(
                "No models in the store %s: not ready. Train one with: %s",
                self.root.resolve(),
                TRAIN_HINT.format(root=self.root),
            )
        for name, loaded in sorted(self._latest.items()):
            logger.info("Serving %s version %d (%s)", name, loaded.version, loaded.task)

    # -- loading ---------------------------------------------------------------------------
    def refresh(self):
        """One scan of the store: load what is new, roll back what was removed."""
        listing = store_lib.list_models(self.root)
        self._listing = listing
        for name, found in listing.items():
            if self._stop.is_set():
                return
            current = self._latest.get(name)
            for version in reversed(found):
                path = self.root / name / str(version)
                identity = _identity(path)
                if current is not None and (version, identity) == (
                    current.version,
                    current.identity,
                ):
                    break  # nothing newer that loads
                if (name, version, identity) in self._failed:
                    continue
                loaded = self._try_load(name, version, path, identity)
                if loaded is not None:
                    self._swap(loaded, current)
                    break
        for name in set(self._latest) - set(listing):
            with self._lock:
                gone = self._latest.pop(name)
            logger.warning("Model %s was removed from the store; unloaded it", name)
            if self.metrics is not None:
                self.metrics.model_version.remove(name, gone.task)

    def _try_load(self, name, version, path, identity):
        try:
            with _loading_priority():
                return self.load(name, version, path, identity)
        except Exception as e:  # any failure means: refuse this version, keep the last good one
            self._failed[(name, version, identity)] = f"{type(e).__name__}: {e}"
            logger.exception(
                "Could not load %s version %d from %s; skipped it", name, version, path
            )
            if self.metrics is not None:
                self.metrics.load_failures.labels(name).inc()
            return None

    def load(self, name, version, path, identity=None) -> LoadedModel:
        """Loads, checks and warms up one version (raises on any failure)."""
        import tensorflow as tf
        import tensorflow_text  # noqa: F401  (registers the tokenizer ops before loading)

        from serving.predictors import make_predictor

        _configure_tensorflow(self.settings)
        started = time.perf_counter()
        card = store_lib.read_card(path)
        module = tf.saved_model.load(str(path))
        restored = time.perf_counter()
        observer = self.metrics.batch_observer if self.metrics is not None else None
        predictor = make_predictor(module, card, path, name, self.settings, observer)
        loaded = LoadedModel(
            name=name,
            version=int(version),
            path=pathlib.Path(path),
            task=card["task"],
            card=card,
            module=module,
            predictor=predictor,
            identity=identity if identity is not None else _identity(path),
            loaded_at=time.time(),
        )
        logger.info(
            "Loaded %s version %d (%s) from %s in %.1f s (SavedModel %.1f s, warm-up %.1f s)",
            name,
            version,
            loaded.task,
            path,
            time.perf_counter() - started,
            restored - started,
            time.perf_counter() - restored,
        )
        return loaded

    def _swap(self, loaded, previous):
        with self._lock:
            self._latest[loaded.name] = loaded
        if previous is not None:
            logger.info(
                "Now serving %s version %d (was %d)", loaded.name, loaded.version, previous.version
            )
        if self.metrics is not None:
            if previous is not None and previous.task != loaded.task:
                self.metrics.model_version.remove(loaded.name, previous.task)
            self.metrics.model_version.labels(loaded.name, loaded.task).set(loaded.version)

    # -- lookups ---------------------------------------------------------------------------
    def latest(self) -> dict:
        """name -> the newest loaded version."""
        with self._lock:
            return dict(self._latest)

    def get(self, name, version=None) -> LoadedModel:
        """The model to serve a request (the newest loaded unless `version` is named).

        Raises:
            ApiError: 400 for a name that no model can have (`../x`), 404 for an unknown model
                or version, 503 while it cannot serve yet.
        """
        from serving.schemas import model_name

        model_name(name, "name")
        loaded = self._latest.get(name)
        if loaded is None and not self._scanned.is_set():
            self._scanned.wait(self.load_timeout)
            loaded = self._latest.get(name)
        if loaded is None:
            found = store_lib.versions(self.root, name)
            if not found:
                known = sorted(set(self._latest) | set(self._listing))
                raise ApiError(
                    404, f"No model {name!r}; known models: {known}.", code="model_not_found"
                )
            raise ApiError(
                503,
                f"Model {name!r} is in the store but no version of it is loaded yet.",
                code="model_unavailable",
            )
        if version is None or version == loaded.version:
            return loaded
        return self._get_pinned(name, version)

    def _get_pinned(self, name, version):
        key = (name, version)
        with self._lock:
            if key in self._pinned:
                self._pinned.move_to_end(key)
                return self._pinned[key]
        path = self.root / name / str(version)
        found = store_lib.versions(self.root, name)
        if version not in found:
            raise ApiError(
                404,
                f"Model {name!r} has no version {version}; versions: {found}.",
                code="version_not_found",
            )
        identity = _identity(path)
        if (name, version, identity) in self._failed:
            raise ApiError(
                503,
                f"Version {version} of model {name!r} failed to load; see the server log.",
                code="model_unavailable",
            )
        with self._pin_locks[key]:  # one load per version, however many requests wait for it
            with self._lock:
                if key in self._pinned:
                    return self._pinned[key]
            loaded = self._try_load(name, version, path, identity)
            if loaded is None:
                raise ApiError(
                    503,
                    f"Version {version} of model {name!r} failed to load; see the server log.",
                    code="model_unavailable",
                )
            with self._lock:
                self._pinned[key] = loaded
                while len(self._pinned) > self.keep_versions:
                    self._pinned.popitem(last=False)
            return loaded

    def default_name(self, task) -> str:
        """The model to use when a request names none: the only loaded model of `task`."""
        names = sorted(n for n, m in self.latest().items() if m.task == task)
        if len(names) == 1:
            return names[0]
        if not names:
            raise ApiError(
                404 if self._scanned.is_set() else 503,
                f"No {task} model is loaded; name one with `model`.",
                code="model_not_found",
            )
        raise ApiError(400, f"Several {task} models are loaded ({names}); name one with `model`.")

    def readiness(self):
        """`(ready, body)` for `/readyz`: ready once every model in the store is loaded."""
        if not self._scanned.is_set():
            return False, {"ready": False, "message": "Loading models.", "models": {}}
        latest, listing = self.latest(), self._listing
        models = {
            name: {
                "version": latest[name].version if name in latest else None,
                "task": latest[name].task if name in latest else None,
                "state": "loaded" if name in latest else "failed",
            }
            for name in sorted(set(listing) | set(latest))
        }
        if not listing:
            message = f"No models in the store {self.root}. Train one with: " + TRAIN_HINT.format(
                root=self.root
            )
            return False, {"ready": False, "message": message, "models": models}
        failed = [n for n, m in models.items() if m["state"] != "loaded"]
        if failed:
            message = f"No version of {failed} could be loaded; see the server log."
            return False, {"ready": False, "message": message, "models": models}
        return True, {"ready": True, "message": "All models loaded.", "models": models}


LOADER_PRIORITY_BOOST = 20  # nice steps (0 -> -20): CFS weighs such a thread ~87x a normal one
_priority_refused = []


class _loading_priority:
    """Raises the scheduling priority of the thread that loads a model, for the load only.

    Loading and warming up a SavedModel costs a few CPU seconds, mostly TensorFlow optimising
    the restored functions in the calling thread. Under full load that thread is one of many
    runnable ones: on two saturated cores a swap took 18-20 s instead of 3 s at rest; with
    the loader 20 nice steps up it took 4 s (docs/RELIABILITY.md). Raising a thread's priority
    needs root or CAP_SYS_NICE (or RLIMIT_NICE); without it the load runs at the normal
    priority, which is logged once. The priority is restored afterwards (lowering one's own
    priority is always allowed), and so is that of every thread started meanwhile (Linux
    threads inherit their creator's priority: micro-batchers, TensorFlow's pools).
    """

    def __enter__(self):
        self._tid = threading.get_native_id()
        self._nice = os.getpriority(os.PRIO_PROCESS, self._tid)
        self._threads = _thread_ids()
        try:
            os.setpriority(os.PRIO_PROCESS, self._tid, self._nice - LOADER_PRIORITY_BOOST)
        except OSError as e:
            self._nice = None
            if not _priority_refused:
                _priority_refused.append(True)
                logger.info(
                    "Models load at normal priority (%s); under full load a swap takes longer",
                    e.strerror,
                )
        return self

    def __exit__(self, *exc):
        if self._nice is None:
            return False
        for tid in {self._tid} | (_thread_ids() - self._threads):
            try:
                os.setpriority(os.PRIO_PROCESS, tid, self._nice)
            except OSError:  # the thread has ended
                continue
        return False


def _thread_ids() -> set:
    try:
        return {int(t) for t in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def _configure_tensorflow(settings):
    """Sets TensorFlow's thread pools once per process, before its first op (`TF_THREADS`)."""
    import tensorflow as tf

    threads = settings.get("TF_THREADS")
    if not threads or tf.config.threading.get_intra_op_parallelism_threads() == int(threads):
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(int(threads))
    except RuntimeError as e:  # TensorFlow already initialised in this process
        logger.warning("Could not set TensorFlow threads: %s", e)


def init_app(app):
    """Creates the worker's model store and starts loading (in the background)."""
    from serving.catalog import Catalog
    from serving.metrics import get_metrics

    catalog = Catalog.read(app.config["CATALOG"]) if app.config.get("CATALOG") else None
    models = ModelStore(
        app.config["STORE"],
        settings=app.config,
        metrics=get_metrics(app),
        catalog=catalog,
    )
    app.extensions["recsys_models"] = models
    models.start()


def get_store(app=None) -> ModelStore:
    return (app or current_app).extensions["recsys_models"]


def get_model(name, version=None) -> LoadedModel:
    return get_store().get(name, version)
