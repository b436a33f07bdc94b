"""Run configuration: frozen dataclasses loaded from YAML, overridable with `--set key.path=value`.

Example:
>>> config = from_dict({"task": "buy_probability", "name": "buy", "train": {"epochs": 1}})
>>> config.train.epochs, config.model.sequence_length
(1, 128)
>>> apply_overrides({"train": {"epochs": 3}}, ["train.epochs=1", "data.path=x.csv"])
{'train': {'epochs': 1}, 'data': {'path': 'x.csv'}}
"""

from __future__ import annotations

import copy
import dataclasses
import pathlib
import re
from typing import Any

import yaml

from recsys.schema import EMBEDDING_INTERACTIONS, TASKS

STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
DATA_SOURCES = (
    "synthetic",
    "reviews",
    "pricerunner",
    "sasrec",
    "movielens",
    "events",
    "retail",
    "unisrec",
    "table",
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message names it."""


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the data comes from and how it is cut into examples."""

    source: str = "synthetic"
    path: str | None = None
    catalog: str | None = None
    # synthetic store scale
    products: int = 2000
    users: int = 3000
    # buy probability: pairs and context
    negatives: int = 4
    history_length: int = 10
    max_pairs: int | None = None
    # next-period pairs: will the user buy within this many days of a cutoff (null: per event)
    horizon_days: int | None = None
    # text classification
    label: str | None = None
    text_columns: tuple = ()
    # splits
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    max_examples: int | None = None
    # ranking: training windows per user (1: the most recent items only, as SASRec)
    windows: int = 1
    # a column of the table naming each row's part: train, validation or test
    split_column: str | None = None

    def __post_init__(self):
        if self.source not in DATA_SOURCES:
            raise ConfigError(
                f"`data.source` must be one of {list(DATA_SOURCES)}. Received: {self.source!r}"
            )
        for name in ("products", "users", "history_length", "windows"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"`data.{name}` must be > 0. Received: {getattr(self, name)}")
        if self.negatives < 0:
            raise ConfigError(f"`data.negatives` must be >= 0. Received: {self.negatives}")
        for name in ("validation_fraction", "test_fraction"):
            if not 0.0 <= getattr(self, name) < 0.5:
                raise ConfigError(
                    f"`data.{name}` must lie in [0, 0.5). Received: {getattr(self, name)}"
                )
        if self.horizon_days is not None and self.horizon_days <= 0:
            raise ConfigError(
                f"`data.horizon_days` must be > 0 or null. Received: {self.horizon_days}"
            )
        if self.max_examples is not None and self.max_examples <= 0:
            raise ConfigError(
                f"`data.max_examples` must be > 0 or null. Received: {self.max_examples}"
            )
        if self.split_column is not None and not self.split_column.strip():
            raise ConfigError("`data.split_column` must be a column name or null. Received: ''")
        object.__setattr__(self, "text_columns", tuple(self.text_columns))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Task-model settings: sequence length, LoRA, head size and task-specific options."""

    sequence_length: int = 128
    product_sequence_length: int = 32
    lora_rank: int | None = None
    freeze_backbone: bool = False
    hidden_dim: int = 256
    dropout: float = 0.1
    # ranking (GPT-2 over item ids)
    num_layers: int = 2
    num_heads: int = 2
    embedding_dim: int = 64
    loss: str = "softmax"
    num_negatives: int = 512
    text_fusion: bool = False
    text_backbone: str = "minilm"  # frozen text encoder for text fusion
    id_dropout: float = 0.0  # text fusion: share of item id embeddings dropped per batch
    exclude_seen: bool = False  # full softmax: leave each position's seen items out of it
    # classification
    multi_label: bool = False
    labels: tuple = ()
    class_weights: str | None = None
    ngram_blend: bool = False  # add a linear model over token n-grams, fitted after training
    neighbour_blend: bool = False  # add votes of the nearest training texts by character n-grams
    # buy probability: L2 penalty of an EASE item-to-item model feeding the affinity feature
    item_affinity_l2: float | None = None
    # buy probability: each user's category and brand tastes estimated from the context
    # (recsys.tasks.attribute_tastes); the head learns a correction to their buy logit
    attribute_tastes: bool = False
    embedding_interaction: str = "full"  # buy probability head: "full" or "cosine"
    normalize_features: bool = False  # buy probability head: batch-normalise the features

    def __post_init__(self):
        if self.sequence_length <= 0:
            raise ConfigError(
                f"`model.sequence_length` must be > 0. Received: {self.sequence_length}"
            )
        if self.lora_rank is not None and self.lora_rank <= 0:
            raise ConfigError(f"`model.lora_rank` must be > 0 or null. Received: {self.lora_rank}")
        for name in ("dropout", "id_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(
                    f"`model.{name}` must lie in [0, 1). Received: {getattr(self, name)}"
                )
        for name in ("num_layers", "num_heads", "embedding_dim", "num_negatives"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"`model.{name}` must be > 0. Received: {getattr(self, name)}")
        if self.loss not in ("softmax", "sampled_softmax"):
            raise ConfigError(
                f"`model.loss` must be 'softmax' or 'sampled_softmax'. Received: {self.loss!r}"
            )
        if self.exclude_seen and self.loss != "softmax":
            raise ConfigError(
                "`model.exclude_seen` needs `model.loss: softmax` (the full softmax). "
                f"Received: loss={self.loss!r}"
            )
        if self.class_weights not in (None, "balanced"):
            raise ConfigError(
                f"`model.class_weights` must be null or 'balanced'. Received: {self.class_weights!r}"
            )
        if self.ngram_blend and self.multi_label:
            raise ConfigError(
                "`model.ngram_blend` applies to multi-class classifiers, not multi-label ones; "
                "set one of them to false"
            )
        if self.neighbour_blend and not self.ngram_blend:
            raise ConfigError(
                "`model.neighbour_blend` is chosen together with the n-gram blend; "
                "set `model.ngram_blend: true` too, or `model.neighbour_blend: false`"
            )
        if self.embedding_interaction not in EMBEDDING_INTERACTIONS:
            raise ConfigError(
                f"`model.embedding_interaction` must be one of {EMBEDDING_INTERACTIONS}. "
                f"Received: {self.embedding_interaction!r}"
            )
        if self.item_affinity_l2 is not None and not self.item_affinity_l2 > 0:
            raise ConfigError(
                "`model.item_affinity_l2` must be > 0 (the EASE penalty) or null (no affinity "
                f"feature). Received: {self.item_affinity_l2}"
            )
        object.__setattr__(self, "labels", tuple(self.labels))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation and distribution settings."""

    strategy: str = "auto"
    precision: str = "auto"
    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    clipnorm: float | None = 1.0
    steps_per_epoch: int | None = None
    early_stopping_patience: int | None = 2
    seed: int = 0

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ConfigError(
                f"`train.strategy` must be one of {list(STRATEGIES)}. Received: {self.strategy!r}"
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"`train.precision` must be one of {list(PRECISIONS)}. Received: {self.precision!r}"
            )
        for name in ("epochs", "batch_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"`train.{name}` must be > 0. Received: {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ConfigError(f"`train.learning_rate` must be > 0. Received: {self.learning_rate}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ConfigError(
                f"`train.warmup_fraction` must lie in [0, 1). Received: {self.warmup_fraction}"
            )
        if self.steps_per_epoch is not None and self.steps_per_epoch <= 0:
            raise ConfigError(
                f"`train.steps_per_epoch` must be > 0 or null. Received: {self.steps_per_epoch}"
            )


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One training run: task, store name, data, backbone, model and training settings."""

    task: str
    name: str
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    backbone: Any = "minilm"
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ConfigError(f"`task` must be one of {list(TASKS)}. Received: {self.task!r}")
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigError(
                "`name` must be 1-64 letters, digits, '_', '-' or '.', starting with a letter or "
                f"digit. Received: {self.name!r}"
            )
        if not isinstance(self.backbone, (str, dict)):
            raise ConfigError(
                "`backbone` must be a preset name, a directory, 'minilm' or a mapping. "
                f"Received: {self.backbone!r}"
            )

    def to_dict(self):
        return dataclasses.asdict(self)


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


def _build(cls, values, prefix):
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"`{prefix}` must be a mapping. Received: {values!r}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(
            f"Unknown key(s) {[f'{prefix}.{k}' for k in unknown]}; "
            f"`{prefix}` accepts {sorted(names)}."
        )
    values = {k: _check_type(f"{prefix}.{k}", names[k].type, v) for k, v in values.items()}
    try:
        return cls(**values)
    except TypeError as e:
        raise ConfigError(f"Bad value in `{prefix}`: {e}") from None


# Python types accepted for each annotation used by the section dataclasses (YAML gives ints
# for whole numbers and lists for sequences).
_ACCEPTED = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
    "tuple": (list, tuple),
}
_WORDS = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "tuple": "a list",
    "None": "null",
}
# PyYAML follows YAML 1.1, which reads `3e-4` (no dot) as a string; accept it for numbers.
_EXPONENT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _check_type(field, annotation, value):
    """Returns `value` if it fits the (string) annotation, e.g. "int | None"; else ConfigError.

    >>> _check_type("train.learning_rate", "float", "3e-4")
    0.0003
    """
    kinds = [k.strip() for k in str(annotation).split("|")]
    if value is None and "None" in kinds:
        return value
    if "float" in kinds and isinstance(value, str) and _EXPONENT.match(value.strip()):
        return float(value)
    for kind in kinds:
        if kind not in _ACCEPTED and kind != "None":
            return value  # not a plain type: left to __post_init__
        accepted = _ACCEPTED.get(kind, ())
        if isinstance(value, accepted) and (kind == "bool" or not isinstance(value, bool)):
            return value
    expected = " or ".join(_WORDS[k] for k in kinds)
    raise ConfigError(f"`{field}` must be {expected}. Received: {value!r}")


def from_dict(values: dict) -> RunConfig:
    """Builds a validated `RunConfig` from plain data; unknown keys are errors."""
    if not isinstance(values, dict):
        raise ConfigError(f"A config must be a mapping. Received: {type(values).__name__}")
    top = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(values) - top)
    if unknown:
        raise ConfigError(f"Unknown top-level key(s) {unknown}; accepted: {sorted(top)}.")
    missing = [k for k in ("task", "name") if k not in values]
    if missing:
        raise ConfigError(f"Missing required key(s) {missing}.")
    kwargs = {k: v for k, v in values.items() if k not in _SECTIONS}
    for key, cls in _SECTIONS.items():
        kwargs[key] = _build(cls, values.get(key), key)
    return RunConfig(**kwargs)


def apply_overrides(values: dict, overrides) -> dict:
    """Applies `key.path=value` strings (values parsed as YAML) to a nested dict copy."""
    out = copy.deepcopy(values)
    for item in overrides or ():
        if "=" not in item:
            raise ConfigError(f"`--set` takes key.path=value. Received: {item!r}")
        path, raw = item.split("=", 1)
        keys = path.strip().split(".")
        if not all(keys):
            raise ConfigError(f"`--set` has an empty key in {path!r}")
        node = out
        for key in keys[:-1]:
            if not isinstance(node.get(key, {}), dict):
                raise ConfigError(f"`--set {path}`: {key!r} is not a section")
            node = node.setdefault(key, {})
        node[keys[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return out


def load_config(path, overrides=()) -> RunConfig:
    """Reads a YAML config file and applies overrides.

    Raises:
        ConfigError: the file is missing or not YAML, or a key or value is wrong.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    try:
        return from_dict(apply_overrides(values, overrides))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
