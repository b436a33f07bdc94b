"""The HTTP API: blueprint `api` (`/v1/...`) and blueprint `ops` (health, readiness, OpenAPI).

Each view parses the request (`serving.schemas`), gets the model (`serving.model_store`), runs
it (`serving.predictors`, `serving.tfserving`) and shapes the response, in that order.
"""

from __future__ import annotations

from flask import Blueprint, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from recsys import store as store_lib
from serving import model_store, schemas, tfserving
from serving.errors import ApiError
from serving.schemas import Product

bp = Blueprint("api", __name__, url_prefix="/v1")
ops = Blueprint("ops", __name__)


def _body():
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    if request.content_length is None and limit:
        # A chunked body: Werkzeug cuts it at the limit without a word, so read one byte more.
        data = request.environ["wsgi.input"].read(limit + 1)
        if len(data) > limit:
            raise RequestEntityTooLarge()
        return schemas.load_json(data)
    return schemas.load_json(request.get_data(cache=False))


def _model(models, name, version, task, endpoint):
    loaded = models.get(name or models.default_name(task), version)
    if loaded.task != task:
        raise ApiError(
            400,
            f"Model {loaded.name!r} is a {loaded.task} model; {endpoint} needs a {task} model.",
            code="wrong_task",
        )
    return loaded


# -- operations ----------------------------------------------------------------------------
@ops.get("/healthz")
def healthz():
    return {"status": "ok"}


@ops.get("/readyz")
def readyz():
    ready, body = model_store.get_store().readiness()
    return body, 200 if ready else 503


@ops.get("/openapi.json")
def openapi_document():
    from serving.openapi import document

    return document()


# -- the model store -----------------------------------------------------------------------
def _status(loaded):
    """TensorFlow Serving's `model_version_status` for the version that serves."""
    return [
        {
            "version": str(loaded.version),
            "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": ""},
        }
    ]


@bp.get("/models")
def list_models():
    models = model_store.get_store()
    latest = models.latest()
    listing = store_lib.list_models(models.root)
    out = []
    for name in sorted(set(listing) | set(latest)):
        loaded = latest.get(name)
        out.append(
            {
                "name": name,
                "task": loaded.task if loaded else None,
                "version": loaded.version if loaded else None,
                "versions": listing.get(name, []),
                "state": "loaded" if loaded else "not_loaded",
            }
        )
    return {"models": out}


def _describe(loaded, models):
    card = loaded.card
    return {
        "name": loaded.name,
        "task": loaded.task,
        "version": loaded.version,
        "versions": store_lib.versions(models.root, loaded.name),
        "created_at": card.get("created_at"),
        "backbone": card.get("backbone"),
        "labels": card.get("labels"),
        "signatures": tfserving.describe(loaded.module),
        "metrics": card.get("metrics") or {},
        "headline_metrics": card.get("headline_metrics") or {},
        "model_version_status": _status(loaded),
    }


@bp.get("/models/<name>")
def get_model(name):
    models = model_store.get_store()
    return _describe(models.get(name), models)


@bp.get("/models/<name>/versions/<version>")
def get_model_version(name, version):
    models = model_store.get_store()
    return _describe(models.get(name, schemas.parse_version(version)), models)


@bp.post("/models/<name>:predict")
@bp.post("/models/<name>/versions/<version>:predict")
def predict(name, version=None):
    req = schemas.parse_predict(_body())
    loaded = model_store.get_model(name, schemas.parse_version(version))
    return tfserving.predict(loaded, req)


# -- the task endpoints --------------------------------------------------------------------
@bp.post("/score")
def score():
    req = schemas.parse_score(_body())
    models = model_store.get_store()
    loaded = _model(models, req.model, req.version, "buy_probability", "/v1/score")
    resolved = loaded.predictor.resolve(req.products, fallbacks=(models.catalog,))
    probs = loaded.predictor.score(req.history, req.query, resolved)
    return {
        "model": loaded.name,
        "version": loaded.version,
        "scores": [
            {"id": p.id, "probability": float(x)} for p, x in zip(req.products, probs, strict=True)
        ],
    }


@bp.post("/recommend")
def recommend():
    req = schemas.parse_recommend(_body())
    models = model_store.get_store()
    loaded = _model(models, req.model, req.version, "ranking", "/v1/recommend")
    ranker = loaded.predictor
    depth = int(current_app.config["RERANK_DEPTH"]) if req.rerank else 1
    rows = ranker.top([h.id for h in req.history], req.k * depth, req.exclude, req.categories)
    probabilities, reranker = None, None
    if req.rerank:
        reranker = _model(models, req.rerank, None, "buy_probability", "`rerank`")
        products = [Product(pid) for pid, _ in rows]
        resolved = reranker.predictor.resolve(products, (models.catalog, ranker.catalog))
        probabilities = reranker.predictor.score(req.history, req.query, resolved)
        order = sorted(range(len(rows)), key=lambda i: (-probabilities[i], -rows[i][1]))
    else:
        order = range(len(rows))
    items = []
    for i in list(order)[: req.k]:
        pid, value = rows[i]
        title, category = ranker.catalog.meta(pid) if ranker.catalog else (None, None)
        if title is None and models.catalog is not None:
            title, category = models.catalog.meta(pid)
        item = {"id": pid, "score": value, "title": title, "category": category}
        if probabilities is not None:
            item["probability"] = float(probabilities[i])
        items.append(item)
    body = {"model": loaded.name, "version": loaded.version, "items": items}
    if reranker is not None:
        body["rerank"] = {"model": reranker.name, "version": reranker.version}
    return body


@bp.post("/classify")
def classify():
    req = schemas.parse_classify(_body())
    models = model_store.get_store()
    loaded = _model(models, req.model, req.version, "text_classification", "/v1/classify")
    return {
        "model": loaded.name,
        "version": loaded.version,
        "predictions": loaded.predictor.classify(req.texts),
    }
