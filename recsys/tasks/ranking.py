"""Next-item ranking: a GPT-2 backbone over item-id sequences, scored against tied item embeddings.

Item ids are dense indices of an `ItemVocabulary` (0 padding, 1 out-of-vocabulary, items from
2). Sequences are **right-padded**, oldest item first: the first item sits at position 0 and the
most recent at `length - 1`, so learned positions mean the same in training and serving, and a
batch of short histories can be padded to its own length. The causal mask lets position `t` see
items `0..t` only, so one pass trains every position (targets are the inputs shifted by one), as
SASRec does. An item's score is the dot product of the last hidden state with its row of the
backbone's token-embedding table (tied weights), plus a projection of a frozen text embedding of
the item when text fusion is on (`RankingHead`).

The loss (`next_item_loss`, computed by the model's `compute_loss`) is softmax cross-entropy over the whole catalog, or over sampled
negatives for catalogs too large for that.

Example:
>>> import numpy as np
>>> model = build_model(num_items=12, sequence_length=8, num_layers=1, num_heads=1, hidden_dim=4)
>>> ids = pad_right([[2, 3, 4], [5]], 8)
>>> ids.tolist()[1]
[5, 0, 0, 0, 0, 0, 0, 0]
>>> tuple(model.predict({"item_ids": ids}, verbose=0)["sequence_output"].shape)
(2, 8, 4)
>>> scores = model.scores(model.last_hidden(ids)).numpy()
>>> scores.shape, bool(np.all(scores[:, :2] < -1e8))
((2, 12), True)
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from recsys.distributed_model import DistributionSafeMixin, replica_mean, replica_share
from recsys.heads import RankingHead
from recsys.schema import NUM_RESERVED_IDS, PAD_ID

INPUT = "item_ids"
OUTPUT = "sequence_output"
# Logit given to the reserved ids (padding, OOV) so that they never win a softmax or a top-k.
RESERVED_LOGIT = -1e9


@keras.saving.register_keras_serializable(package="recsys")
class NextItemModel(DistributionSafeMixin, keras.Model):
    """A GPT-2 backbone over item ids plus a `RankingHead` tied to its token embeddings.

    With `DistributionSafeMixin` it trains under `MirroredStrategy` and
    `MultiWorkerMirroredStrategy`; its `compute_loss` scales the loss for the replicas itself.

    Args:
        backbone: `keras_hub.models.GPT2Backbone` whose vocabulary is the item vocabulary.
        head: `RankingHead` with the backbone's `hidden_dim`.
        text_dim: int. Width of the frozen item text embeddings (0: no text fusion). With text
            fusion the model holds two non-trainable weights: `item_text` (`[V, text_dim]`) and
            `item_warm` (`[V]`, 1 for items seen in training, 0 for cold ones, whose id
            embedding is then ignored so that their text alone places them).
        num_negatives: int or None. The loss: None for the full softmax over the catalog, an
            int for sampled softmax with that many shared negatives (`next_item_loss`).
        id_dropout: float. With text fusion, the share of items whose id embedding is dropped
            in each training batch (as DropoutNet does), so that the text projection alone
            learns to place items: what cold items get.
        exclude_seen: bool. Full softmax only: leave the items a position has already seen
            out of its softmax, as the evaluation and `recommend` leave the history out of the
            ranking (`seen_items`), so training does not spend effort pushing them down.

    Call: `{"item_ids": int [B, L]}` (right-padded) -> `{"sequence_output": [B, L, D]}`.
    """

    def __init__(
        self,
        backbone,
        head,
        text_dim=0,
        num_negatives=None,
        id_dropout=0.0,
        exclude_seen=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0.0 <= float(id_dropout) < 1.0:
            raise ValueError(f"`id_dropout` must lie in [0, 1). Received: {id_dropout}")
        self.id_dropout = float(id_dropout)
        self.backbone, self.head, self.text_dim = backbone, head, int(text_dim)
        if num_negatives is not None and int(num_negatives) < 1:
            raise ValueError(f"`num_negatives` must be >= 1 or None. Received: {num_negatives}")
        self.num_negatives = None if num_negatives is None else int(num_negatives)
        if exclude_seen and self.num_negatives is not None:
            raise ValueError(
                "`exclude_seen` works with the full softmax only (`num_negatives=None`). "
                f"Received: num_negatives={num_negatives}"
            )
        self.exclude_seen = bool(exclude_seen)
        vocabulary_size = backbone.vocabulary_size
        if self.text_dim:
            self.item_text = self.add_weight(
                shape=(vocabulary_size, self.text_dim),
                initializer="zeros",
                trainable=False,
                name="item_text",
            )
            self.item_warm = self.add_weight(
                shape=(vocabulary_size,), initializer="ones", trainable=False, name="item_warm"
            )
        reserved = np.zeros(vocabulary_size, "float32")
        reserved[:NUM_RESERVED_IDS] = RESERVED_LOGIT
        self._reserved = reserved

    @property
    def vocabulary_size(self):
        return self.backbone.vocabulary_size

    @property
    def hidden_dim(self):
        return self.backbone.hidden_dim

    def build(self, input_shape=None):
        if self.text_dim:  # builds the head's text projection
            self.head.item_vectors(
                np.zeros((1, self.hidden_dim), "float32"), np.zeros((1, self.text_dim), "float32")
            )
        self.built = True

    def call(self, inputs, training=False):
        ids = ops.cast(inputs[INPUT], "int32")
        mask = ops.cast(ops.not_equal(ids, PAD_ID), "int32")
        hidden = self.backbone({"token_ids": ids, "padding_mask": mask}, training=training)
        return {OUTPUT: hidden}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Mean `next_item_loss` over the positions with a target (`y` as `y_pred`: a dict).

        Under a distribution strategy this is the replica's share of the mean over the global
        batch's positions (`replica_mean`), so the replicas' summed gradients equal one
        device's gradients on the whole batch.
        """
        seen = x[INPUT] if self.exclude_seen else None
        losses = next_item_loss(
            self, y[OUTPUT], y_pred[OUTPUT], self.num_negatives, training=training, seen=seen
        )
        loss = replica_mean(losses)
        if self.losses:
            loss = loss + replica_share(ops.sum(self.losses))
        return loss

    def set_item_text(self, embeddings, warm):
        """Loads the frozen text embeddings `[V, text_dim]` and the warm-item flags `[V]`."""
        if not self.text_dim:
            raise ValueError("This model was built without text fusion (`text_dim=0`).")
        self.item_text.assign(np.asarray(embeddings, "float32"))
        self.item_warm.assign(np.asarray(warm, "float32"))

    def id_mask(self, training=False):
        """`[V]` flags of the id embeddings used: the warm items, minus `id_dropout` of them
        in training; None without text fusion."""
        if not self.text_dim:
            return None
        if not (training and self.id_dropout):
            return self.item_warm
        import tensorflow as tf

        keep = tf.random.uniform([self.vocabulary_size]) >= self.id_dropout
        return self.item_warm * tf.cast(keep, tf.float32)

    def item_vectors(self, rows=None, id_mask=None):
        """Item vectors `[V, D]` (or of the ids `rows`, `[M, D]`) that hidden states score.

        `id_mask` (`[V]`) replaces the warm-item flags (see `id_mask`)."""
        table = self.backbone.token_embedding.embeddings
        text = self.item_text if self.text_dim else None
        if rows is not None:
            table = ops.take(table, rows, axis=0)
        if self.text_dim:
            warm = self.item_warm if id_mask is None else id_mask
            warm = warm if rows is None else ops.take(warm, rows, axis=0)
            text = text if rows is None else ops.take(text, rows, axis=0)
            table = ops.cast(table, "float32") * ops.expand_dims(warm, -1)
        return self.head.item_vectors(table, text)

    def scores(self, hidden, id_mask=None):
        """Logits `[B, V]` of hidden states `[B, D]` against every item; reserved ids get -1e9."""
        vectors = self.item_vectors(id_mask=id_mask)
        logits = ops.matmul(ops.cast(hidden, "float32"), ops.transpose(vectors))
        return logits + ops.convert_to_tensor(self._reserved)

    def last_hidden(self, item_ids):
        """The final hidden state `[B, D]` at each row's last item (inference only).

        Runs the backbone's own layers, but the last transformer layer only for each row's last
        position (its keys and values still come from every position): the result equals
        `self(...)[OUTPUT]` at that position at about half the cost. A row without items gives
        a finite but meaningless vector.
        """
        ids = ops.cast(item_ids, "int32")
        valid = ops.not_equal(ids, PAD_ID)
        mask = ops.cast(valid, "int32")
        last = ops.maximum(ops.sum(mask, axis=1) - 1, 0)
        index = ops.reshape(last, (-1, 1, 1))
        backbone = self.backbone
        layers = backbone.transformer_layers
        if not getattr(layers[-1], "normalize_first", False):  # not GPT-2's pre-norm layout
            hidden = self(item_ids)[OUTPUT]
            return ops.take_along_axis(hidden, index, axis=1)[:, 0]
        tokens = backbone.token_embedding(ids)
        x = backbone.embeddings_add((tokens, backbone.position_embedding(tokens)))
        for layer in layers[:-1]:
            x = layer(x, decoder_padding_mask=mask)
        layer = layers[-1]
        normed = layer._self_attention_layer_norm(x)
        query = ops.take_along_axis(normed, index, axis=1)
        attended = layer._self_attention_layer(
            query=query, value=normed, key=normed, attention_mask=ops.expand_dims(valid, 1)
        )
        y = ops.take_along_axis(x, index, axis=1) + attended
        z = layer._feedforward_intermediate_dense(layer._feedforward_layer_norm(y))
        y = y + layer._feedforward_output_dense(z)
        return backbone.layer_norm(y)[:, 0]

    def get_config(self):
        return {
            **super().get_config(),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "head": keras.saving.serialize_keras_object(self.head),
            "text_dim": self.text_dim,
            "num_negatives": self.num_negatives,
            "id_dropout": self.id_dropout,
            "exclude_seen": self.exclude_seen,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        config["head"] = keras.saving.deserialize_keras_object(config["head"])
        return cls(**config)


def build_model(
    num_items,
    sequence_length,
    num_layers=2,
    num_heads=2,
    hidden_dim=64,
    dropout=0.2,
    intermediate_dim=None,
    text_dim=0,
    num_negatives=None,
    id_dropout=0.0,
    exclude_seen=False,
):
    """A randomly initialised next-item model over a GPT-2 backbone.

    Args:
        num_items: int. Vocabulary size, reserved ids included (`len(ItemVocabulary)`).
        sequence_length: int. The longest history the model reads (learned positions).
        num_layers, num_heads, hidden_dim: int. Backbone size; `hidden_dim` is also the
            item-embedding width.
        dropout: float. Dropout in the backbone (embeddings, attention, feed-forward).
        intermediate_dim: int or None. Feed-forward width (default `4 * hidden_dim`).
        text_dim: int. Width of frozen item text embeddings to fuse (0: none); load them with
            `model.set_item_text(...)`.
        num_negatives: int or None. None: full softmax loss; an int: sampled softmax.
        id_dropout: float. With text fusion, the share of id embeddings dropped per batch.
        exclude_seen: bool. Full softmax only: each position's softmax leaves out the items
            it has already seen.

    Returns:
        A built `NextItemModel`.
    """
    from recsys import backbones

    if num_items <= NUM_RESERVED_IDS:
        raise ValueError(f"`num_items` must exceed {NUM_RESERVED_IDS}. Received: {num_items}")
    spec = {
        "family": "gpt2",
        "vocabulary_size": int(num_items),
        "num_layers": int(num_layers),
        "num_heads": int(num_heads),
        "hidden_dim": int(hidden_dim),
        "intermediate_dim": int(intermediate_dim or 4 * hidden_dim),
        "dropout": float(dropout),
        "max_sequence_length": int(sequence_length),
    }
    backbone, _ = backbones.resolve(spec, sequence_length=int(sequence_length))
    head = RankingHead(hidden_dim, text_fusion=bool(text_dim), name="ranking_head")
    model = NextItemModel(
        backbone,
        head,
        text_dim=text_dim,
        num_negatives=num_negatives,
        id_dropout=id_dropout,
        exclude_seen=exclude_seen,
        name="next_item",
    )
    model({INPUT: np.zeros((1, 2), "int32")})
    return model


def seen_items(item_ids, vocabulary_size):
    """`[B, L, V]` bool: whether item `v` is among `item_ids[b, :t + 1]` (reserved ids never).

    >>> seen_items([[2, 3, 0]], 5).numpy().astype(int).tolist()
    [[[0, 0, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 0]]]
    """
    import tensorflow as tf

    ids = tf.cast(item_ids, tf.int32)
    counts = tf.math.cumsum(tf.one_hot(ids, vocabulary_size, dtype=tf.float32), axis=1)
    reserved = tf.range(vocabulary_size) < NUM_RESERVED_IDS
    return tf.logical_and(counts > 0.0, tf.logical_not(reserved))


def next_item_loss(model, y_true, y_pred, num_negatives=None, training=False, seen=None):
    """Softmax cross-entropy of every position's next item, over the catalog or sampled items.

    This is the one place the ranking loss lives (`NextItemModel.compute_loss` calls it).

    Args:
        model: NextItemModel. Supplies the item vectors.
        y_true: int `[B, L]` next-item ids, `PAD_ID` where a position has no target.
        y_pred: `[B, L, D]` backbone output. Positions without a target are dropped before
            any item is scored, so padding costs nothing.
        num_negatives: None for the full softmax over every item (reserved ids excluded): the
            "SASRec+" finding that full cross-entropy beats SASRec's sampled binary loss. An
            int for sampled softmax: that many ids are drawn uniformly from the catalog once
            per batch and shared by all its positions; each position's logits are its target
            and those draws (a draw equal to the position's target is masked out). Uniform
            draws make the usual log-Q correction a constant, so it is left out. Memory is
            `O(positions * num_negatives)` instead of `O(positions * V)`.
        training: bool. Applies the model's `id_dropout` (text fusion).
        seen: int `[B, L]` input ids or None. Full softmax only: each position's logits of the
            items among `seen[b, :t + 1]` are set to `RESERVED_LOGIT` (its own target never).

    Returns:
        float32 `[N]`: the loss of each scored position.
    """
    import tensorflow as tf

    targets = tf.cast(y_true, tf.int32)
    scored = targets >= NUM_RESERVED_IDS
    hidden = tf.cast(tf.boolean_mask(y_pred, scored), tf.float32)  # [N, D]
    targets = tf.boolean_mask(targets, scored)  # [N]
    id_mask = model.id_mask(training)
    if not num_negatives:
        logits = model.scores(hidden, id_mask=id_mask)
        if seen is not None:
            mask = tf.boolean_mask(seen_items(seen, model.vocabulary_size), scored)  # [N, V]
            mask &= tf.not_equal(tf.range(model.vocabulary_size)[None, :], targets[:, None])
            logits = tf.where(mask, tf.cast(RESERVED_LOGIT, logits.dtype), logits)
        return tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits)
    negatives = tf.random.uniform(
        [num_negatives], NUM_RESERVED_IDS, model.vocabulary_size, dtype=tf.int32
    )
    positive = tf.reduce_sum(hidden * model.item_vectors(targets, id_mask), axis=-1)
    negative = tf.matmul(hidden, model.item_vectors(negatives, id_mask), transpose_b=True)
    negative = tf.where(tf.equal(targets[:, None], negatives[None, :]), RESERVED_LOGIT, negative)
    logits = tf.concat([positive[:, None], negative], axis=1)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(tf.zeros_like(targets), logits)


def objectives():
    """No compiled objectives: `NextItemModel.compute_loss` computes the loss itself."""
    return []


def pad_right(sequences, length):
    """The most recent `length` items of each sequence, left-aligned and padded with `PAD_ID`.

    >>> pad_right([[2, 3, 4, 5], [6]], 3).tolist()
    [[3, 4, 5], [6, 0, 0]]
    """
    out = np.full((len(sequences), int(length)), PAD_ID, dtype=np.int32)
    for row, items in enumerate(sequences):
        items = list(items)[-int(length) :] if length else []
        out[row, : len(items)] = items
    return out


def training_windows(items, sequence_length, max_windows=1):
    """Cuts one user's training items into windows of at most `sequence_length + 1` items.

    A window's inputs are its items but the last and its targets its items but the first. The
    first window is the most recent (SASRec trains on it alone: `max_windows=1`); each earlier
    window ends where the next one starts, so together they predict every item but the first.

    >>> training_windows([1, 2, 3, 4, 5, 6], 2, max_windows=5)
    [[4, 5, 6], [2, 3, 4], [1, 2]]
    >>> training_windows([1, 2, 3, 4, 5, 6], 2)
    [[4, 5, 6]]
    """
    items = list(items)
    windows, end = [], len(items)
    while end >= 2 and len(windows) < max_windows:
        start = max(0, end - sequence_length - 1)
        windows.append(items[start:end])
        end = start + 1
    return windows


def item_text(row):
    """The text embedded for an item with text fusion: title, category and description.

    >>> item_text({"title": "Heat (1995)", "category": "Action",
    ...            "description": "Action, Crime, Thriller"})
    'Heat (1995) | Action | Action, Crime, Thriller'
    """
    parts = [row.get("title"), row.get("category"), row.get("description")]
    return " | ".join(str(p) for p in parts if isinstance(p, str) and p)


def encode_texts(texts, backbone="minilm", sequence_length=48, batch_size=128):
    """Frozen text embeddings `[len(texts), hidden]` (masked mean, L2-normalised); "" gives 0.

    Args:
        texts: list of str.
        backbone: a backbone spec for `recsys.backbones.resolve` (BERT family).
        sequence_length: int. Tokens per text.
        batch_size: int.
    """
    import tensorflow as tf

    from recsys import backbones
    from recsys.export import embed_texts
    from recsys.tasks.buy_probability import TextEncoder

    text_backbone, preprocessor = backbones.resolve(backbone, sequence_length=sequence_length)
    encoder = TextEncoder(text_backbone)

    @tf.function
    def encode(batch):
        x = preprocessor(batch)
        return encoder({**x, "padding_mask": tf.cast(x["padding_mask"], tf.int32)})

    texts = [str(t) for t in texts]
    out = embed_texts(encode, texts, batch_size=batch_size)
    out[[not t for t in texts]] = 0.0
    return out
