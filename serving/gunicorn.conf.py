"""gunicorn settings for the service; every value can be set with a `RECSYS_*` variable.

    gunicorn -c serving/gunicorn.conf.py 'serving:create_app()'     (or: recsys serve)

Workers are threaded: the threads of one worker share its models, and concurrent requests to
one model are coalesced into one call (serving/batching.py). The worker class is gunicorn's
`gthread` that reads each request in full on its event loop before a thread takes it
(serving/workers.py), so slow clients cannot hold the threads; requests not received within
`RECSYS_READ_TIMEOUT` seconds (30) get a 408. The app is not preloaded: TensorFlow and fork do
not mix, so each worker loads its own models after the fork. This file is read by the gunicorn
master; it must not import TensorFlow.
"""

import os
import shutil
import tempfile

from serving import workers as _workers

bind = os.environ.get("RECSYS_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("RECSYS_WORKERS", "2"))  # each worker holds its own copy of the models
threads = int(os.environ.get("RECSYS_THREADS", "8"))
# plain gthread where the installed gunicorn lacks what the buffering worker builds on
worker_class = "serving.workers.BufferingThreadWorker" if _workers.supported() else "gthread"
preload_app = False  # load TensorFlow after the fork, per worker
timeout = int(os.environ.get("RECSYS_TIMEOUT", "120"))  # workers load models at boot
graceful_timeout = 30
keepalive = 5
accesslog = None if os.environ.get("RECSYS_ACCESS_LOG", "1") in ("0", "false") else "-"
errorlog = "-"
loglevel = os.environ.get("RECSYS_LOG_LEVEL", "info").lower()
proc_name = "recsys-serve"
# gunicorn >= 25.1 opens a control socket at one fixed path per user, which two servers on one
# machine would share; set RECSYS_CONTROL_SOCKET=PATH to get one (for `gunicornc`).
control_socket_disable = not os.environ.get("RECSYS_CONTROL_SOCKET")
if os.environ.get("RECSYS_CONTROL_SOCKET"):
    control_socket = os.environ["RECSYS_CONTROL_SOCKET"]

_METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"
_created_metrics_dir = []


def on_starting(server):
    """Several workers share one metrics directory, so `/metrics` adds them all up."""
    if not os.environ.get(_METRICS_DIR):
        path = tempfile.mkdtemp(prefix="recsys-metrics-")
        os.environ[_METRICS_DIR] = path
        _created_metrics_dir.append(path)


def child_exit(server, worker):
    if os.environ.get(_METRICS_DIR):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    for path in _created_metrics_dir:
        shutil.rmtree(path, ignore_errors=True)
