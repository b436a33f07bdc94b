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

from recsys.distributed_model import DistributionSafeModel
from recsys.heads import BuyProbabilityHead, MaskedMeanPooling
from recsys.objectives import Objective

ITEM_SEPARATOR = " ; "
FIELD_SEPARATOR = " | "
QUERY_PREFIX = "query: "
BOUGHT_PREFIX = "bought: "
CART_PREFIX = "cart: "
PRICE_PREFIX = "price "
OUTPUT = "buy_logit"
TEXT_INPUTS = ("token_ids", "padding_mask", "segment_ids")
FEATURE_NAMES = (
    "log_times_in_history",
    "log_times_bought",
    "recency",
    "category_share",
    "bought_category",
    "brand_share",
    "bought_brand",
    "log_history_length",
    "log_product_purchases",
    "product_conversion",
    "log_relative_price",
    "log_recent_buyers",
    "sale_recency",
    "log_product_age",
    "mean_title_overlap",
    "max_title_overlap",
    "product_repeat_rate",
    "item_affinity",
    "user_repeat_share",
    "log_buyers_7d",
    "log_buyers_60d",
)
# the last features: the columns of `recsys.tasks.attribute_tastes.AttributeTastes`
TASTE_FEATURES = (
    "taste_logit",
    "category_taste",
    "brand_taste",
    "product_appeal",
    "price_term",
    "taste_variance",
)
FEATURE_NAMES += TASTE_FEATURES
NUM_FEATURES = len(FEATURE_NAMES)
_PRIOR_VIEWS = 10.0


def _clean(text) -> str:
    return " ".join(str(text).replace(";", ",").replace("|", "/").split())


def item_text(title, category, brand=None, bought=False) -> str:
    """One history item as the context shows it; purchases are marked.

    >>> item_text("Red; shoe", "shoes", "Acme", bought=True)
    'bought: Red, shoe | shoes | Acme'
    """
    fields = [_clean(title), _clean(category)] + ([_clean(brand)] if brand else [])
    return (BOUGHT_PREFIX if bought else "") + FIELD_SEPARATOR.join(fields)


def event_prefix(event) -> str:
    """The mark of a history item's event in the context: purchases and carts; views none.

    >>> event_prefix("purchase"), event_prefix("cart"), event_prefix("view")
    ('bought: ', 'cart: ', '')
    """
    return {"purchase": BOUGHT_PREFIX, "cart": CART_PREFIX}.get(event, "")


def context_text(items, query=None) -> str:
    """The user context: an optional query, then history items (most recent first).

    >>> context_text(["a | x", "b | y"], query="blue mug")
    'query: blue mug ; a | x ; b | y'
    """
    parts = [f"{QUERY_PREFIX}{_clean(query)}"] if query else []
    return ITEM_SEPARATOR.join(parts + list(items))


def product_text(title, category, brand=None, band=None) -> str:
    """The product side: title, category, brand and price band.

    >>> product_text("Mug", "kitchen", "Acme", "low"), product_text("Mug", "kitchen", band="low")
    ('Mug | kitchen | Acme | price low', 'Mug | kitchen | price low')
    """
    fields = [_clean(title), _clean(category)] + ([_clean(brand)] if brand else [])
    fields += [f"{PRICE_PREFIX}{_clean(band)}"] if band else []
    return FIELD_SEPARATOR.join(fields)


def _field(strings, index):
    """Field `index` (0 title, 1 category, 2 brand) of `a | b | c` strings; "" when absent."""
    parts = [r"([^|]*?)"] + [r"(?: \| ([^|]*?))?"] * 3
    pattern = r"^" + "".join(parts) + r"(?: \|.*)?$"
    return tf.strings.regex_replace(strings, pattern, f"\\{index + 1}")


_HASH_BUCKETS = 2**62  # word and field fingerprints: collisions are negligible at this size
_PAD = -1  # padding of fingerprint tensors: fingerprints are never negative
_PRODUCT_PAD = -2  # the product's word padding, which must not match the history's


def _fingerprints(strings):
    """int64 fingerprints of strings, compared instead of the strings themselves (faster)."""
    return tf.strings.to_hash_bucket_fast(strings, _HASH_BUCKETS)


def _words(titles, pad=_PAD):
    """`[..., W]` fingerprints of the lowercase words of `titles` (`[...]`), `pad`-padded."""
    words = tf.strings.split(tf.strings.lower(titles))
    return tf.ragged.map_flat_values(_fingerprints, words).to_tensor(default_value=pad)


def _word_overlap(history_words, product_words):
    """Jaccard overlap of `[N, I, W]` history word fingerprints (`_PAD`-padded) with `[N, V]`
    product ones (`_PRODUCT_PAD`-padded)."""
    shared = tf.reduce_any(
        tf.equal(history_words[:, :, :, None], product_words[:, None, None, :]), axis=-1
    )
    shared = tf.reduce_sum(tf.cast(shared, tf.float32), axis=-1)
    history_size = tf.reduce_sum(tf.cast(history_words != _PAD, tf.float32), axis=-1)
    product_size = tf.reduce_sum(tf.cast(product_words != _PRODUCT_PAD, tf.float32), axis=-1)
    union = history_size + product_size[:, None] - shared
    return shared / tf.maximum(union, 1.0)


def title_overlap(history_titles, product_title):
    """Jaccard overlap of lowercase title words between each history item and the product.

    Args:
        history_titles: `[N, I]` string tensor (padding entries are ignored by the caller).
        product_title: `[N]` string tensor.

    >>> import tensorflow as tf
    >>> title_overlap(tf.constant([["red wool hat", "blue mug"]]), tf.constant(["red hat"])).numpy()
    array([[0.6666667, 0.       ]], dtype=float32)
    """
    return _word_overlap(_words(history_titles), _words(product_title, _PRODUCT_PAD))


def _parse_contexts(contexts):
    """The history items of each context, parsed once: `(items, bought, carted)`, ragged
    `[U, (I)]` item texts without their event mark and whether each was a purchase or a cart."""
    items = tf.strings.split(contexts, ITEM_SEPARATOR)
    items = tf.ragged.map_flat_values(tf.strings.strip, items)
    is_item = tf.ragged.map_flat_values(
        lambda s: tf.logical_not(tf.strings.regex_full_match(s, f"(?:{QUERY_PREFIX}.*)?")), items
    )
    items = tf.ragged.boolean_mask(items, is_item)
    bought = tf.ragged.map_flat_values(tf.strings.regex_full_match, items, f"{BOUGHT_PREFIX}.*")
    carted = tf.ragged.map_flat_values(tf.strings.regex_full_match, items, f"{CART_PREFIX}.*")
    marks = f"^(?:{BOUGHT_PREFIX}|{CART_PREFIX})"
    plain = tf.ragged.map_flat_values(tf.strings.regex_replace, items, marks, "")
    return plain, bought, carted


def history_features(
    context, product, product_stats=None, item_affinity=None, attribute_tastes=None
):
    """History and product features from the raw strings, the same in training and serving.

    Returns `[N, NUM_FEATURES]` float32 in the order of `FEATURE_NAMES`: how often the product's
    title appears in the history and among purchases, how recently, the share of history items
    in its category and of its brand, whether the user bought in that category or brand before,
    the history length, the product's purchases, conversion rate and price relative to its
    category's median in the training period, its distinct buyers in the period's last days, how
    recently it last sold and its age (`product_stats(product) -> [N, 9]`, the columns of
    `ProductStats`; zeros when not given), the mean and max title-word overlap between the
    product and the history items, the share of the product's buyers who bought it again, the
    collaborative affinity of the history for the product with the share of the history's
    products bought more than once (a `recsys.tasks.item_affinity.ItemAffinity`, asked once per
    distinct context for its `history` and per pair for its `affinity`; zeros when not given),
    the product's distinct buyers in the last 7 and 60 days, and the candidate's buy logit
    under the user's category and brand tastes estimated from the context with its terms
    (a `recsys.tasks.attribute_tastes.AttributeTastes`; zeros when not given).

    >>> import tensorflow as tf
    >>> f = history_features(tf.constant(["bought: a | x | z ; b | y ; a | x"]),
    ...                      tf.constant(["a | x | z | price low"]))
    >>> [round(float(v), 3) for v in f[0][:8]]
    [1.099, 0.693, 1.0, 0.667, 1.0, 0.333, 1.0, 1.386]
    """
    context = tf.convert_to_tensor(context)
    product = tf.convert_to_tensor(product)
    # Each distinct context and product is parsed once (a user's context is shared by all its
    # candidates); the pairs gather the parsed results. Strings compare as fingerprints.
    contexts, context_of = tf.unique(context)
    products, product_of = tf.unique(product)
    plain, bought, _ = _parse_contexts(contexts)
    splits = plain.row_splits
    fields = [_field(plain.flat_values, i) for i in range(3)]

    def per_item(values, default):  # flat per-item values -> [U, I + 1]
        dense = tf.RaggedTensor.from_row_splits(values, splits).to_tensor(default_value=default)
        # one padding column, so maxima over an all-empty history are 0 rather than -inf
        paddings = [[0, 0], [0, 1]] + [[0, 0]] * (len(dense.shape) - 2)
        return tf.pad(dense, paddings, constant_values=default)

    def to_pairs(values):  # per distinct context -> per pair
        return tf.gather(values, context_of)

    field_ids = [to_pairs(per_item(_fingerprints(f), _PAD)) for f in fields]
    bought = to_pairs(per_item(tf.cast(bought.flat_values, tf.float32), 0.0))
    title_words = per_item(_words(fields[0]), _PAD)  # [U, I + 1, W]
    mine = [_field(products, i) for i in range(3)]
    mine[2] = tf.where(tf.strings.regex_full_match(mine[2], f"{PRICE_PREFIX}.*"), "", mine[2])
    has_brand = tf.gather(tf.cast(tf.strings.length(mine[2]) > 0, tf.float32), product_of)
    mine_ids = [tf.gather(_fingerprints(m), product_of) for m in mine]
    same = [
        tf.cast(tf.equal(f, m[:, None]), tf.float32)
        for f, m in zip(field_ids, mine_ids, strict=True)
    ]
    same[2] = same[2] * has_brand[:, None]
    length = to_pairs(tf.cast(plain.row_lengths(), tf.float32))
    valid = tf.cast(tf.not_equal(field_ids[0], _PAD), tf.float32)
    product_words = tf.gather(_words(mine[0], _PRODUCT_PAD), product_of)
    overlap = _word_overlap(to_pairs(title_words), product_words) * valid
    denominator = tf.maximum(length, 1.0)
    positions = tf.cast(tf.range(tf.shape(same[0])[1]), tf.float32)[None, :]
    if product_stats is None:
        stats = tf.zeros([tf.shape(product)[0], len(ProductStats.COLUMNS)], tf.float32)
    else:
        stats = tf.gather(product_stats(products), product_of)
    if item_affinity is None:
        affinity = tf.zeros([tf.shape(product)[0], 2], tf.float32)
    else:
        rows, first, repeat_share = item_affinity.history(plain.to_tensor(default_value=""))
        pair_affinity = item_affinity.affinity(to_pairs(rows), to_pairs(first), product)
        affinity = tf.stack([pair_affinity, to_pairs(repeat_share)], axis=1)
    if attribute_tastes is None:
        tastes = tf.zeros([tf.shape(product)[0], len(TASTE_FEATURES)], tf.float32)
    else:
        tastes = attribute_tastes(contexts, context_of, product)
    return tf.stack(
        [
            tf.math.log1p(tf.reduce_sum(same[0], axis=1)),
            tf.math.log1p(tf.reduce_sum(same[0] * bought, axis=1)),
            tf.reduce_max(same[0] / (1.0 + positions), axis=1),
            tf.reduce_sum(same[1], axis=1) / denominator,
            tf.reduce_max(same[1] * bought, axis=1),
            tf.reduce_sum(same[2], axis=1) / denominator,
            tf.reduce_max(same[2] * bought, axis=1),
            tf.math.log1p(length),
            tf.math.log1p(stats[:, 0]),
            (stats[:, 0] + 1.0) / (stats[:, 1] + _PRIOR_VIEWS),
            stats[:, 2],
            tf.math.log1p(stats[:, 3]),
            stats[:, 4],
            tf.math.log1p(stats[:, 5]),
            tf.reduce_sum(overlap, axis=1) / denominator,
            tf.reduce_max(overlap, axis=1),
            stats[:, 6],
            affinity[:, 0],
            affinity[:, 1],
            tf.math.log1p(stats[:, 7]),
            tf.math.log1p(stats[:, 8]),
        ]
        + tf.unstack(tastes, num=len(TASTE_FEATURES), axis=1),
        axis=1,
    )


class ProductStats(tf.Module):
    """Per product text, in the graph: training-period purchases, views, log relative price,
    recent distinct buyers, last-sale recency, age in days, the share of its buyers who bought it
    on more than one day and its distinct buyers in the last 7 and 60 days (the columns of
    `recsys.data.buy_pairs.product_counts`).

    Unknown products (inline in a request) get zeros. A model is trained on tables counted
    before each pair's cutoff and evaluated and exported with one counted up to its test period.

    >>> import tensorflow as tf
    >>> stats = ProductStats(["a | x"], [3.0], [9.0], [0.5], [2.0], [0.5], [40.0], [0.25])
    >>> stats(tf.constant(["a | x", "b | y"])).numpy().tolist()  # missing columns are zeros
    [[3.0, 9.0, 0.5, 2.0, 0.5, 40.0, 0.25, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]
    """

    COLUMNS = (
        "purchases",
        "views",
        "relative_price",
        "recent_buyers",
        "sale_recency",
        "age_days",
        "repeat_rate",
        "buyers_7d",
        "buyers_60d",
    )

    def __init__(self, texts, purchases, views, *more):
        super().__init__(name="product_stats")
        texts = list(texts)
        self.size = len(texts)
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(texts, tf.string), tf.range(self.size, dtype=tf.int64)
            ),
            default_value=self.size,
        )
        self.values = tf.Variable(
            self._matrix(purchases, views, *more),
            trainable=False,
            name="product_stats",
        )

    def _matrix(self, *columns):
        """`[size + 1, len(COLUMNS)]`: missing or None columns are zeros, then the unknown row."""
        import numpy as np

        if len(columns) > len(self.COLUMNS):
            raise ValueError(f"ProductStats takes at most the columns {self.COLUMNS}")
        columns += (None,) * (len(self.COLUMNS) - len(columns))
        columns = [np.zeros(self.size) if c is None else c for c in columns]
        values = np.stack([np.asarray(c, "float32") for c in columns], axis=1)
        return np.concatenate([values, np.zeros((1, len(columns)), "float32")])

    def __call__(self, product):
        return tf.gather(self.values, self.table.lookup(product))


@keras.saving.register_keras_serializable(package="recsys")
class BuyProbabilityPreprocessor(keras.layers.Layer):
    """Raw `{"context", "product"}` strings -> token ids, int32 masks and history features.

    Args:
        tokenizer: a KerasHub BERT tokenizer.
        context_length: int. Tokens for the user context.
        product_length: int. Tokens for the product text.
        product_stats: ProductStats or None. Training-period product counts (not serialised
            in the config; they travel in the exported SavedModel).
        item_affinity: ItemAffinity or None. Training-period item-to-item weights (likewise).
        attribute_tastes: AttributeTastes or None. Product appeal and buy-model weights fitted
            on the training period (likewise).
    """

    def __init__(
        self,
        tokenizer,
        context_length=64,
        product_length=32,
        product_stats=None,
        item_affinity=None,
        attribute_tastes=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        import keras_hub

        self.tokenizer = tokenizer
        self.product_stats = product_stats
        self.item_affinity = item_affinity
        self.attribute_tastes = attribute_tastes
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
            "features": history_features(
                context, product, self.product_stats, self.item_affinity, self.attribute_tastes
            ),
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


def build_model(
    backbone,
    hidden_dim=256,
    dropout=0.1,
    freeze_backbone=False,
    interaction="full",
    normalize_features=False,
    taste_offset=False,
):
    """The two-tower buy-probability model.

    Args:
        backbone: a KerasHub BERT backbone (shared by both towers).
        hidden_dim: int. Width of the head.
        dropout: float. Head dropout.
        freeze_backbone: bool. Train the head only.
        interaction: str. How the head combines the embeddings ("full" or "cosine").
        normalize_features: bool. Batch-normalise the history features in the head.
        taste_offset: bool. The head learns a correction to the `taste_logit` feature (set
            with attribute tastes; without them that feature is zero).

    Returns:
        A `keras.Model` taking `{"context": ..., "product": ..., "features": [N, NUM_FEATURES]}` (the
        output of `BuyProbabilityPreprocessor`) and returning `{"buy_logit": [N, 1]}`. Its
        layers `text_encoder` and `buy_head` are used separately by the export's fast path.
    """
    if freeze_backbone:
        backbone.trainable = False
    encoder = TextEncoder(backbone, name="text_encoder")
    head = BuyProbabilityHead(
        hidden_dim=hidden_dim,
        dropout=dropout,
        interaction=interaction,
        normalize_features=normalize_features,
        offset_feature=FEATURE_NAMES.index("taste_logit") if taste_offset else None,
        name="buy_head",
    )
    inputs = {
        "context": _text_inputs("context"),
        "product": _text_inputs("product"),
        "features": keras.Input(shape=(NUM_FEATURES,), dtype="float32", name="features"),
    }
    user = encoder(inputs["context"])
    item = encoder(inputs["product"])
    logit = head(user, item, inputs["features"])
    return DistributionSafeModel(inputs=inputs, outputs={OUTPUT: logit}, name="buy_probability")


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
