"""The web page (`/`, its static files) and the shopper endpoints it reads."""

import pytest
from jsonschema.validators import Draft202012Validator

from serving.openapi import document
from tests.serving.conftest import make_app


@pytest.fixture(scope="module")
def events_file(tmp_path_factory, tiny_store):
    path = tmp_path_factory.mktemp("page") / "events.parquet"
    tiny_store.events.to_parquet(path)
    return path


@pytest.fixture(scope="module")
def page_app(serving_store, events_file):
    app = make_app(serving_store, TESTING=True, EVENTS=str(events_file))
    yield app
    app.extensions["recsys_models"].stop()


@pytest.fixture()
def page_client(page_app):
    return page_app.test_client()


def _validate(path, instance):
    doc = document()
    schema = doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
    Draft202012Validator({**schema["schema"], "components": doc["components"]}).validate(instance)


def test_the_page_and_its_files_are_served(page_client):
    resp = page_client.get("/")
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    html = resp.get_data(as_text=True)
    assert 'src="static/page.js"' in html and 'href="static/page.css"' in html
    for name, mimetype in (("page.js", "javascript"), ("page.css", "text/css")):
        static = page_client.get(f"/static/{name}")
        assert static.status_code == 200 and mimetype in static.mimetype
        static.close()
    resp.close()


def test_the_script_uses_only_the_public_api(page_client):
    script = page_client.get("/static/page.js").get_data(as_text=True)
    documented = {p.lstrip("/") for p in document()["paths"]}
    called = {"v1/models", "v1/users", "v1/recommend", "v1/score", "v1/classify"}
    assert called <= documented
    for path in called:
        assert f'"{path}' in script or f"`{path}" in script, path


def test_users_lists_the_most_recently_active_shoppers(page_client, tiny_store):
    resp = page_client.get("/v1/users?limit=5")
    assert resp.status_code == 200
    body = resp.get_json()
    _validate("/v1/users", body)
    assert body["total"] == tiny_store.events["user_id"].nunique()
    assert len(body["users"]) == 5
    last_seen = [u["last_seen"] for u in body["users"]]
    assert last_seen == sorted(last_seen, reverse=True)
    latest = tiny_store.events.sort_values("timestamp")["user_id"].iloc[-1]
    assert body["users"][0]["id"] == latest


def test_a_history_is_most_recent_first_with_titles(page_client, tiny_store):
    events = tiny_store.events
    user = events["user_id"].value_counts().index[0]
    resp = page_client.get(f"/v1/users/{user}?limit=7")
    assert resp.status_code == 200
    body = resp.get_json()
    _validate("/v1/users/{user_id}", body)
    mine = events[events["user_id"] == user].sort_values("timestamp", kind="stable")
    expected = mine["product_id"].tolist()[::-1][:7]
    assert [h["id"] for h in body["history"]] == expected
    titles = tiny_store.catalog.set_index("product_id")["title"]
    assert [h["title"] for h in body["history"]] == [titles[p] for p in expected]


@pytest.mark.parametrize(
    "path, status, code",
    [
        ("/v1/users/nobody", 404, "user_not_found"),
        ("/v1/users?limit=0", 422, "invalid_value"),
        ("/v1/users?limit=abc", 422, "invalid_value"),
        ("/v1/users/U00000?limit=201", 422, "invalid_value"),
    ],
)
def test_bad_requests_get_json_errors(page_client, path, status, code):
    resp = page_client.get(path)
    assert resp.status_code == status
    assert resp.get_json()["error"]["code"] == code


def test_without_an_events_table_the_endpoints_say_how_to_set_one(client):
    resp = client.get("/v1/users")
    assert resp.status_code == 404
    error = resp.get_json()["error"]
    assert error["code"] == "events_not_configured" and "RECSYS_EVENTS" in error["message"]


def test_an_unreadable_events_table_is_a_503(serving_store, tmp_path):
    bad = tmp_path / "events.csv"
    bad.write_text("user_id,product_id\nu1,p1\n")
    app = make_app(serving_store, TESTING=True, EVENTS=str(bad))
    try:
        resp = app.test_client().get("/v1/users")
        assert resp.status_code == 503
        assert "event" in resp.get_json()["error"]["message"]
    finally:
        app.extensions["recsys_models"].stop()


def test_page_doctests():
    import doctest

    import serving.page

    assert doctest.testmod(serving.page).failed == 0
