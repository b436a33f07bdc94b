"""`recsys serve`: checks the settings, then replaces itself with gunicorn.

    recsys serve [--store DIR] [--bind HOST:PORT] [--workers N] [--threads T] [--catalog FILE]

Flags override the `RECSYS_*` environment variables, which override the defaults; the result
is passed to gunicorn (`serving/gunicorn.conf.py`) and the app (`serving:create_app()`) through
the environment. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import logging
import os
import pathlib
import sys

logger = logging.getLogger(__name__)
CONFIG_FILE = pathlib.Path(__file__).resolve().parent / "gunicorn.conf.py"
APP = "serving:create_app()"


class ServeError(ValueError):
    """A bad `recsys serve` setting (exit code 2)."""


def _positive(value, name):
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise ServeError(f"--{name} must be a positive integer. Received: {value!r}.")
    return number


def _check_bind(bind):
    if bind.startswith(("unix:", "fd://")):
        return bind
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ServeError(f"--bind must be HOST:PORT (e.g. 127.0.0.1:8000). Received: {bind!r}.")
    return bind


def environment(store=None, bind=None, workers=None, threads=None, catalog=None, env=None):
    """The environment gunicorn and the app run with (flags over `RECSYS_*` over defaults).

    >>> e = environment(store="m", bind="0.0.0.0:9000", workers=1, threads=4, env={})
    >>> e["RECSYS_BIND"], e["RECSYS_WORKERS"], e["RECSYS_THREADS"], e["RECSYS_STORE"].endswith("m")
    ('0.0.0.0:9000', '1', '4', True)
    """
    env = dict(os.environ if env is None else env)
    store = store or env.get("RECSYS_STORE") or "saved_models"
    env["RECSYS_STORE"] = str(pathlib.Path(store).resolve())
    env["RECSYS_BIND"] = _check_bind(bind or env.get("RECSYS_BIND") or "127.0.0.1:8000")
    for name, value, default in (("workers", workers, 2), ("threads", threads, 8)):
        key = f"RECSYS_{name.upper()}"
        value = value if value is not None else env.get(key) or default
        env[key] = str(_positive(value, name))
    catalog = catalog or env.get("RECSYS_CATALOG")
    if catalog:
        env["RECSYS_CATALOG"] = str(pathlib.Path(catalog).resolve())
    return env


def check(env):
    """Fails early, with exit code 2, on settings a worker would only trip over later."""
    from recsys import store as store_lib

    if env.get("RECSYS_CATALOG"):
        from recsys.data.catalog import load_catalog

        load_catalog(env["RECSYS_CATALOG"])  # raises DataError naming the problem
    keys_file = env.get("RECSYS_API_KEYS_FILE")
    if keys_file and not pathlib.Path(keys_file).is_file():
        raise ServeError(f"RECSYS_API_KEYS_FILE {keys_file} is not a readable file.")
    root = env["RECSYS_STORE"]
    models = store_lib.list_models(root)
    if not models:
        print(
            f"recsys serve: no models in {root}; the service starts but reports not ready "
            f"(GET /readyz) until one is published. Train one with:\n"
            f"  recsys train training/configs/buy_demo.yaml --store {root}",
            file=sys.stderr,
        )
    else:
        listed = ", ".join(f"{n} (versions {v})" for n, v in models.items())
        print(f"recsys serve: serving {listed} from {root}", file=sys.stderr)
    if not (env.get("RECSYS_API_KEYS") or keys_file):
        print(
            "recsys serve: warning: no API keys set (RECSYS_API_KEYS or RECSYS_API_KEYS_FILE); "
            "every endpoint is open.",
            file=sys.stderr,
        )


def run(store=None, bind=None, workers=None, threads=None, catalog=None) -> int:
    """Execs gunicorn; returns (exit code 2) only on a bad setting."""
    try:
        env = environment(store, bind, workers, threads, catalog)
        check(env)
    except ServeError as e:
        print(f"recsys: error: {e}", file=sys.stderr)
        return 2
    argv = [sys.executable, "-m", "gunicorn", "-c", str(CONFIG_FILE), APP]
    print(
        f"recsys serve: http://{env['RECSYS_BIND']} with {env['RECSYS_WORKERS']} worker(s) x "
        f"{env['RECSYS_THREADS']} thread(s)",
        file=sys.stderr,
        flush=True,
    )
    sys.stdout.flush()
    os.execve(sys.executable, argv, env)
    return 1  # not reached
