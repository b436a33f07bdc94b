"""The API through Flask's test client: every endpoint, every error case, and the buy scoring
paths (catalog ids and inline products) agreeing with each other."""

import json

import numpy as np
import pytest

from recsys import schema
from tests.serving import fakes


@pytest.fixture(scope="module")
def ids(tiny_store):
    return tiny_store.catalog["product_id"].tolist()


def _error(resp, status, code=None):
    assert resp.status_code == status, resp.get_data(as_text=True)
    body = resp.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "status", "message"}
    assert body["error"]["status"] == status
    assert "Traceback" not in resp.get_data(as_text=True)
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]["message"]


# -- operations and the store ----------------------------------------------------------------
def test_health_and_readiness(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    models = ready.get_json()["models"]
    assert {n: m["state"] for n, m in models.items()} == {
        "buy": "loaded",
        "categories": "loaded",
        "ranker": "loaded",
    }


def test_models_list_and_detail(client):
    listed = {m["name"]: m for m in client.get("/v1/models").get_json()["models"]}
    assert listed["buy"]["task"] == "buy_probability" and listed["buy"]["versions"] == [1]
    assert listed["ranker"]["task"] == "ranking"
    detail = client.get("/v1/models/buy").get_json()
    assert detail["version"] == 1 and detail["metrics"] == {"roc_auc": 0.5}
    assert set(detail["signatures"]) >= {"score", "score_catalog"}
    assert detail["signatures"]["score_catalog"]["inputs"]["query"] == {
        "dtype": "string",
        "shape": [],
    }
    assert detail["model_version_status"][0]["state"] == "AVAILABLE"
    assert client.get("/v1/models/categories/versions/1").get_json()["labels"] == (
        fakes.CLASSIFIER_LABELS
    )


# -- /v1/score -------------------------------------------------------------------------------
def test_score_returns_probabilities_in_request_order(client, ids):
    products = [ids[5], ids[1], ids[5]]
    resp = client.post(
        "/v1/score",
        json={"model": "buy", "user": {"history": ids[:3], "query": "mug"}, "products": products},
    )
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.get_json()
    assert (body["model"], body["version"]) == ("buy", 1)
    assert [s["id"] for s in body["scores"]] == products
    probs = [s["probability"] for s in body["scores"]]
    assert all(0.0 < p < 1.0 for p in probs) and probs[0] == pytest.approx(probs[2])


def test_inline_products_score_like_the_same_catalog_products(client, tiny_store, ids):
    """The inline path (`score` with the context built in Python) matches `score_catalog`."""
    catalog = tiny_store.catalog.set_index("product_id")
    history = [{"id": ids[0], "event": "purchase"}, ids[1], "not-in-catalog", ids[2]]
    inline = []
    for pid in ids[3:8]:
        row = catalog.loc[pid]
        item = {"id": f"new-{pid}", "title": row["title"], "category": row["category"]}
        if "brand" in row and isinstance(row["brand"], str):
            item["brand"] = row["brand"]
        if "price" in row and row["price"] == row["price"]:
            item["price"] = float(row["price"])
        inline.append(item)
    for query in ("", "red; mug"):
        body = {"user": {"history": history, "query": query}, "products": ids[3:8] + inline}
        scores = [
            s["probability"] for s in client.post("/v1/score", json=body).get_json()["scores"]
        ]
        np.testing.assert_allclose(scores[:5], scores[5:], atol=1e-5)


def test_a_user_without_history_gets_real_probabilities(client, ids):
    body = client.post("/v1/score", json={"products": ids[:3]}).get_json()
    assert all(0.0 < s["probability"] < 1.0 for s in body["scores"])


def test_unknown_product_ids_are_named_not_dropped(client, ids):
    msg = _error(
        client.post("/v1/score", json={"products": [ids[0], "nope-1", "nope-2"]}),
        422,
        "unknown_product",
    )
    assert "'nope-1'" in msg and "'nope-2'" in msg and "title" in msg


def test_a_server_catalog_resolves_ids_the_model_has_not_seen(serving_store, tmp_path, ids):
    import pandas as pd

    from tests.serving.conftest import make_app

    path = tmp_path / "extra.csv"
    pd.DataFrame({"product_id": ["X1"], "title": ["Glow mug"], "category": ["kitchen"]}).to_csv(
        path, index=False
    )
    app = make_app(serving_store, CATALOG=str(path))
    try:
        resp = app.test_client().post("/v1/score", json={"model": "buy", "products": ["X1"]})
        assert resp.status_code == 200 and resp.get_json()["scores"][0]["id"] == "X1"
    finally:
        app.extensions["recsys_models"].stop()


# -- /v1/recommend ---------------------------------------------------------------------------
def test_recommend_top_k_with_titles(client, ids):
    history = [ids[3], ids[10]]  # most recent first; the ranker reads it oldest first
    resp = client.post(
        "/v1/recommend", json={"model": "ranker", "user": {"history": history}, "k": 5}
    )
    body = resp.get_json()
    assert resp.status_code == 200 and (body["model"], body["version"]) == ("ranker", 1)
    items = body["items"]
    assert len(items) == 5 and items[0]["id"] == ids[4]  # the item after the most recent one
    assert all(set(i) == {"id", "score", "title", "category"} for i in items)
    assert [i["score"] for i in items] == sorted((i["score"] for i in items), reverse=True)
    assert items[0]["title"]


def test_recommend_excludes_and_filters(client, tiny_store, ids):
    category = tiny_store.catalog["category"].iloc[-1]
    body = client.post(
        "/v1/recommend",
        json={
            "user": {"history": []},
            "k": 3,
            "exclude": ids[:2],
            "filters": {"category": [category]},
        },
    ).get_json()
    assert body["items"] and all(i["category"] == category for i in body["items"])
    assert not {i["id"] for i in body["items"]} & set(ids[:2])
    cold = client.post("/v1/recommend", json={"k": 2}).get_json()["items"]
    assert [i["id"] for i in cold] == ids[:2]  # no history: the most popular


def test_recommend_with_rerank_carries_the_buy_probability(client, ids):
    body = client.post(
        "/v1/recommend",
        json={"model": "ranker", "user": {"history": [ids[58]]}, "k": 4, "rerank": "buy"},
    ).get_json()
    assert body["rerank"] == {"model": "buy", "version": 1}
    probs = [i["probability"] for i in body["items"]]
    assert len(probs) == 4 and probs == sorted(probs, reverse=True)
    # the ranker's own items that the buy model never saw are scored from the ranker's catalog
    with_new = client.post(
        "/v1/recommend",
        json={"model": "ranker", "user": {"history": [ids[-1]]}, "k": 2, "rerank": "buy"},
    )
    assert with_new.status_code == 200, with_new.get_data(as_text=True)


# -- /v1/classify ----------------------------------------------------------------------------
def test_classify(client):
    body = client.post(
        "/v1/classify", json={"model": "categories", "texts": ["Blue MUG", "x"]}
    ).get_json()
    first, second = body["predictions"]
    assert first["label"] == "kitchen" and second["label"] == "other"
    assert set(first["probabilities"]) == set(fakes.CLASSIFIER_LABELS)
    assert sum(first["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


# -- TensorFlow Serving's REST API -----------------------------------------------------------
def test_predict_row_format(client):
    resp = client.post(
        "/v1/models/buy:predict", json={"instances": [{"context": "a | b", "product": "c | d"}] * 2}
    )
    preds = resp.get_json()["predictions"]
    assert resp.status_code == 200 and len(preds) == 2 and preds[0] == pytest.approx(preds[1])
    classify = client.post("/v1/models/categories/versions/1:predict", json={"instances": ["mug"]})
    row = classify.get_json()["predictions"][0]
    assert row["label"] == "kitchen" and len(row["probabilities"]) == 3


def test_predict_columnar_format_with_a_signature_name(client, ids):
    resp = client.post(
        "/v1/models/buy:predict",
        json={
            "signature_name": "score_catalog",
            "inputs": {
                "history": ids[:2],
                "history_events": ["view", "purchase"],
                "candidates": [ids[3], "unknown"],
                "query": "",
            },
        },
    )
    outputs = resp.get_json()["outputs"]
    assert outputs["known"] == [True, False] and outputs["probability"][1] is None
    ranked = client.post(
        "/v1/models/ranker:predict",
        json={"inputs": {"history": [[ids[0], ""]], "k": 3, "exclude": [[""]]}},
    ).get_json()["outputs"]
    assert len(ranked["product_ids"][0]) == 3


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"instances": [1], "inputs": {}}, "exactly one"),
        ({"signature_name": "nope", "instances": [{"context": "a", "product": "b"}]}, "nope"),
        ({"instances": [{"context": "a"}]}, "missing"),
        ({"instances": [{"context": 1, "product": "b"}]}, "expects strings"),
        ({"inputs": {"context": ["a", "b"], "product": ["c"]}}, "refused"),
        ({"inputs": {"context": [["a"], ["b", "c"]], "product": ["c"]}}, "ragged"),
        ({"inputs": {"context": "a", "product": "b"}}, "shape"),
        ({"signature_name": "score_catalog", "instances": [{"history": "a"}]}, "not batched"),
        ({"instances": []}, "must not be empty"),
        ({"instances": [{"context": "a", "product": "b"}], "extra": 1}, "Unknown field"),
    ],
)
def test_predict_bad_input_is_a_4xx(client, body, fragment):
    resp = client.post("/v1/models/buy:predict", json=body)
    assert 400 <= resp.status_code < 500
    assert fragment in _error(resp, resp.status_code)


# -- every bad-input case of the issue -------------------------------------------------------
def test_not_json(client):
    _error(client.post("/v1/score", data="products=1"), 400, "invalid_json")
    _error(client.post("/v1/score", data=b"\xff\xfe"), 400, "invalid_json")
    _error(client.post("/v1/score", data='{"products": [NaN]}'), 400, "invalid_json")
    _error(client.post("/v1/score", data=""), 400, "invalid_json")
    _error(client.post("/v1/score", json=["a list"]), 400)


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/v1/score", {"products": "P00001"}, "products"),
        ("/v1/score", {"products": [1]}, "products[0]"),
        ("/v1/score", {"products": ["P00001"], "user": {"history": "P00002"}}, "user.history"),
        ("/v1/score", {"products": ["P00001"], "user": {"query": 3}}, "user.query"),
        (
            "/v1/score",
            {"products": [{"id": "n", "title": "t", "category": "c", "price": "9"}]},
            "price",
        ),
        ("/v1/score", {"products": ["P00001"], "model": 7}, "model"),
        ("/v1/score", {"products": ["P00001"], "version": "latest"}, "version"),
        ("/v1/recommend", {"k": "10"}, "k"),
        ("/v1/recommend", {"k": True}, "k"),
        ("/v1/recommend", {"exclude": "P00001"}, "exclude"),
        ("/v1/recommend", {"filters": {"category": "shoes"}}, "filters.category"),
        ("/v1/classify", {"texts": "a text"}, "texts"),
        ("/v1/classify", {"texts": [None]}, "texts[0]"),
    ],
)
def test_wrong_types_are_400_naming_the_field(client, path, body, field):
    assert field in _error(client.post(path, json=body), 400)


@pytest.mark.parametrize(
    "path, body, where",
    [
        ("/v1/score", {"products": ["P00001"], "colour": "red"}, "colour"),
        ("/v1/score", {"products": ["P00001"], "user": {"age": 3}}, "age"),
        ("/v1/score", {"products": [{"id": "x", "colour": "red"}]}, "colour"),
        ("/v1/score", {"products": ["P00001"], "user": {"history": [{"id": "a", "t": 1}]}}, "'t'"),
        ("/v1/recommend", {"filters": {"brand": ["x"], "category": ["y"]}}, "brand"),
        ("/v1/classify", {"texts": ["a"], "labels": ["x"]}, "labels"),
    ],
)
def test_unknown_fields_are_refused(client, path, body, where):
    assert where in _error(client.post(path, json=body), 400, "unknown_field")


def test_unknown_model_and_version(client):
    assert "nope" in _error(
        client.post("/v1/score", json={"model": "nope", "products": ["P00001"]}),
        404,
        "model_not_found",
    )
    _error(
        client.post("/v1/score", json={"model": "buy", "version": 9, "products": ["P00001"]}),
        404,
        "version_not_found",
    )
    _error(client.get("/v1/models/nope"), 404, "model_not_found")
    _error(client.post("/v1/models/buy/versions/7:predict", json={"instances": ["x"]}), 404)
    _error(client.post("/v1/models/buy/versions/x:predict", json={"instances": ["x"]}), 400)
    assert "ranking" in _error(
        client.post("/v1/score", json={"model": "ranker", "products": ["P00001"]}),
        400,
        "wrong_task",
    )


def test_empty_lists_and_too_many_items(client):
    _error(client.post("/v1/score", json={"products": []}), 422)
    _error(client.post("/v1/classify", json={"texts": []}), 422)
    too_many = [f"P{i:05d}" for i in range(schema.MAX_ITEMS_PER_REQUEST + 1)]
    assert "1001" in _error(client.post("/v1/score", json={"products": too_many}), 422)
    _error(client.post("/v1/classify", json={"texts": ["t"] * 1001}), 422)
    history = {"history": ["P00001"] * (schema.MAX_HISTORY + 1)}
    _error(client.post("/v1/score", json={"products": ["P00001"], "user": history}), 422)
    _error(client.post("/v1/score", json={"products": [{"id": "n", "title": "t"}]}), 422)
    _error(client.post("/v1/score", json={"products": [""]}), 422)


@pytest.mark.parametrize("k", [0, -1, 1001])
def test_k_outside_1_to_1000(client, k):
    assert "1..1000" in _error(client.post("/v1/recommend", json={"k": k}), 422)


def test_body_over_one_mebibyte(client):
    big = json.dumps({"texts": ["x" * 1024] * 1100})
    assert "1048576" in _error(client.post("/v1/classify", data=big), 413, "payload_too_large")


def test_unknown_routes_and_methods_are_json(client):
    _error(client.get("/v2/nothing"), 404)
    _error(client.get("/v1/score"), 405)


def test_an_unexpected_error_is_a_bare_500(client, app, monkeypatch):
    loaded = app.extensions["recsys_models"].get("categories")

    def broken(texts):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(loaded.predictor, "classify", broken)
    resp = client.post("/v1/classify", json={"texts": ["a"]})
    assert "secret" not in _error(resp, 500, "internal")


def test_metrics_count_requests_batches_and_versions(client):
    client.post("/v1/classify", json={"texts": ["a"]})
    text = client.get("/metrics").get_data(as_text=True)
    assert 'recsys_http_requests_total{endpoint="/v1/classify",method="POST",status="200"}' in text
    assert "recsys_http_request_duration_seconds_bucket" in text
    assert 'recsys_batch_size_count{call="classify",model="categories"}' in text
    assert 'recsys_model_version{model="buy",task="buy_probability"} 1.0' in text
    assert 'recsys_batch_size_count{call="predict:serving_default",model="buy"}' in text
