"""Loading run configs from YAML, `--set` overrides and validation errors."""

import dataclasses

import pytest
import yaml

from recsys.config import (
    STRATEGIES,
    ConfigError,
    DataConfig,
    ModelConfig,
    TrainConfig,
    apply_overrides,
    load_config,
)

BASE = {
    "task": "buy_probability",
    "name": "buy",
    "data": {"source": "synthetic", "products": 60, "users": 40},
    "model": {"sequence_length": 32, "hidden_dim": 16},
    "train": {"epochs": 2, "batch_size": 8, "learning_rate": 0.001},
}


def _write(tmp_path, values, name="run.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    return path


def _with(section, **values):
    config = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE.items()}
    if section is None:
        config.update(values)
    else:
        config.setdefault(section, {}).update(values)
    return config


def test_load_config_reads_values_and_keeps_defaults(tmp_path):
    config = load_config(_write(tmp_path, BASE))

    assert (config.task, config.name) == (BASE["task"], BASE["name"])
    for section, cls in (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig)):
        loaded = getattr(config, section)
        assert isinstance(loaded, cls)
        for field in dataclasses.fields(cls):
            expected = BASE[section].get(field.name, getattr(cls(), field.name))
            assert getattr(loaded, field.name) == expected, f"{section}.{field.name}"
    assert config.to_dict()["train"]["epochs"] == BASE["train"]["epochs"]


def test_config_is_frozen(tmp_path):
    config = load_config(_write(tmp_path, BASE))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.train.epochs = 10


def test_the_shipped_demo_config_loads():
    config = load_config("training/configs/buy_demo.yaml")
    assert config.task == "buy_probability"


def test_overrides_replace_nested_values_with_yaml_types(tmp_path):
    path = _write(tmp_path, BASE)
    config = load_config(
        path,
        [
            "train.epochs=1",
            "train.learning_rate=3e-4",
            "train.clipnorm=null",
            "model.lora_rank=4",
            "model.freeze_backbone=true",
            "data.text_columns=[title, description]",
            "data.path=shop/events.csv",
            "name=buy-small",
        ],
    )
    assert config.train.epochs == 1 and isinstance(config.train.epochs, int)
    assert config.train.learning_rate == pytest.approx(3e-4)
    assert config.train.clipnorm is None
    assert config.model.lora_rank == 4
    assert config.model.freeze_backbone is True
    assert config.data.text_columns == ("title", "description")
    assert config.data.path == "shop/events.csv"
    assert config.name == "buy-small"
    # untouched values survive
    assert config.train.batch_size == BASE["train"]["batch_size"]
    assert config.model.hidden_dim == BASE["model"]["hidden_dim"]


def test_overrides_can_create_a_section(tmp_path):
    values = {"task": "buy_probability", "name": "buy"}
    config = load_config(_write(tmp_path, values), ["train.seed=7"])
    assert config.train.seed == 7
    assert config.train.epochs == TrainConfig().epochs


def test_exponent_without_a_dot_is_a_number(tmp_path):
    # PyYAML (YAML 1.1) reads `3e-4` as a string.
    path = tmp_path / "run.yaml"
    path.write_text("task: buy_probability\nname: buy\ntrain:\n  learning_rate: 3e-4\n")
    assert yaml.safe_load(path.read_text())["train"]["learning_rate"] == "3e-4"
    assert load_config(path).train.learning_rate == pytest.approx(3e-4)
    with pytest.raises(ConfigError, match="`train.epochs`"):
        load_config(path, ["train.epochs=1e3"])


def test_later_override_wins():
    out = apply_overrides(BASE, ["train.epochs=5", "train.epochs=6"])
    assert out["train"]["epochs"] == 6


def test_apply_overrides_does_not_touch_its_input():
    before = yaml.safe_dump(BASE)
    apply_overrides(BASE, ["train.epochs=9", "data.products=7"])
    assert yaml.safe_dump(BASE) == before


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.epochs", "key.path=value"),
        ("train..epochs=1", "empty key"),
        ("train.epochs.value=1", "'epochs'"),
    ],
)
def test_malformed_overrides(tmp_path, override, fragment):
    with pytest.raises(ConfigError, match="--set") as excinfo:
        load_config(_write(tmp_path, BASE), [override])
    assert fragment in str(excinfo.value)


def test_unknown_top_level_key(tmp_path):
    path = _write(tmp_path, _with(None, optimiser="adam"))
    with pytest.raises(ConfigError, match="optimiser") as excinfo:
        load_config(path)
    assert str(path) in str(excinfo.value)


@pytest.mark.parametrize("section", ["data", "model", "train"])
def test_unknown_section_key(tmp_path, section):
    path = _write(tmp_path, _with(section, typo_key=1))
    with pytest.raises(ConfigError, match=rf"{section}\.typo_key"):
        load_config(path)


def test_unknown_key_from_override(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.epoch\b"):
        load_config(_write(tmp_path, BASE), ["train.epoch=1"])


def test_missing_required_keys(tmp_path):
    values = {k: v for k, v in BASE.items() if k != "name"}
    with pytest.raises(ConfigError, match="name"):
        load_config(_write(tmp_path, values))


@pytest.mark.parametrize(
    "section, values, field",
    [
        ("train", {"epochs": -1}, "train.epochs"),
        ("train", {"epochs": 0}, "train.epochs"),
        ("train", {"epochs": "abc"}, "train.epochs"),
        ("train", {"epochs": 1.5}, "train.epochs"),
        ("train", {"batch_size": True}, "train.batch_size"),
        ("train", {"strategy": "gpu_please"}, "train.strategy"),
        ("train", {"precision": "float8"}, "train.precision"),
        ("train", {"learning_rate": 0}, "train.learning_rate"),
        ("train", {"warmup_fraction": 1.0}, "train.warmup_fraction"),
        ("train", {"clipnorm": "big"}, "train.clipnorm"),
        ("data", {"source": "s3"}, "data.source"),
        ("data", {"validation_fraction": 0.7}, "data.validation_fraction"),
        ("data", {"text_columns": "title"}, "data.text_columns"),
        ("data", {"horizon_days": 0}, "data.horizon_days"),
        ("model", {"dropout": 1.5}, "model.dropout"),
        ("model", {"lora_rank": 0}, "model.lora_rank"),
        ("model", {"loss": "hinge"}, "model.loss"),
        ("model", {"freeze_backbone": "yes"}, "model.freeze_backbone"),
        ("model", {"embedding_interaction": "dot"}, "model.embedding_interaction"),
        (None, {"name": "../x"}, "name"),
        (None, {"name": ""}, "name"),
        (None, {"name": "a/b"}, "name"),
        (None, {"task": "forecasting"}, "task"),
    ],
)
def test_bad_values_name_the_field(tmp_path, section, values, field):
    path = _write(tmp_path, _with(section, **values))
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    message = str(excinfo.value)
    assert f"`{field}`" in message
    assert str(path) in message
    bad = next(iter(values.values()))
    assert repr(bad) in message


def test_every_strategy_is_accepted(tmp_path):
    for strategy in STRATEGIES:
        config = load_config(_write(tmp_path, BASE), [f"train.strategy={strategy}"])
        assert config.train.strategy == strategy


def test_section_must_be_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="`train` must be a mapping"):
        load_config(_write(tmp_path, _with(None, train=[1, 2])))


def test_missing_file(tmp_path):
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError, match="not found") as excinfo:
        load_config(path)
    assert str(path) in str(excinfo.value)


def test_invalid_yaml(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("task: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML") as excinfo:
        load_config(path)
    assert str(path) in str(excinfo.value)


def test_yaml_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- task\n- name\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


def test_exclude_seen_needs_the_full_softmax(tmp_path):
    values = {"task": "ranking", "name": "rk", "model": {"exclude_seen": True}}
    assert load_config(_write(tmp_path, values)).model.exclude_seen
    with pytest.raises(ConfigError, match="exclude_seen"):
        load_config(_write(tmp_path, values), ["model.loss=sampled_softmax"])
