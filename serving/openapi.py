"""The API described in OpenAPI 3.1 (served at `GET /openapi.json`), as plain data.

Schemas are JSON Schema 2020-12 (as OpenAPI 3.1 uses), so a test validates real responses
against them with `jsonschema`; keep them strict (`additionalProperties: false`).

>>> sorted(document()["paths"])[:4]
['/', '/healthz', '/metrics', '/openapi.json']
"""

from __future__ import annotations

import copy

from recsys import schema


def _ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(properties, required=(), extra=False):
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": extra,
    }


_STR = {"type": "string"}
_INT = {"type": "integer"}
_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"}
_PROB = {"type": "number", "minimum": 0, "maximum": 1}
_HISTORY = {
    "type": "array",
    "maxItems": schema.MAX_HISTORY,
    "description": "Product ids, most recent first; or objects with the event.",
    "items": {
        "oneOf": [
            {"type": "string", "minLength": 1},
            _obj(
                {
                    "id": {"type": "string", "minLength": 1},
                    "event": {"enum": list(schema.EVENT_TYPES)},
                },
                ["id"],
            ),
        ]
    },
}

SCHEMAS = {
    "Error": _obj(
        {
            "error": _obj(
                {"code": _STR, "status": {"type": "integer", "minimum": 400}, "message": _STR},
                ["code", "status", "message"],
            )
        },
        ["error"],
    ),
    "Health": _obj({"status": {"const": "ok"}}, ["status"]),
    "Readiness": _obj(
        {
            "ready": {"type": "boolean"},
            "message": _STR,
            "models": {
                "type": "object",
                "additionalProperties": _obj(
                    {
                        "version": {"type": ["integer", "null"]},
                        "task": {"type": ["string", "null"]},
                        "state": {"enum": ["loaded", "failed"]},
                    },
                    ["version", "task", "state"],
                ),
            },
        },
        ["ready", "message", "models"],
    ),
    "ModelList": _obj(
        {
            "models": {
                "type": "array",
                "items": _obj(
                    {
                        "name": _NAME,
                        "task": {"type": ["string", "null"], "enum": [*schema.TASKS, None]},
                        "version": {"type": ["integer", "null"]},
                        "versions": {"type": "array", "items": _INT},
                        "state": {"enum": ["loaded", "not_loaded"]},
                    },
                    ["name", "task", "version", "versions", "state"],
                ),
            }
        },
        ["models"],
    ),
    "TensorSpec": _obj(
        {
            "dtype": _STR,
            "shape": {"type": ["array", "null"], "items": {"type": "integer", "minimum": -1}},
        },
        ["dtype", "shape"],
    ),
    "Model": _obj(
        {
            "name": _NAME,
            "task": {"enum": list(schema.TASKS)},
            "version": {"type": "integer", "minimum": 1},
            "versions": {"type": "array", "items": _INT},
            "created_at": {"type": ["string", "null"]},
            "backbone": {},
            "labels": {"type": ["array", "null"], "items": _STR},
            "signatures": {
                "type": "object",
                "additionalProperties": _obj(
                    {
                        "inputs": {"type": "object", "additionalProperties": _ref("TensorSpec")},
                        "outputs": {"type": "object", "additionalProperties": _ref("TensorSpec")},
                    },
                    ["inputs", "outputs"],
                ),
            },
            "metrics": {"type": "object"},
            "headline_metrics": {"type": "object"},
            "model_version_status": {
                "type": "array",
                "description": "TensorFlow Serving's model status shape.",
                "items": _obj(
                    {
                        "version": _STR,
                        "state": _STR,
                        "status": _obj(
                            {"error_code": _STR, "error_message": _STR},
                            ["error_code", "error_message"],
                        ),
                    },
                    ["version", "state", "status"],
                ),
            },
        },
        ["name", "task", "version", "versions", "signatures", "metrics", "model_version_status"],
    ),
    "ScoreRequest": _obj(
        {
            "model": _NAME,
            "version": {"type": "integer", "minimum": 1},
            "user": _obj({"history": _HISTORY, "query": {"type": ["string", "null"]}}),
            "products": {
                "type": "array",
                "minItems": 1,
                "maxItems": schema.MAX_ITEMS_PER_REQUEST,
                "items": {
                    "oneOf": [
                        {"type": "string", "minLength": 1, "description": "A catalog id."},
                        _obj(
                            {
                                "id": {"type": "string", "minLength": 1},
                                "title": _STR,
                                "category": _STR,
                                "brand": {"type": ["string", "null"]},
                                "price": {"type": ["number", "null"], "minimum": 0},
                            },
                            ["id"],
                        ),
                    ]
                },
            },
        },
        ["products"],
    ),
    "ScoreResponse": _obj(
        {
            "model": _NAME,
            "version": {"type": "integer", "minimum": 1},
            "scores": {
                "type": "array",
                "items": _obj({"id": _STR, "probability": _PROB}, ["id", "probability"]),
            },
        },
        ["model", "version", "scores"],
    ),
    "RecommendRequest": _obj(
        {
            "model": _NAME,
            "version": {"type": "integer", "minimum": 1},
            "user": _obj(
                {
                    "history": _HISTORY,
                    "query": {"type": ["string", "null"], "description": "Used by `rerank`."},
                }
            ),
            "k": {"type": "integer", "minimum": 1, "maximum": schema.MAX_K, "default": 10},
            "exclude": {"type": "array", "maxItems": schema.MAX_ITEMS_PER_REQUEST, "items": _STR},
            "filters": _obj(
                {
                    "category": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": schema.MAX_ITEMS_PER_REQUEST,
                        "items": _STR,
                    }
                },
                ["category"],
            ),
            "rerank": {
                "type": ["string", "null"],
                "description": "A buy-probability model that re-scores the top candidates.",
            },
        }
    ),
    "RecommendResponse": _obj(
        {
            "model": _NAME,
            "version": {"type": "integer", "minimum": 1},
            "items": {
                "type": "array",
                "maxItems": schema.MAX_K,
                "items": _obj(
                    {
                        "id": _STR,
                        "score": {"type": "number"},
                        "title": {"type": ["string", "null"]},
                        "category": {"type": ["string", "null"]},
                        "probability": _PROB,
                    },
                    ["id", "score", "title", "category"],
                ),
            },
            "rerank": _obj({"model": _NAME, "version": {"type": "integer"}}, ["model", "version"]),
        },
        ["model", "version", "items"],
    ),
    "ClassifyRequest": _obj(
        {
            "model": _NAME,
            "version": {"type": "integer", "minimum": 1},
            "texts": {
                "type": "array",
                "minItems": 1,
                "maxItems": schema.MAX_TEXTS_PER_REQUEST,
                "items": _STR,
            },
        },
        ["texts"],
    ),
    "ClassifyResponse": _obj(
        {
            "model": _NAME,
            "version": {"type": "integer", "minimum": 1},
            "predictions": {
                "type": "array",
                "items": _obj(
                    {
                        "label": _STR,
                        "probabilities": {"type": "object", "additionalProperties": _PROB},
                        "labels": {
                            "type": "array",
                            "items": _STR,
                            "description": "Multi-label models: every label over its threshold.",
                        },
                    },
                    ["label", "probabilities"],
                ),
            },
        },
        ["model", "version", "predictions"],
    ),
    "UserList": _obj(
        {
            "users": {
                "type": "array",
                "items": _obj(
                    {
                        "id": _STR,
                        "events": {"type": "integer", "minimum": 1},
                        "last_seen": {"type": "string", "format": "date-time"},
                    },
                    ["id", "events", "last_seen"],
                ),
            },
            "total": {"type": "integer", "minimum": 0},
        },
        ["users", "total"],
    ),
    "UserHistory": _obj(
        {
            "id": _STR,
            "history": {
                "type": "array",
                "maxItems": schema.MAX_HISTORY,
                "description": "The shopper's events, most recent first.",
                "items": _obj(
                    {
                        "id": _STR,
                        "event": {"enum": list(schema.EVENT_TYPES)},
                        "timestamp": {"type": "string", "format": "date-time"},
                        "title": {"type": ["string", "null"]},
                        "category": {"type": ["string", "null"]},
                    },
                    ["id", "event", "timestamp", "title", "category"],
                ),
            },
        },
        ["id", "history"],
    ),
    "PredictRequest": {
        "type": "object",
        "description": "TensorFlow Serving's REST predict body: `instances` or `inputs`.",
        "properties": {
            "signature_name": _STR,
            "instances": {"type": "array", "minItems": 1},
            "inputs": {},
        },
        "additionalProperties": False,
        "oneOf": [{"required": ["instances"]}, {"required": ["inputs"]}],
    },
    "PredictResponse": {
        "type": "object",
        "oneOf": [
            _obj({"predictions": {"type": "array"}}, ["predictions"]),
            _obj({"outputs": {}}, ["outputs"]),
        ],
    },
}


def _json(name):
    return {"content": {"application/json": {"schema": _ref(name)}}}


_ERROR = {"description": "Error", **_json("Error")}
_ERRORS = {
    "400": _ERROR,
    "401": _ERROR,
    "404": _ERROR,
    "413": _ERROR,
    "422": _ERROR,
    "503": _ERROR,
}


def _post(summary, request, response):
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, **_json(request)},
            "responses": {"200": {"description": "OK", **_json(response)}, **_ERRORS},
        }
    }


def _name_param(name, description):
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": _STR,
        "description": description,
    }


def _limit_param(maximum, default):
    return {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": maximum, "default": default},
    }


def document() -> dict:
    """The OpenAPI document (a fresh dict each call)."""
    from recsys import __version__

    predict = _post("TensorFlow Serving REST predict", "PredictRequest", "PredictResponse")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "recsys store-intelligence service",
            "version": __version__,
            "description": "Buy probabilities, recommendations and text classification.",
        },
        "security": [{"bearerAuth": []}],
        "paths": {
            "/healthz": {
                "get": {
                    "summary": "Liveness",
                    "security": [],
                    "responses": {"200": {"description": "Alive", **_json("Health")}},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: every model in the store is loaded",
                    "security": [],
                    "responses": {
                        "200": {"description": "Ready", **_json("Readiness")},
                        "503": {"description": "Not ready", **_json("Readiness")},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {"description": "Metrics", "content": {"text/plain": {}}},
                        "401": _ERROR,
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {
                        "200": {"description": "OpenAPI", "content": {"application/json": {}}}
                    },
                }
            },
            "/v1/models": {
                "get": {
                    "summary": "The models in the store",
                    "responses": {
                        "200": {"description": "OK", **_json("ModelList")},
                        "401": _ERROR,
                    },
                }
            },
            "/v1/models/{name}": {
                "get": {
                    "summary": "One model: versions, task, signatures, metrics",
                    "parameters": [_name_param("name", "The model's name.")],
                    "responses": {"200": {"description": "OK", **_json("Model")}, **_ERRORS},
                }
            },
            "/v1/models/{name}/versions/{version}": {
                "get": {
                    "summary": "One version of a model",
                    "parameters": [
                        _name_param("name", "The model's name."),
                        _name_param("version", "A positive integer."),
                    ],
                    "responses": {"200": {"description": "OK", **_json("Model")}, **_ERRORS},
                }
            },
            "/v1/models/{name}:predict": {
                **predict,
                "parameters": [_name_param("name", "The model's name.")],
            },
            "/v1/models/{name}/versions/{version}:predict": {
                **predict,
                "parameters": [
                    _name_param("name", "The model's name."),
                    _name_param("version", "A positive integer."),
                ],
            },
            "/": {
                "get": {
                    "summary": "The web page (HTML; its script uses this API)",
                    "security": [],
                    "responses": {"200": {"description": "Page", "content": {"text/html": {}}}},
                }
            },
            "/v1/users": {
                "get": {
                    "summary": "Shoppers of the server's events table (RECSYS_EVENTS), "
                    "most recently active first",
                    "parameters": [_limit_param(1000, 50)],
                    "responses": {"200": {"description": "OK", **_json("UserList")}, **_ERRORS},
                }
            },
            "/v1/users/{user_id}": {
                "get": {
                    "summary": "One shopper's recent events with product titles",
                    "parameters": [
                        _name_param("user_id", "A user id of the events table."),
                        _limit_param(schema.MAX_HISTORY, 20),
                    ],
                    "responses": {"200": {"description": "OK", **_json("UserHistory")}, **_ERRORS},
                }
            },
            "/v1/score": _post("Buy probabilities", "ScoreRequest", "ScoreResponse"),
            "/v1/recommend": _post("Top-K products", "RecommendRequest", "RecommendResponse"),
            "/v1/classify": _post("Text classification", "ClassifyRequest", "ClassifyResponse"),
        },
        "components": {
            "schemas": copy.deepcopy(SCHEMAS),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }
