"""The OpenAPI document stays true: real responses (and the requests that produced them)
validate against it, and every route of the app is in it."""

import re

import jsonschema
import pytest
from jsonschema.validators import Draft202012Validator

from serving.openapi import document


@pytest.fixture(scope="module")
def doc():
    return document()


def _validator(doc, schema):
    return Draft202012Validator({**schema, "components": doc["components"]})


def _check(doc, path, method, status, instance, request=None):
    operation = doc["paths"][path][method]
    if request is not None:
        _validator(doc, operation["requestBody"]["content"]["application/json"]["schema"]).validate(
            request
        )
    response = operation["responses"][str(status)]
    schema = response["content"]["application/json"]["schema"]
    try:
        _validator(doc, schema).validate(instance)
    except jsonschema.ValidationError as e:
        raise AssertionError(f"{method.upper()} {path} {status}: {e.message}") from None


def test_the_document_is_openapi_3_1_with_valid_json_schemas(doc):
    assert doc["openapi"].startswith("3.1")
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)


def test_every_route_is_documented(app, doc):
    documented = set(doc["paths"])
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        assert path in documented, path
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert method.lower() in doc["paths"][path], (method, path)


def test_real_responses_match_the_document(client, doc, tiny_store):
    ids = tiny_store.catalog["product_id"].tolist()
    _check(doc, "/healthz", "get", 200, client.get("/healthz").get_json())
    _check(doc, "/readyz", "get", 200, client.get("/readyz").get_json())
    _check(doc, "/v1/models", "get", 200, client.get("/v1/models").get_json())
    for name in ("buy", "ranker", "categories"):
        _check(doc, "/v1/models/{name}", "get", 200, client.get(f"/v1/models/{name}").get_json())
    _check(
        doc,
        "/v1/models/{name}/versions/{version}",
        "get",
        200,
        client.get("/v1/models/buy/versions/1").get_json(),
    )
    requests = [
        (
            "/v1/score",
            {
                "model": "buy",
                "version": 1,
                "user": {"history": [ids[0], {"id": ids[1], "event": "purchase"}], "query": "q"},
                "products": [
                    ids[2],
                    {"id": "n", "title": "Mug", "category": "kitchen", "price": 4},
                ],
            },
        ),
        ("/v1/recommend", {"model": "ranker", "user": {"history": [ids[1]]}, "k": 3}),
        (
            "/v1/recommend",
            {"k": 2, "exclude": [ids[0]], "filters": {"category": ["x"]}, "rerank": "buy"},
        ),
        ("/v1/recommend", {"k": 2, "rerank": "buy", "user": {"history": [ids[5]], "query": "q"}}),
        ("/v1/classify", {"model": "categories", "texts": ["a mug", ""]}),
        ("/v1/models/{name}:predict", {"instances": [{"context": "a", "product": "b"}]}),
        (
            "/v1/models/{name}:predict",
            {"signature_name": "score", "inputs": {"context": ["a"], "product": ["b"]}},
        ),
    ]
    for path, body in requests:
        resp = client.post(path.replace("{name}", "buy"), json=body)
        assert resp.status_code == 200, resp.get_data(as_text=True)
        _check(doc, path, "post", 200, resp.get_json(), request=body)


def test_error_responses_match_the_document(client, doc):
    cases = [
        ("/v1/score", {"products": []}, 422),
        ("/v1/score", {"products": ["x"], "extra": 1}, 400),
        ("/v1/score", {"model": "nope", "products": ["x"]}, 404),
        ("/v1/classify", {"texts": ["x" * 1024] * 1100}, 413),
    ]
    for path, body, status in cases:
        resp = client.post(path, json=body)
        assert resp.status_code == status
        _check(doc, path, "post", status, resp.get_json())


def test_the_served_document_is_this_document(client, doc):
    assert client.get("/openapi.json").get_json() == doc
