"""The text-classification SavedModel: `classify(text)` over raw strings.

`classify` (also `serving_default`) maps `text` (`tf.string`, `[N]`) to `probabilities`
(`float32`, `[N, C]`: softmax for multi-class, per-label sigmoid for multi-label) and `label`
(`tf.string`, `[N]`, the most probable label's name). A multi-label model also returns
`predicted` (`bool`, `[N, C]`: each label's probability >= its threshold). The label names
(`label_names`) and thresholds (`thresholds`) are variables of the graph, so a loaded model
carries them: `tf.saved_model.load(path).label_names.numpy()`.
"""

from __future__ import annotations

import logging
import pathlib

import numpy as np
import tensorflow as tf

from recsys import schema
from recsys.tasks.text_classification import DEFAULT_THRESHOLD, OUTPUT, check_labels

logger = logging.getLogger(__name__)


class TextClassificationModule(tf.Module):
    """The exported graph: preprocessor, model, label names and thresholds.

    Args:
        model: the task model from `text_classification.build_model`.
        preprocessor: a `TextClassificationPreprocessor`.
        labels: sequence of str. Class (or label) names in output order.
        multi_label: bool.
        thresholds: sequence of float or None. Per-label thresholds (multi-label);
            `DEFAULT_THRESHOLD` each when None.
        ngram: an `ngram_linear.NgramLinear` whose logits add to the model's, or None.
        neighbours: a `char_neighbours.CharNeighbours` whose weighted votes add to them, or None.
        logit_scale: float. Multiplies the (blended) logits (the n-gram blend's temperature).
    """

    def __init__(
        self,
        model,
        preprocessor,
        labels,
        multi_label=False,
        thresholds=None,
        ngram=None,
        logit_scale=1.0,
        neighbours=None,
    ):
        super().__init__(name="text_classification")
        labels = check_labels(labels)
        if thresholds is None:
            thresholds = [DEFAULT_THRESHOLD] * len(labels)
        if len(thresholds) != len(labels):
            raise ValueError(
                f"One threshold per label: {len(labels)} labels, {len(thresholds)} thresholds."
            )
        self.model, self.preprocessor, self.ngram = model, preprocessor, ngram
        self.neighbours = neighbours
        self.logit_scale = tf.Variable(float(logit_scale), trainable=False, name="logit_scale")
        self.multi_label = bool(multi_label)
        self.label_names = tf.Variable(list(labels), trainable=False, name="label_names")
        self.thresholds = tf.Variable(
            np.asarray(thresholds, dtype=np.float32), trainable=False, name="thresholds"
        )

    def _probabilities(self, text):
        inputs = self.preprocessor(text)
        logits = tf.cast(self.model(inputs, training=False)[OUTPUT], tf.float32)
        if self.ngram is not None:
            logits += self.ngram(inputs)
        if self.neighbours is not None:
            logits += self.neighbours(text)
        logits = self.logit_scale * logits
        return tf.sigmoid(logits) if self.multi_label else tf.nn.softmax(logits, axis=-1)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def classify(self, text):
        probabilities = self._probabilities(text)
        outputs = {
            "probabilities": probabilities,
            "label": tf.gather(self.label_names, tf.argmax(probabilities, axis=-1)),
        }
        if self.multi_label:
            outputs["predicted"] = probabilities >= self.thresholds[None, :]
        return outputs


def signatures(num_classes, multi_label=False):
    """The signature description written into the model card.

    >>> signatures(3)["classify"]["outputs"]
    {'probabilities': 'float32[N, 3]', 'label': 'string[N]'}
    """
    outputs = {"probabilities": f"float32[N, {num_classes}]", "label": "string[N]"}
    if multi_label:
        outputs["predicted"] = f"bool[N, {num_classes}]"
    return {schema.SIGNATURE_CLASSIFY: {"inputs": {"text": "string[N]"}, "outputs": outputs}}


def export(
    model,
    preprocessor,
    labels,
    export_dir,
    multi_label=False,
    thresholds=None,
    ngram=None,
    logit_scale=1.0,
    neighbours=None,
):
    """Writes the SavedModel into `export_dir`; returns its signature description."""
    module = TextClassificationModule(
        model,
        preprocessor,
        labels,
        multi_label,
        thresholds,
        ngram=ngram,
        logit_scale=logit_scale,
        neighbours=neighbours,
    )
    tf.saved_model.save(
        module,
        str(pathlib.Path(export_dir)),
        signatures={"serving_default": module.classify, schema.SIGNATURE_CLASSIFY: module.classify},
    )
    logger.info("Exported a %d-label classifier to %s", len(labels), export_dir)
    return signatures(len(labels), multi_label)
