"""Task adapter: text classification (data, model, evaluation, export) for `training.train`.

Data sources (`data.source`):

- `synthetic`: the synthetic store's reviews (`data.path`: a folder from `recsys data synth`,
  else generated); `data.label` "sentiment" (default), "recommended" or "rating".
- `reviews`: the women's clothing reviews CSV; `data.label` "recommended" (default),
  "sentiment", "rating" or a column such as "department".
- `pricerunner`: PriceRunner offer titles -> category, split grouped by product cluster.
- `table`: any CSV or Parquet file with `data.text_columns` and a `data.label` column
  (multi-label: labels separated by "|", or lists in Parquet).

Text columns are joined with ". " (reviews: "title. text"). Splits are seeded: grouped by
cluster for PriceRunner, random for multi-label, stratified otherwise; `data.split_column`
takes the parts from the table instead (as the benchmarks do).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pandas as pd

from recsys import metrics
from recsys.config import ConfigError
from recsys.data import labelled_text
from recsys.data.errors import DataError
from recsys.export import fingerprint
from recsys.report import plot_confusion, plot_roc
from recsys.tasks.text_classification import (
    OUTPUT,
    balanced_class_weights,
    positive_weights,
    probabilities_from_logits,
    tune_thresholds,
)

logger = logging.getLogger(__name__)

SPLITS = labelled_text.SPLITS
_DEFAULTS = {  # source -> (label, text columns, group column)
    "synthetic": ("sentiment", ("title", "text"), None),
    "reviews": ("recommended", ("title", "text"), None),
    "pricerunner": ("category", ("title",), "cluster_id"),
    "table": (None, (), None),
}
_ENCODE_BATCH = 128


@dataclasses.dataclass
class ClassificationData:
    """The three parts (columns `text` and `label`), the label names and caches."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    labels: tuple
    multi_label: bool = False
    label_source: str = ""
    embeddings: dict = dataclasses.field(default_factory=dict)  # frozen mode: text -> vector
    thresholds: np.ndarray | None = None  # multi-label, tuned on validation in `evaluate`
    ngram: object = None  # `NgramLinear` fitted in `evaluate` when `model.ngram_blend`
    ngram_summary: dict | None = None
    neighbours: object = None  # `CharNeighbours` when `model.neighbour_blend` chose a weight > 0

    @property
    def train_size(self):
        return len(self.train)

    @property
    def fingerprint(self):
        frames = [f.assign(part=name) for name, f in zip(SPLITS, self._parts(), strict=True)]
        table = pd.concat(frames)[["text", "label", "part"]].astype(str)
        return fingerprint(table)

    def _parts(self):
        return self.train, self.validation, self.test

    def describe(self):
        return (
            f"{len(self.train)} train / {len(self.validation)} validation / {len(self.test)} "
            f"test texts, {len(self.labels)} {'labels' if self.multi_label else 'classes'}: "
            f"{', '.join(self.labels)}"
        )

    def targets(self, split):
        """Class ids `[N]` (int32), or multi-hot `[N, C]` (float32) for multi-label."""
        frame = getattr(self, split)
        index = {label: i for i, label in enumerate(self.labels)}
        if not self.multi_label:
            return frame["label"].map(index).to_numpy(dtype=np.int32)
        out = np.zeros((len(frame), len(self.labels)), dtype=np.float32)
        for row, labels in enumerate(frame["label"]):
            out[row, [index[label] for label in labels]] = 1.0
        return out


def _read_source(config):
    data = config.data
    if data.source == "synthetic":
        from recsys.data import synthetic

        if data.path:
            return synthetic.load_store_dir(data.path).reviews, data.path
        store = synthetic.generate(products=data.products, users=data.users, seed=config.train.seed)
        return store.reviews, "<synthetic store>"
    from recsys.data import formats

    root = formats.shared_data_dir()
    if data.source == "reviews":
        path = (
            data.path
            or root / "womens-clothing-reviews" / "womens_clothing_ecommerce_reviews.csv.gz"
        )
        return formats.load_clothing_reviews(path), str(path)
    if data.source == "pricerunner":
        folder = "pricerunner-product-classification"
        path = data.path or root / folder / "pricerunner_aggregate.csv.gz"
        return formats.load_pricerunner(path), str(path)
    if data.source == "table":
        from recsys.data.tables import read_frame

        if not data.path or not data.label or not data.text_columns:
            raise ConfigError(
                "data.source 'table' needs data.path (CSV or Parquet), data.text_columns and "
                "data.label"
            )
        return read_frame(data.path), str(data.path)
    raise ConfigError(
        f"data.source {data.source!r} does not apply to text_classification; "
        "use synthetic, reviews, pricerunner or table"
    )


def prepare(config) -> ClassificationData:
    data, multi_label = config.data, config.model.multi_label
    fractions = data.validation_fraction, data.test_fraction
    if not data.split_column and min(fractions) <= 0:
        raise ConfigError(
            "text classification needs data.validation_fraction and data.test_fraction > 0. "
            f"Received: {fractions[0]} and {fractions[1]}"
        )
    default_label, default_columns, group = _DEFAULTS[data.source]
    raw, path = _read_source(config)
    label = data.label or default_label
    frame = labelled_text.examples(
        raw,
        data.text_columns or default_columns,
        label,
        multi_label,
        path,
        group=group,
        split_column=data.split_column,
        max_examples=data.max_examples,
        seed=config.train.seed,
    )
    labels = labelled_text.label_names(frame["label"], multi_label, config.model.labels, path)
    parts = labelled_text.split_examples(
        frame, (1.0 - sum(fractions), *fractions), config.train.seed, multi_label, data.split_column
    )
    seen = {n for row in parts[0]["label"] for n in row} if multi_label else set(parts[0]["label"])
    if len(seen) < 2:
        raise DataError(
            f"the training part holds {len(seen)} class(es) {sorted(seen)}; "
            "a classifier needs at least two",
            path=str(path),
        )
    parts = [p[["text", "label"]].reset_index(names="row") for p in parts]
    return ClassificationData(*parts, labels, multi_label, label)


def build(config, data):
    from recsys import backbones
    from recsys.tasks import text_classification

    if config.model.freeze_backbone and config.model.lora_rank:
        raise ConfigError("model.freeze_backbone and model.lora_rank exclude each other")
    backbone, text_preprocessor = backbones.resolve(
        config.backbone, config.model.sequence_length, lora_rank=config.model.lora_rank
    )
    if text_preprocessor is None or not hasattr(text_preprocessor.tokenizer, "cls_token_id"):
        raise ConfigError("text_classification needs a BERT backbone (a WordPiece tokenizer)")
    preprocessor = text_classification.TextClassificationPreprocessor(
        text_preprocessor.tokenizer, config.model.sequence_length
    )
    model = text_classification.build_model(
        backbone,
        len(data.labels),
        multi_label=data.multi_label,
        hidden_dim=config.model.hidden_dim,
        dropout=config.model.dropout,
        freeze_backbone=config.model.freeze_backbone,
    )
    return model, preprocessor


def training_model(model, config):
    """The model `fit` trains: the whole model, or the head alone on cached embeddings."""
    if not config.model.freeze_backbone:
        return model
    import keras

    from recsys.distributed_model import DistributionSafeModel

    dim = model.get_layer("text_encoder").backbone.hidden_dim
    embedding = keras.Input((dim,), name="embedding")
    logits = model.get_layer("classification_head")(embedding)
    return DistributionSafeModel(embedding, {OUTPUT: logits}, name="classification_head_only")


def _embeddings(data, texts, preprocessor, model):
    """Frozen backbone: each distinct text is encoded once, shortest first (less padding)."""
    import tensorflow as tf

    missing = sorted(set(texts) - set(data.embeddings), key=len)
    if missing:
        logger.info("Encoding %d texts with the frozen backbone", len(missing))
        encoder = model.get_layer("text_encoder")
        encode = tf.function(
            lambda t: tf.cast(encoder(preprocessor(t), training=False), "float32"),
            input_signature=[tf.TensorSpec([None], tf.string)],
        )
        for start in range(0, len(missing), _ENCODE_BATCH):
            chunk = missing[start : start + _ENCODE_BATCH]
            data.embeddings.update(zip(chunk, encode(tf.constant(chunk)).numpy(), strict=True))
    return np.stack([data.embeddings[t] for t in texts])


def objectives(config, data):
    from recsys.tasks import text_classification

    weights = None
    if data.multi_label and config.model.class_weights == "balanced":
        weights = positive_weights(data.targets("train")).tolist()
    return text_classification.objectives(len(data.labels), data.multi_label, weights)


def monitor(config):
    return ("val_auc", "max") if config.model.multi_label else ("val_accuracy", "max")


def _sample_weights(data, split, config):
    if data.multi_label or config.model.class_weights != "balanced":
        return None
    weights = balanced_class_weights(data.targets("train"), len(data.labels))
    return weights[data.targets(split)].astype(np.float32)


def _length_sorted_batches(ds, batch_size, seed, window=32):
    """Batches of similar text length (less padding), in shuffled order."""
    import tensorflow as tf

    def sort_window(text, *rest):
        order = tf.argsort(tf.strings.length(text))
        return (
            tf.gather(text, order),
            *(tf.nest.map_structure(lambda t: tf.gather(t, order), rest)),
        )

    batches = ds.cardinality()
    ds = ds.batch(batch_size * window).map(sort_window).unbatch().batch(batch_size)
    ds = ds.shuffle(window * 4, seed=seed, reshuffle_each_iteration=True)
    # Every window but the last splits into `window` full batches: ceil(n / batch_size) in all.
    return ds.apply(
        tf.data.experimental.assert_cardinality((batches + batch_size - 1) // batch_size)
    )


def dataset(data, split, preprocessor, batch_size, config, training=False, labels=True, model=None):
    import tensorflow as tf

    frame = getattr(data, split)
    texts = frame["text"].tolist()
    targets = data.targets(split)
    weights = _sample_weights(data, split, config) if training else None
    if config.model.freeze_backbone:
        x = _embeddings(data, texts, preprocessor, model)
    else:
        x = np.asarray(texts, dtype=object)
    parts = (x,) if not labels else (x, {OUTPUT: targets})
    if labels and weights is not None:
        parts += ({OUTPUT: weights},)
    ds = tf.data.Dataset.from_tensor_slices(parts if len(parts) > 1 else parts[0])
    if training:
        ds = ds.shuffle(len(frame), seed=config.train.seed, reshuffle_each_iteration=True)
    if config.model.freeze_backbone:
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    if training:
        ds = _length_sorted_batches(ds, batch_size, config.train.seed)
    else:
        ds = ds.batch(batch_size)
    if labels:
        ds = ds.map(lambda x, *rest: (preprocessor(x), *rest), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(preprocessor, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _model_logits(model, preprocessor, data, split, config):
    """The model's logits `[N, C]` of the split's texts, in the split's order (no blend)."""
    import tensorflow as tf

    texts = getattr(data, split)["text"].tolist()
    batch = config.train.batch_size * 4
    if config.model.freeze_backbone:
        x = _embeddings(data, texts, preprocessor, model)
        logits = training_model(model, config).predict(x, batch_size=batch, verbose=0)[OUTPUT]
    else:
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths together
        ds = tf.data.Dataset.from_tensor_slices(np.asarray(texts, dtype=object)[order])
        ds = ds.batch(batch).map(preprocessor).prefetch(tf.data.AUTOTUNE)
        logits = np.empty((len(texts), len(data.labels)), dtype=np.float32)
        logits[order] = model.predict(ds, verbose=0)[OUTPUT]
    return logits


def _blended(data, preprocessor, split, logits):
    """`logits` of the split with the n-gram blend added and scaled, once it is fitted."""
    if data.ngram is None:
        return logits
    texts = getattr(data, split)["text"].tolist()
    outputs = _in_batches(lambda batch: data.ngram(preprocessor(batch)), texts)
    if data.neighbours is not None:
        outputs += _in_batches(data.neighbours, texts)
    return data.ngram_summary["logit_scale"] * (logits + outputs)


def _in_batches(fn, texts):
    """`fn` (texts -> `[n, C]` tensor: the n-gram layer after the preprocessor, or the
    neighbours' votes) applied to `_ENCODE_BATCH` texts at a time: `[N, C]` float32."""
    outputs = [fn(texts[i : i + _ENCODE_BATCH]).numpy() for i in _starts(texts)]
    return np.concatenate(outputs).astype(np.float32)


def _ngram_matrix(preprocessor, texts, vocabulary_size):
    import scipy.sparse

    from recsys.tasks.ngram_linear import ngram_features

    blocks = []
    for start in _starts(texts):
        x = preprocessor(texts[start : start + _ENCODE_BATCH])
        blocks.append(ngram_features(x["token_ids"], x["padding_mask"], vocabulary_size))
    return scipy.sparse.vstack(blocks).tocsr()


def _starts(texts):
    return range(0, len(texts), _ENCODE_BATCH)


def fit_ngram_blend(model, preprocessor, data, config):
    """Fits the n-gram model on the training texts and its weight on validation (`ngram_blend`)."""
    from recsys.tasks import ngram_linear

    vocabulary_size = int(preprocessor.tokenizer.vocabulary_size())
    logger.info("Fitting the n-gram blend (token uni- and bigrams, logistic regression)")
    train = _ngram_matrix(preprocessor, data.train["text"].tolist(), vocabulary_size)
    validation = _ngram_matrix(preprocessor, data.validation["text"].tolist(), vocabulary_size)
    model_logits = _model_logits(model, preprocessor, data, "validation", config)
    memory = votes = None
    if config.model.neighbour_blend:
        from recsys.tasks import char_neighbours

        logger.info("Indexing the training texts' character n-grams (neighbour blend)")
        memory = char_neighbours.CharNeighbours.fit(
            data.train["text"].tolist(), data.targets("train"), len(data.labels)
        )
        votes = char_neighbours.candidate_votes(memory, data.validation["text"].tolist())
    kernel, bias, summary = ngram_linear.fit_blend(
        (train, data.targets("train")),
        (validation, data.targets("validation"), model_logits),
        len(data.labels),
        seed=config.train.seed,
        neighbours=votes,
    )
    layer = ngram_linear.NgramLinear(vocabulary_size, len(data.labels), name="ngram_linear")
    layer.set_linear_model(kernel, bias)
    if memory is not None and summary["neighbour_weight"] > 0:
        memory.k = summary["neighbour_k"]
        memory.weight.assign(summary["neighbour_weight"])
        data.neighbours = memory
    data.ngram, data.ngram_summary = layer, summary
    return summary


def predict(model, preprocessor, data, split, config):
    """Probabilities `[N, C]` of the split's texts, in the split's order."""
    logits = _blended(
        data, preprocessor, split, _model_logits(model, preprocessor, data, split, config)
    )
    return probabilities_from_logits(logits, data.multi_label)


def _multi_class_report(data, probabilities, run_dir):
    truth, predicted = data.targets("test"), probabilities.argmax(axis=1)
    num_classes = len(data.labels)
    matrix = metrics.confusion_matrix(truth, predicted, num_classes)
    per_class = metrics.precision_recall_per_class(truth, predicted, num_classes)
    test = {
        **_scores(data, probabilities),
        "per_class": {data.labels[c]: stats for c, stats in per_class.items()},
        "confusion_matrix": matrix.tolist(),
        "labels": list(data.labels),
        "examples": len(truth),
    }
    headline = {"accuracy": test["accuracy"], "macro_f1": test["macro_f1"]}
    if num_classes == 2:
        minority = int(np.argmin(np.bincount(data.targets("train"), minlength=2)))
        scores = probabilities[:, 1]
        test.update(
            positive_class=data.labels[1],
            minority_class=data.labels[minority],
            minority_f1=metrics.f1_for_class(truth, predicted, minority),
            log_loss=metrics.log_loss(truth, scores),
        )
        headline.update(roc_auc=test["roc_auc"], minority_f1=test["minority_f1"])
        plot_roc(truth, scores, run_dir / "roc.png", title=f"ROC curve ({data.labels[1]})")
    plot_confusion(matrix, data.labels, run_dir / "confusion.png")
    return test, headline


def _multi_label_report(data, probabilities, thresholds, run_dir):
    truth = data.targets("test").astype(bool)
    predicted = probabilities >= thresholds[None, :]
    tp = (truth & predicted).sum(axis=0)
    precision = tp / np.maximum(predicted.sum(axis=0), 1)
    recall = tp / np.maximum(truth.sum(axis=0), 1)
    f1 = 2 * tp / np.maximum(truth.sum(axis=0) + predicted.sum(axis=0), 1)
    micro = 2 * tp.sum() / max(int(truth.sum() + predicted.sum()), 1)
    per_label = {
        name: {
            "precision": float(precision[c]),
            "recall": float(recall[c]),
            "f1": float(f1[c]),
            "support": int(truth[:, c].sum()),
            "threshold": float(thresholds[c]),
        }
        for c, name in enumerate(data.labels)
    }
    # Label co-occurrence: row = true label, column = predicted label.
    matrix = truth.T.astype(np.int64) @ predicted.astype(np.int64)
    test = {
        "subset_accuracy": float((truth == predicted).all(axis=1).mean()),
        "accuracy": float((truth == predicted).mean()),
        "macro_f1": float(f1.mean()),
        "micro_f1": float(micro),
        "per_class": per_label,
        "confusion_matrix": matrix.tolist(),
        "labels": list(data.labels),
        "examples": len(truth),
    }
    plot_confusion(matrix, data.labels, run_dir / "confusion.png")
    headline = {k: test[k] for k in ("subset_accuracy", "macro_f1", "micro_f1")}
    return test, headline


def _scores(data, probabilities):
    """Test accuracy and macro-F1 (and ROC-AUC for two classes) of multi-class probabilities."""
    truth, predicted = data.targets("test"), probabilities.argmax(axis=1)
    out = {
        "accuracy": metrics.accuracy(truth, predicted),
        "macro_f1": metrics.macro_f1(truth, predicted, len(data.labels)),
    }
    if len(data.labels) == 2:
        out["roc_auc"] = metrics.roc_auc(truth, probabilities[:, 1])
    return out


def evaluate(model, preprocessor, data, config, run_dir):
    test_logits = _model_logits(model, preprocessor, data, "test", config)  # one pass over test
    alone = None
    if config.model.ngram_blend:
        alone = probabilities_from_logits(test_logits, data.multi_label)
        fit_ngram_blend(model, preprocessor, data, config)
    probabilities = probabilities_from_logits(
        _blended(data, preprocessor, "test", test_logits), data.multi_label
    )
    if data.multi_label:
        validation = predict(model, preprocessor, data, "validation", config)
        data.thresholds = tune_thresholds(data.targets("validation"), validation)
        test, headline = _multi_label_report(data, probabilities, data.thresholds, run_dir)
    else:
        test, headline = _multi_class_report(data, probabilities, run_dir)
    if data.ngram_summary:
        test["ngram_blend"] = {**data.ngram_summary, "without_blend": _scores(data, alone)}
    np.savez_compressed(
        run_dir / "test_predictions.npz",
        row=data.test["row"].to_numpy(),
        targets=data.targets("test"),
        probabilities=probabilities,
        labels=np.asarray(data.labels),
    )
    return {"task": "text_classification", "test": test, "headline": headline}


def export(model, preprocessor, data, config, export_dir):
    from recsys.tasks import text_classification_export

    return text_classification_export.export(
        model,
        preprocessor,
        data.labels,
        export_dir,
        data.multi_label,
        data.thresholds,
        ngram=data.ngram,
        neighbours=data.neighbours,
        logit_scale=data.ngram_summary["logit_scale"] if data.ngram_summary else 1.0,
    )


def card_extras(data, config):
    thresholds = data.thresholds if data.multi_label else None
    return {
        "labels": list(data.labels),
        "num_classes": len(data.labels),
        "multi_label": data.multi_label,
        "thresholds": None if thresholds is None else [float(t) for t in thresholds],
        "label_source": data.label_source,
        "class_weights": config.model.class_weights,
        "ngram_blend": data.ngram_summary,
    }
