"""API keys: every endpoint but the health checks needs `Authorization: Bearer <key>`."""

import logging

import pytest

from serving import auth
from tests.serving.conftest import make_app


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    keys_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys_file.write_text("# one key per line\nfrom-file\n")
    empty = tmp_path_factory.mktemp("empty-store")
    app = make_app(empty, API_KEYS="k1, k2", API_KEYS_FILE=str(keys_file))
    yield app.test_client()
    app.extensions["recsys_models"].stop()


@pytest.mark.parametrize("path", ["/v1/models", "/metrics", "/openapi.json", "/v1/models/buy"])
def test_endpoints_need_a_key(keyed, path):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic k1"}):
        resp = keyed.get(path, headers=headers)
        assert resp.status_code == 401
        assert resp.get_json()["error"]["code"] == "unauthorized"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_posts_need_a_key_before_anything_else(keyed):
    assert keyed.post("/v1/score", data="not json").status_code == 401


@pytest.mark.parametrize("key", ["k1", "k2", "from-file"])
def test_a_configured_key_opens_the_api(keyed, key):
    assert keyed.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_health_checks_are_open(keyed):
    assert keyed.get("/healthz").status_code == 200
    assert keyed.get("/readyz").status_code == 503  # open, and not ready: the store is empty


def test_no_keys_logs_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="serving.auth"):
        app = make_app(tmp_path)
    app.extensions["recsys_models"].stop()
    assert "No API keys configured" in caplog.text
    assert app.test_client().get("/v1/models").status_code == 200


def test_key_helpers():
    assert auth.key_matches("b", ("a", "b")) and not auth.key_matches("c", ("a", "b"))
    assert auth.parse_keys(["x", 12]) == ("x", "12")


def test_an_empty_store_is_not_ready_and_says_how_to_train(tmp_path):
    app = make_app(tmp_path / "nothing")
    client = app.test_client()
    app.extensions["recsys_models"].stop()
    resp = client.get("/readyz")
    assert resp.status_code == 503 and "recsys train" in resp.get_json()["message"]
    assert client.get("/healthz").status_code == 200
    assert client.get("/v1/models").get_json() == {"models": []}
    error = client.post("/v1/score", json={"products": ["p"]}).get_json()["error"]
    assert error["status"] == 404 and "buy_probability" in error["message"]
