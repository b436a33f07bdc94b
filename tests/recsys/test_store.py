"""The versioned model store: publish, resolve, names and `recsys models` output."""

import json

import pytest

from recsys import store
from recsys.schema import MODEL_CARD


def _card_writer(card=None):
    card = card or {"task": "buy_probability"}

    def write(directory):
        (directory / MODEL_CARD).write_text(json.dumps(card))
        (directory / "saved_model.pb").write_bytes(b"\x00")

    return write


def _hidden_entries(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_publish_numbers_versions_from_one(tmp_path):
    paths = [store.publish(tmp_path, "buy", _card_writer()) for _ in range(3)]

    assert [p.name for p in paths] == ["1", "2", "3"]
    assert all(p.parent == tmp_path / "buy" for p in paths)
    assert all((p / MODEL_CARD).is_file() and (p / "saved_model.pb").is_file() for p in paths)
    assert store.versions(tmp_path, "buy") == [1, 2, 3]
    assert store.list_models(tmp_path) == {"buy": [1, 2, 3]}
    assert _hidden_entries(tmp_path / "buy") == []


def test_publish_keeps_models_apart(tmp_path):
    store.publish(tmp_path, "buy", _card_writer())
    store.publish(tmp_path, "buy", _card_writer())
    store.publish(tmp_path, "ranking", _card_writer({"task": "ranking"}))
    assert store.list_models(tmp_path) == {"buy": [1, 2], "ranking": [1]}


def test_publish_writes_into_a_hidden_temporary_directory(tmp_path):
    seen = []

    def write(directory):
        seen.append(directory)
        assert directory.name.startswith(".")
        assert store.versions(tmp_path, "buy") == []  # not visible while being written
        _card_writer()(directory)

    path = store.publish(tmp_path, "buy", write)
    assert not seen[0].exists()
    assert (path / MODEL_CARD).is_file()


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failing_write_leaves_no_version_and_no_temp_directory(tmp_path, error):
    store.publish(tmp_path, "buy", _card_writer())

    def write(directory):
        (directory / "half_written.bin").write_bytes(b"partial")
        raise error

    with pytest.raises(type(error)):
        store.publish(tmp_path, "buy", write)

    assert store.versions(tmp_path, "buy") == [1]
    assert sorted(p.name for p in (tmp_path / "buy").iterdir()) == ["1"]
    # the next publish still gets the next number
    assert store.publish(tmp_path, "buy", _card_writer()).name == "2"


def test_failing_first_write_publishes_nothing(tmp_path):
    def write(directory):
        raise OSError("no space left")

    with pytest.raises(OSError, match="no space"):
        store.publish(tmp_path, "buy", write)
    assert store.list_models(tmp_path) == {}
    assert _hidden_entries(tmp_path / "buy") == []


def test_resolve_newest_and_explicit_version(tmp_path):
    for _ in range(3):
        store.publish(tmp_path, "buy", _card_writer())

    assert store.resolve(tmp_path, "buy") == tmp_path / "buy" / "3"
    assert store.resolve(tmp_path, "buy", 2) == tmp_path / "buy" / "2"
    assert store.resolve(tmp_path, "buy", "1") == tmp_path / "buy" / "1"


def test_resolve_ignores_folders_that_are_not_versions(tmp_path):
    store.publish(tmp_path, "buy", _card_writer())
    (tmp_path / "buy" / ".tmp-abandoned").mkdir()
    (tmp_path / "buy" / "0").mkdir()
    (tmp_path / "buy" / "notes").mkdir()
    assert store.versions(tmp_path, "buy") == [1]
    assert store.resolve(tmp_path, "buy") == tmp_path / "buy" / "1"


def test_unknown_model(tmp_path):
    store.publish(tmp_path, "buy", _card_writer())
    with pytest.raises(store.StoreError, match="ranking") as excinfo:
        store.resolve(tmp_path, "ranking")
    assert "buy" in str(excinfo.value)  # lists what is there


def test_unknown_model_in_missing_store(tmp_path):
    with pytest.raises(store.StoreError, match="buy"):
        store.resolve(tmp_path / "nowhere", "buy")


@pytest.mark.parametrize("version", [0, 3, "7", "latest", -1])
def test_unknown_version(tmp_path, version):
    store.publish(tmp_path, "buy", _card_writer())
    store.publish(tmp_path, "buy", _card_writer())
    with pytest.raises(store.StoreError) as excinfo:
        store.resolve(tmp_path, "buy", version)
    assert str(version) in str(excinfo.value)


@pytest.mark.parametrize("name", ["../x", "", ".hidden", "a/b", "a" * 65, None, 3])
def test_invalid_names_are_refused(tmp_path, name):
    with pytest.raises(store.StoreError, match="Invalid model name"):
        store.publish(tmp_path, name, _card_writer())
    with pytest.raises(store.StoreError, match="Invalid model name"):
        store.resolve(tmp_path, name)
    with pytest.raises(store.StoreError, match="Invalid model name"):
        store.versions(tmp_path, name)
    assert list(tmp_path.iterdir()) == []
    assert not (tmp_path.parent / "x").exists()


@pytest.mark.parametrize("name", ["buy", "buy-v2", "Ranking_1", "a.b", "a" * 64])
def test_check_name_accepts_plain_names(name):
    assert store.check_name(name) == name


def test_resolve_path(tmp_path):
    for _ in range(3):
        store.publish(tmp_path, "buy", _card_writer())

    assert store.resolve_path(tmp_path / "buy") == tmp_path / "buy" / "3"
    assert store.resolve_path(tmp_path / "buy" / "2") == tmp_path / "buy" / "2"
    assert store.resolve_path(str(tmp_path / "buy" / "3")) == tmp_path / "buy" / "3"


@pytest.mark.parametrize("relative", ["buy/9", "nothing", "."])
def test_resolve_path_refuses_what_is_not_a_model(tmp_path, relative):
    store.publish(tmp_path, "buy", _card_writer())
    (tmp_path / "nothing").mkdir()
    with pytest.raises(store.StoreError, match=MODEL_CARD):
        store.resolve_path(tmp_path / relative)


def test_print_models_on_an_empty_store_says_how_to_train(tmp_path, capsys):
    for root in (tmp_path, tmp_path / "missing"):
        assert store.print_models(root) == 0
        out = capsys.readouterr().out
        assert str(root) in out
        assert "recsys train" in out


def test_print_models_lists_task_and_headline_metrics(tmp_path, capsys):
    card = {
        "task": "buy_probability",
        "created_at": "2024-05-01T12:30:00+00:00",
        "headline_metrics": {"roc_auc": 0.81234567, "pairs": 1200},
    }
    store.publish(tmp_path, "buy", _card_writer(card))
    store.publish(tmp_path, "ranker", _card_writer({"task": "ranking"}))

    assert store.print_models(tmp_path) == 0
    lines = capsys.readouterr().out.splitlines()

    assert "task" in lines[0] and "metrics" in lines[0]
    buy = next(line for line in lines if line.startswith("buy "))
    assert buy.split()[:3] == ["buy", "1", card["task"]]
    assert f"roc_auc={card['headline_metrics']['roc_auc']:.4f}" in buy
    assert f"pairs={card['headline_metrics']['pairs']}" in buy
    assert card["created_at"][:19] in buy
    ranker = next(line for line in lines if line.startswith("ranker "))
    assert ranker.split()[:3] == ["ranker", "1", "ranking"]


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe", b'{"task": null}'])
def test_print_models_survives_a_bad_card(tmp_path, capsys, content):
    path = store.publish(tmp_path, "buy", _card_writer())
    (path / MODEL_CARD).write_bytes(content)

    assert store.print_models(tmp_path) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("buy"))
    assert line.split()[:2] == ["buy", "1"]


def test_read_card_round_trips(tmp_path):
    card = {"task": "ranking", "headline_metrics": {"ndcg_at_10": 0.5}}
    path = store.publish(tmp_path, "ranker", _card_writer(card))
    assert store.read_card(path) == card
    with pytest.raises(store.StoreError, match=MODEL_CARD):
        store.read_card(tmp_path)
