"""Text classification: a BERT backbone, mean pooling and a classification head.

Multi-class (softmax over classes) or multi-label (one sigmoid per label, each with its own
decision threshold). The task model takes the preprocessor's token ids and returns
`{"class_logits": [N, C]}`; raw text becomes token ids in `TextClassificationPreprocessor`,
which also runs inside the exported SavedModel.

Example:
>>> from recsys.backbones import tiny_bert
>>> backbone, text_preprocessor = tiny_bert(sequence_length=16)
>>> preprocessor = TextClassificationPreprocessor(text_preprocessor.tokenizer, 16)
>>> model = build_model(backbone, num_classes=3, hidden_dim=4)
>>> tuple(model(preprocessor(["red shoes", "a blue mug"]))["class_logits"].shape)
(2, 3)
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from recsys.distributed_model import DistributionSafeModel
from recsys.heads import ClassificationHead
from recsys.objectives import Objective
from recsys.tasks.buy_probability import TextEncoder

OUTPUT = "class_logits"
TEXT_INPUTS = ("token_ids", "padding_mask", "segment_ids")
DEFAULT_THRESHOLD = 0.5


def check_labels(labels) -> tuple:
    """Validates a label set: at least two distinct, non-empty names.

    Raises:
        ValueError: fewer than two labels, a repeated or an empty name.

    >>> check_labels(["neg", "pos"])
    ('neg', 'pos')
    """
    labels = tuple(str(label) for label in labels)
    if len(labels) < 2:
        raise ValueError(
            "A classifier needs at least two classes (labels); the data has "
            f"{len(labels)}: {list(labels)}. Check `data.label` or add examples of other classes."
        )
    if len(set(labels)) != len(labels) or not all(labels):
        raise ValueError(f"Label names must be distinct and non-empty. Received: {list(labels)}")
    return labels


def balanced_class_weights(class_ids, num_classes) -> np.ndarray:
    """`n / (C * count_c)` per class, as scikit-learn's "balanced" (0 for absent classes).

    >>> balanced_class_weights([0, 0, 0, 1], 2).tolist()
    [0.6666666666666666, 2.0]
    """
    counts = np.bincount(np.asarray(class_ids, dtype=np.int64), minlength=num_classes)
    with np.errstate(divide="ignore"):
        weights = len(class_ids) / (num_classes * counts.astype(np.float64))
    return np.where(counts > 0, weights, 0.0)


def positive_weights(targets, max_weight=100.0) -> np.ndarray:
    """Multi-label "balanced": each label's negatives / positives (clipped to [1, max_weight]).

    >>> positive_weights(np.array([[1, 0], [1, 1], [0, 0], [1, 0]])).tolist()
    [1.0, 3.0]
    """
    targets = np.asarray(targets, dtype=np.float64)
    positives = targets.sum(axis=0)
    negatives = len(targets) - positives
    return np.clip(negatives / np.maximum(positives, 1.0), 1.0, max_weight)


def tune_thresholds(targets, probabilities, default=DEFAULT_THRESHOLD) -> np.ndarray:
    """Per-label thresholds that maximise each label's F1 (`default` for labels never seen).

    Args:
        targets: `[N, C]` 0/1 array.
        probabilities: `[N, C]` float array.
        default: float. Threshold for a label with no positive example.

    Returns:
        `[C]` float32 thresholds; a label is predicted when its probability is >= its threshold.

    >>> tune_thresholds([[1, 0], [0, 0], [1, 0]], [[0.3, 0.9], [0.2, 0.1], [0.35, 0.2]]).tolist()
    [0.30000001192092896, 0.5]
    """
    targets = np.asarray(targets, dtype=bool)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    thresholds = np.full(targets.shape[1], default, dtype=np.float64)
    for c in range(targets.shape[1]):
        positives = int(targets[:, c].sum())
        if positives == 0:
            continue
        order = np.argsort(-probabilities[:, c], kind="stable")
        scores, hits = probabilities[order, c], targets[order, c]
        true_positives = np.cumsum(hits)
        f1 = 2 * true_positives / (np.arange(1, len(scores) + 1) + positives)
        last = np.r_[scores[1:] != scores[:-1], True]  # only cut between distinct scores
        best = int(np.argmax(np.where(last, f1, -1.0)))
        thresholds[c] = scores[best]
    return thresholds.astype(np.float32)


def probabilities_from_logits(logits, multi_label=False) -> np.ndarray:
    """Softmax (multi-class) or per-label sigmoid (multi-label) of `[N, C]` logits, as numpy.

    >>> probabilities_from_logits(np.array([[0.0, 0.0]])).tolist()
    [[0.5, 0.5]]
    """
    logits = np.asarray(logits, dtype=np.float64)
    if multi_label:
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32)


@keras.saving.register_keras_serializable(package="recsys")
class TextClassificationPreprocessor(keras.layers.Layer):
    """Raw strings `[N]` -> token ids, int32 padding mask and segment ids `[N, T]`.

    Texts are truncated to `sequence_length` tokens ([CLS] and [SEP] included); `T` is the
    longest text in the batch rounded up to a multiple of `pad_to_multiple_of` (at most
    `sequence_length`), so short texts do not pay for the longest possible padding. Masked
    positions change nothing, so the model's outputs do not depend on `T`.

    Args:
        tokenizer: a KerasHub BERT tokenizer.
        sequence_length: int. Maximum tokens per text.
        pad_to_multiple_of: int. Rounds the trimmed length up (few distinct shapes for XLA).

    >>> from recsys.backbones import tiny_bert
    >>> _, text_preprocessor = tiny_bert(sequence_length=32)
    >>> preprocessor = TextClassificationPreprocessor(text_preprocessor.tokenizer, 32)
    >>> x = preprocessor(["red", "a much longer text"])
    >>> tuple(x["token_ids"].shape), x["padding_mask"].dtype.name
    ((2, 24), 'int32')
    """

    def __init__(self, tokenizer, sequence_length=128, pad_to_multiple_of=8, **kwargs):
        super().__init__(**kwargs)
        import keras_hub

        if int(sequence_length) < 3:
            raise ValueError(f"`sequence_length` must be >= 3. Received: {sequence_length}")
        self.tokenizer = tokenizer
        self.sequence_length = int(sequence_length)
        self.pad_to_multiple_of = max(int(pad_to_multiple_of), 1)
        self._packer = keras_hub.layers.MultiSegmentPacker(
            sequence_length=self.sequence_length,
            start_value=tokenizer.cls_token_id,
            end_value=tokenizer.sep_token_id,
            pad_value=tokenizer.pad_token_id,
        )

    def __call__(self, text, *args, **kwargs):
        return super().__call__(tf.convert_to_tensor(text, dtype=tf.string), *args, **kwargs)

    def call(self, text):
        token_ids, segment_ids = self._packer(self.tokenizer(text))
        mask = tf.cast(tf.not_equal(token_ids, self.tokenizer.pad_token_id), tf.int32)
        longest = tf.reduce_max(tf.concat([tf.reduce_sum(mask, axis=1), [1]], axis=0))
        step = self.pad_to_multiple_of
        length = tf.minimum((longest + step - 1) // step * step, self.sequence_length)
        return {
            "token_ids": tf.cast(token_ids[:, :length], tf.int32),
            "padding_mask": mask[:, :length],
            "segment_ids": tf.cast(segment_ids[:, :length], tf.int32),
        }

    def get_config(self):
        return {
            **super().get_config(),
            "tokenizer": keras.saving.serialize_keras_object(self.tokenizer),
            "sequence_length": self.sequence_length,
            "pad_to_multiple_of": self.pad_to_multiple_of,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["tokenizer"] = keras.saving.deserialize_keras_object(config["tokenizer"])
        return cls(**config)


def build_model(
    backbone, num_classes, multi_label=False, hidden_dim=0, dropout=0.1, freeze_backbone=False
):
    """The text classifier: backbone, masked mean pooling, `ClassificationHead`.

    Args:
        backbone: a KerasHub BERT backbone.
        num_classes: int. Classes (multi-class) or labels (multi-label), >= 2.
        multi_label: bool. Independent sigmoid per label instead of one softmax (the logits
            are the same; the objective and the export read them differently).
        hidden_dim: int. Width of the head's hidden layer; 0 for a linear head.
        dropout: float. Head dropout.
        freeze_backbone: bool. Train the head only.

    Returns:
        A `DistributionSafeModel` (a functional `keras.Model` that trains under
        `tf.distribute` strategies) taking `{"token_ids", "padding_mask", "segment_ids"}` (the
        output of `TextClassificationPreprocessor`) and returning `{"class_logits": [N, C]}`
        (float32).
        Its layers `text_encoder` and `classification_head` are used separately by the
        frozen-backbone training mode.

    Raises:
        ValueError: `num_classes` < 2.
    """
    if int(num_classes) < 2:
        raise ValueError(
            f"A classifier needs at least two classes (labels). Received: num_classes={num_classes}"
        )
    if freeze_backbone:
        backbone.trainable = False
    encoder = TextEncoder(backbone, name="text_encoder")
    head = ClassificationHead(
        num_classes, hidden_dim=hidden_dim, dropout=dropout, name="classification_head"
    )
    inputs = {name: keras.Input(shape=(None,), dtype="int32", name=name) for name in TEXT_INPUTS}
    logits = head(encoder(inputs))
    name = "multi_label_classifier" if multi_label else "text_classifier"
    return DistributionSafeModel(inputs=inputs, outputs={OUTPUT: logits}, name=name)


@keras.saving.register_keras_serializable(package="recsys")
class WeightedBinaryCrossentropy(keras.losses.Loss):
    """Per-label binary cross-entropy from logits, positives weighted per label.

    Args:
        positive_weights: list of float, one per label (1.0 = unweighted).

    >>> loss = WeightedBinaryCrossentropy([1.0, 3.0])
    >>> round(float(loss(np.array([[1.0, 1.0]]), np.array([[0.0, 0.0]]))), 4)
    1.3863
    """

    def __init__(self, positive_weights, name="weighted_binary_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.positive_weights = [float(w) for w in positive_weights]

    def call(self, y_true, y_pred):
        losses = tf.nn.weighted_cross_entropy_with_logits(
            labels=tf.cast(y_true, tf.float32),
            logits=tf.cast(y_pred, tf.float32),
            pos_weight=tf.constant(self.positive_weights, tf.float32),
        )
        return tf.reduce_mean(losses, axis=-1)

    def get_config(self):
        return {**super().get_config(), "positive_weights": self.positive_weights}


def objectives(num_classes, multi_label=False, positive_weights=None):
    """The classification objective on `class_logits`.

    Multi-class: sparse categorical cross-entropy with accuracy (integer class ids as
    targets; class weights come in as sample weights). Multi-label: binary cross-entropy per
    label (`[N, C]` 0/1 targets), optionally with `positive_weights`, with binary accuracy at
    0.5 and ROC-AUC over all labels.
    """
    if multi_label:
        loss = (
            WeightedBinaryCrossentropy(positive_weights)
            if positive_weights is not None
            else keras.losses.BinaryCrossentropy(from_logits=True)
        )
        metrics = (
            keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy"),
            keras.metrics.AUC(
                from_logits=True, multi_label=True, num_labels=num_classes, name="auc"
            ),
        )
        return [Objective(OUTPUT, loss, metrics=metrics)]
    return [
        Objective(
            OUTPUT,
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=(keras.metrics.SparseCategoricalAccuracy(name="accuracy"),),
        )
    ]
