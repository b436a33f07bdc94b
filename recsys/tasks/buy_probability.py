"""Buy probability: P(user buys product) from a user context and a candidate product.

Two towers with shared weights: the backbone encodes the user context (recent products, most
recent first, and an optional query) and the product text once each; `BuyProbabilityHead`
combines the two embeddings with history features computed from the same strings, so training
and serving see identical inputs. Scoring many candidates costs one backbone pass for the user
plus one lookup per catalog product.

Example:
>>> from recsys.backbones import tiny_bert
>>> backbone, text_preprocessor = tiny_bert(sequence_length=16)
>>> preprocessor = BuyProbabilityPreprocessor(text_preprocessor.tokenizer, 16, 8)
>>> model = build_model(backbone, hidden_dim=4)
>>> x = preprocessor({"context": ["red shoe | shoes"], "product": ["red shoe | shoes | mid"]})
>>> tuple(model(x)["buy_logit"].shape)
(1, 1)
"""

from __future__ import annotations

import keras
import tensorflow as tf

from recsys.heads import BuyProbabilityHead, MaskedMeanPooling
from recsys.objectives import Objective

ITEM_SEPARATOR = " ; "
FIELD_SEPARATOR = " | "
QUERY_PREFIX = "query: "
NUM_FEATURES = 4
OUTPUT = "buy_logit"
TEXT_INPUTS = ("token_ids", "padding_mask", "segment_ids")


def _clean(text) -> str:
    return " ".join(str(text).replace(";", ",").replace("|", "/").split())


def item_text(title, category) -> str:
    """One history item as the context shows it.

    >>> item_text("Red; shoe", "shoes")
    'Red, shoe | shoes'
    """
    return f"{_clean(title)}{FIELD_SEPARATOR}{_clean(category)}"


def context_text(items, query=None) -> str:
    """The user context: an optional query, then history items (most recent first).

    >>> context_text(["a | x", "b | y"], query="blue mug")
    'query: blue mug ; a | x ; b | y'
    """
    parts = [f"{QUERY_PREFIX}{_clean(query)}"] if query else []
    return ITEM_SEPARATOR.join(parts + list(items))


def product_text(title, category, brand=None, band=None) -> str:
    """The product side: title, category, brand and price band.

    >>> product_text("Mug", "kitchen", "Acme", "low")
    'Mug | kitchen | Acme | low'
    """
    fields = [_clean(title), _clean(category)]
    fields += [_clean(v) for v in (brand, band) if v]
    return FIELD_SEPARATOR.join(fields)


def history_features(context, product):
    """History features from the raw strings, the same in training and serving.

    Returns `[N, 4]` float32: log(1 + times the product's title is in the history),
    recency of its latest occurrence (1 / (1 + position), 0 if absent), the share of history
    items in the product's category, and log(1 + history length).

    >>> import tensorflow as tf
    >>> f = history_features(tf.constant(["a | x ; b | y ; a | x"]), tf.constant(["a | x | br"]))
    >>> [round(float(v), 3) for v in f[0]]
    [1.099, 1.0, 0.667, 1.386]
    """
    context = tf.convert_to_tensor(context)
    product = tf.convert_to_tensor(product)
    items = tf.strings.split(context, ITEM_SEPARATOR)
    items = tf.ragged.map_flat_values(tf.strings.strip, items)
    is_item = tf.ragged.map_flat_values(
        lambda s: tf.logical_not(tf.strings.regex_full_match(s, f"(?:{QUERY_PREFIX}.*)?")), items
    )
    items = tf.ragged.boolean_mask(items, is_item)
    titles = tf.ragged.map_flat_values(tf.strings.regex_replace, items, r" \| .*$", "")
    categories = tf.ragged.map_flat_values(
        tf.strings.regex_replace, items, r"^[^|]*\| ([^|]*?)(?: \|.*)?$", r"\1"
    )
    product_title = tf.strings.regex_replace(product, r" \| .*$", "")
    product_category = tf.strings.regex_replace(product, r"^[^|]*\| ([^|]*?)(?: \|.*)?$", r"\1")
    sentinel = "\x00"
    titles = titles.to_tensor(default_value=sentinel)
    categories = categories.to_tensor(default_value=sentinel)
    same = tf.cast(tf.equal(titles, product_title[:, None]), tf.float32)
    same_category = tf.cast(tf.equal(categories, product_category[:, None]), tf.float32)
    length = tf.cast(items.row_lengths(), tf.float32)
    positions = tf.cast(tf.range(tf.shape(same)[1]), tf.float32)[None, :]
    recency = tf.reduce_max(same / (1.0 + positions), axis=1)
    count = tf.reduce_sum(same, axis=1)
    share = tf.reduce_sum(same_category, axis=1) / tf.maximum(length, 1.0)
    return tf.stack([tf.math.log1p(count), recency, share, tf.math.log1p(length)], axis=1)


@keras.saving.register_keras_serializable(package="recsys")
class BuyProbabilityPreprocessor(keras.layers.Layer):
    """Raw `{"context", "product"}` strings -> token ids, int32 masks and history features.

    Args:
        tokenizer: a KerasHub BERT tokenizer.
        context_length: int. Tokens for the user context.
        product_length: int. Tokens for the product text.
    """

    def __init__(self, tokenizer, context_length=64, product_length=32, **kwargs):
        super().__init__(**kwargs)
        import keras_hub

        self.tokenizer = tokenizer
        self.context_length, self.product_length = context_length, product_length
        self._packers = {
            name: keras_hub.layers.MultiSegmentPacker(
                sequence_length=length,
                start_value=tokenizer.cls_token_id,
                end_value=tokenizer.sep_token_id,
                pad_value=tokenizer.pad_token_id,
            )
            for name, length in (("context", context_length), ("product", product_length))
        }

    def encode_text(self, name, text):
        """Tokenises and packs one text field; the padding mask is int32 (see DISTRIBUTED.md)."""
        token_ids, segment_ids = self._packers[name](self.tokenizer(text))
        mask = tf.cast(tf.not_equal(token_ids, self.tokenizer.pad_token_id), tf.int32)
        return {"token_ids": token_ids, "padding_mask": mask, "segment_ids": segment_ids}

    def __call__(self, x, *args, **kwargs):
        x = {key: tf.convert_to_tensor(value, dtype=tf.string) for key, value in x.items()}
        return super().__call__(x, *args, **kwargs)

    def call(self, x):
        context = tf.convert_to_tensor(x["context"])
        product = tf.convert_to_tensor(x["product"])
        return {
            "context": self.encode_text("context", context),
            "product": self.encode_text("product", product),
            "features": history_features(context, product),
        }

    def get_config(self):
        return {
            **super().get_config(),
            "tokenizer": keras.saving.serialize_keras_object(self.tokenizer),
            "context_length": self.context_length,
            "product_length": self.product_length,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["tokenizer"] = keras.saving.deserialize_keras_object(config["tokenizer"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="recsys")
class TextEncoder(keras.layers.Layer):
    """A backbone followed by masked mean pooling: token ids -> one vector per text."""

    def __init__(self, backbone, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.pooling = MaskedMeanPooling()

    def call(self, inputs, training=False):
        outputs = self.backbone(
            {
                "token_ids": inputs["token_ids"],
                "padding_mask": inputs["padding_mask"],
                "segment_ids": inputs["segment_ids"],
            },
            training=training,
        )
        sequence = outputs["sequence_output"] if isinstance(outputs, dict) else outputs
        return self.pooling(sequence, inputs["padding_mask"])

    def get_config(self):
        return {**super().get_config(), "backbone": keras.layers.serialize(self.backbone)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.layers.deserialize(config["backbone"])
        return cls(**config)


def _text_inputs(prefix):
    return {
        name: keras.Input(shape=(None,), dtype="int32", name=f"{prefix}_{name}")
        for name in TEXT_INPUTS
    }


def build_model(backbone, hidden_dim=256, dropout=0.1, freeze_backbone=False):
    """The two-tower buy-probability model.

    Args:
        backbone: a KerasHub BERT backbone (shared by both towers).
        hidden_dim: int. Width of the head.
        dropout: float. Head dropout.
        freeze_backbone: bool. Train the head only.

    Returns:
        A `keras.Model` taking `{"context": ..., "product": ..., "features": [N, 4]}` (the
        output of `BuyProbabilityPreprocessor`) and returning `{"buy_logit": [N, 1]}`. Its
        layers `text_encoder` and `buy_head` are used separately by the export's fast path.
    """
    if freeze_backbone:
        backbone.trainable = False
    encoder = TextEncoder(backbone, name="text_encoder")
    head = BuyProbabilityHead(hidden_dim=hidden_dim, dropout=dropout, name="buy_head")
    inputs = {
        "context": _text_inputs("context"),
        "product": _text_inputs("product"),
        "features": keras.Input(shape=(NUM_FEATURES,), dtype="float32", name="features"),
    }
    user = encoder(inputs["context"])
    item = encoder(inputs["product"])
    logit = head(user, item, inputs["features"])
    return keras.Model(inputs=inputs, outputs={OUTPUT: logit}, name="buy_probability")


def objectives():
    """Binary cross-entropy on the buy logit, with AUC and PR-AUC."""
    return [
        Objective(
            OUTPUT,
            keras.losses.BinaryCrossentropy(from_logits=True),
            metrics=(
                keras.metrics.AUC(from_logits=True, name="auc"),
                keras.metrics.AUC(from_logits=True, curve="PR", name="pr_auc"),
            ),
        )
    ]
