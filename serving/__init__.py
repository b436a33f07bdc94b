"""The HTTP service: a Flask application factory run under gunicorn.

    gunicorn -c serving/gunicorn.conf.py 'serving:create_app()'     (or: recsys serve)

Settings come from `RECSYS_*` environment variables (`RECSYS_STORE`, `RECSYS_API_KEYS`, ...) or,
in tests, from `test_config`. Nothing is loaded at import: models load per worker, after the
fork, in a background thread (`serving.model_store`).
"""

from __future__ import annotations

import logging.config

from recsys import schema

DEFAULTS = {
    "STORE": "saved_models",  # the model store
    "CATALOG": None,  # a catalog file for product ids missing from a model's own catalog
    "API_KEYS": None,  # comma-separated; or API_KEYS_FILE, one key per line
    "API_KEYS_FILE": None,
    "RELOAD_INTERVAL": 2.0,  # seconds between store scans; 0 loads once
    "LOAD_TIMEOUT": 60.0,  # how long a request waits for the first load of a model
    "KEEP_VERSIONS": 2,  # older versions loaded on request, kept per worker
    "MAX_BATCH_SIZE": 64,  # rows (users, pairs or texts) per coalesced model call
    "BATCH_TIMEOUT_MS": 2.0,  # longest wait for more requests after the first of a batch
    "RERANK_DEPTH": 3,  # with `rerank`, the buy model re-scores the top k * depth
    "TF_THREADS": None,  # TensorFlow intra/inter-op threads per worker (None: TF's default)
    "LOG_LEVEL": "INFO",
    "MAX_CONTENT_LENGTH": schema.MAX_BODY_BYTES,
}


def _logging_config(level):
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "plain": {"format": "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"}
        },
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
        "loggers": {
            "serving": {"level": level, "handlers": ["stderr"], "propagate": False},
            "recsys": {"level": level, "handlers": ["stderr"], "propagate": False},
        },
    }


def create_app(test_config=None):
    """Creates the app: config, error handlers, metrics, auth, models, blueprints.

    Args:
        test_config: dict or None. Settings that replace the `RECSYS_*` environment.
    """
    from flask import Flask

    from serving import api, auth, errors, metrics, model_store, page

    app = Flask(__name__)
    app.config.from_mapping(DEFAULTS)
    if test_config is None:
        app.config.from_prefixed_env(prefix="RECSYS")
    else:
        app.config.update(test_config)
    if test_config is None or test_config.get("CONFIGURE_LOGGING"):
        logging.config.dictConfig(_logging_config(str(app.config["LOG_LEVEL"]).upper()))
    app.config["MAX_CONTENT_LENGTH"] = int(app.config["MAX_CONTENT_LENGTH"])
    app.json.sort_keys = False
    errors.init_app(app)
    metrics.init_app(app)  # before auth, so that refused requests are counted too
    auth.init_app(app)
    model_store.init_app(app)
    app.register_blueprint(api.ops)
    app.register_blueprint(api.bp)
    page.init_app(app)  # the web page at `/` and the shopper endpoints it reads
    return app
