"""Task adapter: buy probability (data, model, evaluation, export) for `training.train`."""

from __future__ import annotations

import dataclasses
import functools
import logging

import numpy as np
import pandas as pd

from recsys import metrics
from recsys.data import buy_pairs
from recsys.data.errors import DataError
from recsys.export import fingerprint
from recsys.report import plot_calibration, plot_roc
from recsys.tasks.buy_probability import NUM_FEATURES, ProductStats, history_features

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class BuyData:
    """Pairs split by time, plus the tables they came from."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    catalog: pd.DataFrame
    events: pd.DataFrame
    truth: pd.DataFrame | None = None
    bayes_optimal_auc: float | None = None
    product_counts: tuple = ()  # before the validation period: what training sees
    test_counts: tuple = ()  # up to the test period: evaluation and export
    embeddings: dict = dataclasses.field(default_factory=dict)  # frozen mode: text -> vector
    # next-period pairs: training and validation features count product statistics at each
    # pair's cutoff (frozen backbone; fine-tuning uses `product_counts` for all)
    counts_at_cutoffs: bool = False
    affinity: object = None  # ItemAffinity fitted before the validation period, or None
    test_affinity: object = None  # fitted up to the test period: evaluation and export
    affinity_l2: float | None = None
    tastes: object = None  # AttributeTastes fitted before the validation period, or None
    test_tastes: object = None  # fitted up to the test period: evaluation and export
    history_length: int = 96  # what the tastes' fits see of each user
    # cutoff -> (stats, affinity, tastes)
    cutoff_tables: dict = dataclasses.field(default_factory=dict)
    encoders: dict = dataclasses.field(default_factory=dict)  # frozen mode: field -> tf.function
    # frozen mode: (stats, affinity, tastes) -> `history_features` with them, as a tf.function
    feature_functions: dict = dataclasses.field(default_factory=dict)

    @property
    def train_size(self):
        return len(self.train)

    @property
    def fingerprint(self):
        return fingerprint(self.events[["user_id", "product_id", "event"]])

    def describe(self):
        return (
            f"{len(self.train)} train / {len(self.validation)} validation / {len(self.test)} "
            f"test pairs, {len(self.catalog)} products, {self.events['user_id'].nunique()} users"
        )


def _load_tables(config):
    data = config.data
    if data.source == "synthetic":
        from recsys.data import synthetic

        if data.path:
            store = synthetic.load_store_dir(data.path)
        else:
            store = synthetic.generate(
                products=data.products, users=data.users, seed=config.train.seed
            )
        return store.catalog, store.events, store.truth, store.bayes_optimal_auc(), None
    if data.source == "events":
        from recsys.data.catalog import load_catalog
        from recsys.data.events import load_events

        if not data.path or not data.catalog:
            raise DataError("data.source 'events' needs data.path (events file) and data.catalog")
        catalog = load_catalog(data.catalog)
        events = load_events(data.path, catalog=catalog, on_unknown="drop")
        return catalog, events, None, None, None
    if data.source == "retail":
        from recsys.data import formats, protocols

        path = data.path or formats.shared_data_dir() / "online-retail" / "online_retail.csv.gz"
        catalog, events = formats.load_online_retail(path)
        events, catalog, protocol_pairs = protocols.retail_next_month(
            events, catalog, seed=config.train.seed
        )
        return catalog, events, None, None, protocol_pairs
    raise DataError(
        f"data.source {data.source!r} does not apply to buy_probability; "
        "use synthetic, events or retail"
    )


def prepare(config) -> BuyData:
    catalog, events, truth, bayes, protocol_pairs = _load_tables(config)
    horizon = config.data.horizon_days
    build, split = (
        (buy_pairs.build_pairs, buy_pairs.time_split)
        if horizon is None
        else (
            functools.partial(buy_pairs.build_horizon_pairs, horizon_days=horizon),
            buy_pairs.cutoff_split,
        )
    )
    pairs = build(
        events,
        catalog,
        negatives=config.data.negatives,
        history_length=config.data.history_length,
        seed=config.train.seed,
        max_pairs=config.data.max_pairs,
    )
    test_fraction = 0.0 if protocol_pairs is not None else config.data.test_fraction
    train, validation, test = split(pairs, config.data.validation_fraction, test_fraction)
    # Product popularity from the training period only, so validation and test do not leak.
    cutoff = validation["timestamp"].min() if len(validation) else test["timestamp"].min()
    counts = buy_pairs.product_counts(events, catalog, before=cutoff)
    if truth is not None:
        truth = buy_pairs.with_texts(truth, events, catalog, config.data.history_length)
    if protocol_pairs is not None:  # a benchmark protocol fixes the test pairs (P1)
        test = buy_pairs.with_texts(protocol_pairs, events, catalog, config.data.history_length)
    # Evaluation and export count up to the first test pair, as a model retrained on the
    # latest data would (the recent-buyers window then ends where the test period starts).
    starts = [f["timestamp"].min() for f in (test, truth) if f is not None and len(f)]
    test_cutoff = min(starts) if starts else None
    test_counts = buy_pairs.product_counts(events, catalog, before=test_cutoff)
    l2 = config.model.item_affinity_l2
    affinity = test_affinity = None
    if l2 is not None:
        affinity, test_affinity = _affinities(config, events, catalog, l2, cutoff, test_cutoff)
    tastes = test_tastes = None
    if config.model.attribute_tastes:
        tastes = _fit_tastes(events, catalog, cutoff, config.data.history_length)
        test_tastes = _fit_tastes(events, catalog, test_cutoff, config.data.history_length)
    return BuyData(
        train,
        validation,
        test,
        catalog,
        events,
        truth,
        bayes,
        counts,
        test_counts,
        counts_at_cutoffs=horizon is not None,
        affinity=affinity,
        test_affinity=test_affinity,
        affinity_l2=l2,
        tastes=tastes,
        test_tastes=test_tastes,
        history_length=config.data.history_length,
    )


def _fit_tastes(events, catalog, before, history_length):
    """`AttributeTastes` with appeal and weights fitted on the events before `before`."""
    from recsys.tasks.attribute_tastes import AttributeTastes

    logger.info("Fitting attribute tastes on the events before %s", before)
    return AttributeTastes.fit(
        events, catalog, before=before, history_length=history_length, log=logger.info
    )


def _affinities(config, events, catalog, l2, cutoff, test_cutoff):
    """EASE weights before the validation period and up to the test period.

    Raises:
        ConfigError: the training pairs would see weights fitted on their own future.
    """
    from recsys.config import ConfigError
    from recsys.tasks.item_affinity import ItemAffinity

    if config.data.horizon_days is None or not config.model.freeze_backbone:
        raise ConfigError(
            "`model.item_affinity_l2` needs the affinity of each training pair counted at its "
            "own cutoff (weights fitted on later purchases include the pair's own label), which "
            "the next-period pairs with a frozen backbone give: set `data.horizon_days` and "
            "`model.freeze_backbone: true`, or `model.item_affinity_l2: null`"
        )
    logger.info("Fitting EASE item-to-item weights (l2=%s)", l2)
    return (
        ItemAffinity.fit(events, catalog, l2, before=cutoff),
        ItemAffinity.fit(events, catalog, l2, before=test_cutoff),
    )


def build(config, data):
    from recsys import backbones
    from recsys.tasks import buy_probability

    backbone, text_preprocessor = backbones.resolve(
        config.backbone, config.model.sequence_length, lora_rank=config.model.lora_rank
    )
    stats = ProductStats(*data.product_counts)
    preprocessor = buy_probability.BuyProbabilityPreprocessor(
        text_preprocessor.tokenizer,
        config.model.sequence_length,
        min(config.model.product_sequence_length, config.model.sequence_length),
        product_stats=stats,
        item_affinity=data.affinity,
        attribute_tastes=data.tastes,
    )
    if data.counts_at_cutoffs and len(data.validation):
        # counted before the validation cutoff: the validation pairs' own tables
        data.cutoff_tables.setdefault(
            data.validation["timestamp"].min(), (stats, data.affinity, data.tastes)
        )
    model = buy_probability.build_model(
        backbone,
        hidden_dim=config.model.hidden_dim,
        dropout=config.model.dropout,
        freeze_backbone=config.model.freeze_backbone,
        interaction=config.model.embedding_interaction,
        normalize_features=config.model.normalize_features,
        taste_offset=config.model.attribute_tastes,
    )
    return model, preprocessor


def training_model(model, config):
    """The model `fit` trains: the whole model, or the head alone on cached embeddings."""
    if not config.model.freeze_backbone:
        return model
    import keras

    from recsys.distributed_model import DistributionSafeModel
    from recsys.tasks.buy_probability import OUTPUT

    dim = model.get_layer("text_encoder").backbone.hidden_dim
    inputs = {
        "user": keras.Input((dim,), name="user"),
        "product": keras.Input((dim,), name="product"),
        "features": keras.Input((NUM_FEATURES,), name="features"),
    }
    logit = model.get_layer("buy_head")(inputs["user"], inputs["product"], inputs["features"])
    return DistributionSafeModel(inputs, {OUTPUT: logit}, name="buy_head_only")


def _cached_inputs(data, frame, split, preprocessor, model):
    """Frozen backbone: each distinct context and product text is encoded once."""
    import tensorflow as tf

    encoder = model.get_layer("text_encoder")
    for field, column in (("context", "context"), ("product", "product")):
        cache = data.embeddings.setdefault(field, {})
        missing = sorted(set(frame[column]) - set(cache))
        if missing:
            logger.info("Encoding %d %s texts with the frozen backbone", len(missing), field)
            if field not in data.encoders:  # one function per field, traced once for all
                # splits and chunk sizes (as `training.classify._embeddings`)
                data.encoders[field] = tf.function(
                    lambda t, f=field: encoder(preprocessor.encode_text(f, t), training=False),
                    input_signature=[tf.TensorSpec([None], tf.string)],
                )
            encode = data.encoders[field]
            for start in range(0, len(missing), 256):
                chunk = missing[start : start + 256]
                cache.update(zip(chunk, encode(tf.constant(chunk)).numpy(), strict=True))
    return {
        "user": np.stack([data.embeddings["context"][t] for t in frame["context"]]),
        "product": np.stack([data.embeddings["product"][t] for t in frame["product"]]),
        "features": _features(data, frame, split, preprocessor),
    }


def _features(data, frame, split, preprocessor):
    """History features `[N, NUM_FEATURES]`; next-period training and validation pairs get
    product statistics (and item affinities) counted at their own cutoff."""
    import tensorflow as tf

    if data.counts_at_cutoffs and split in ("train", "validation"):
        groups = [
            (rows, _tables_at(data, t))
            for t, rows in frame.groupby("timestamp", sort=True).indices.items()
        ]
    else:
        tables = (
            preprocessor.product_stats,
            preprocessor.item_affinity,
            preprocessor.attribute_tastes,
        )
        groups = [(np.arange(len(frame)), tables)]
    out = np.zeros((len(frame), NUM_FEATURES), dtype=np.float32)
    for rows, tables in groups:
        features = _feature_function(data, tables)
        for start in range(0, len(rows), 4096):
            part = frame.iloc[rows[start : start + 4096]]
            out[rows[start : start + 4096]] = features(
                tf.constant(part["context"].tolist()), tf.constant(part["product"].tolist())
            ).numpy()
    return out


def _feature_function(data, tables):
    """`history_features` with `tables` as a `tf.function`, traced once per tables: run eagerly,
    the attribute tastes' 60-step estimate and Laplace step cost seconds per call."""
    import tensorflow as tf

    if tables not in data.feature_functions:  # tables hash by identity (`tf.Module`, None)
        data.feature_functions[tables] = tf.function(
            lambda context, product: history_features(context, product, *tables),
            input_signature=[tf.TensorSpec([None], tf.string)] * 2,
        )
    return data.feature_functions[tables]


def _tables_at(data, cutoff):
    """`(ProductStats, ItemAffinity or None, AttributeTastes or None)` counted before `cutoff`,
    built once per cutoff."""
    from recsys.tasks.item_affinity import ItemAffinity

    if cutoff not in data.cutoff_tables:
        stats = ProductStats(*buy_pairs.product_counts(data.events, data.catalog, before=cutoff))
        affinity = None
        if data.affinity_l2 is not None:
            affinity = ItemAffinity.fit(data.events, data.catalog, data.affinity_l2, before=cutoff)
        tastes = None
        if data.tastes is not None:
            tastes = _fit_tastes(data.events, data.catalog, cutoff, data.history_length)
        data.cutoff_tables[cutoff] = (stats, affinity, tastes)
    return data.cutoff_tables[cutoff]


def objectives(config, data):
    from recsys.tasks import buy_probability

    return buy_probability.objectives()


def monitor(config):
    return "val_auc", "max"


def _frame(data, split):
    return {
        "train": data.train,
        "validation": data.validation,
        "test": data.test,
        "truth": data.truth,
    }[split]


def dataset(data, split, preprocessor, batch_size, config, training=False, labels=True, model=None):
    import tensorflow as tf

    frame = _frame(data, split)
    if config.model.freeze_backbone:
        inputs = _cached_inputs(data, frame, split, preprocessor, model)
        ds = tf.data.Dataset.from_tensor_slices(
            (inputs, {"buy_logit": frame["label"].to_numpy(dtype="float32")[:, None]})
            if labels
            else inputs
        )
        if training:
            ds = ds.shuffle(min(len(frame), 100_000), seed=config.train.seed)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    features = {
        "context": frame["context"].to_numpy(dtype=str),
        "product": frame["product"].to_numpy(dtype=str),
    }
    if labels:
        ds = tf.data.Dataset.from_tensor_slices(
            (features, {"buy_logit": frame["label"].to_numpy(dtype="float32")[:, None]})
        )
    else:
        ds = tf.data.Dataset.from_tensor_slices(features)
    if training:
        ds = ds.shuffle(
            min(len(frame), 50_000), seed=config.train.seed, reshuffle_each_iteration=True
        )
    ds = ds.batch(batch_size)
    if labels:
        ds = ds.map(lambda x, y: (preprocessor(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(preprocessor, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def predict(model, preprocessor, data, split, config):
    ds = dataset(
        data, split, preprocessor, config.train.batch_size * 4, config, labels=False, model=model
    )
    fit_model = training_model(model, config)
    logits = fit_model.predict(ds, verbose=0)["buy_logit"].reshape(-1)
    return 1.0 / (1.0 + np.exp(-logits))


def evaluate(model, preprocessor, data, config, run_dir):
    # New tables rather than new values in the old ones: those may be a validation cutoff's.
    if data.test_counts:
        logger.info("Product statistics counted up to the test period for evaluation and export")
        preprocessor.product_stats = ProductStats(*data.test_counts)
    if data.test_affinity is not None:
        preprocessor.item_affinity = data.test_affinity
    if data.test_tastes is not None:
        preprocessor.attribute_tastes = data.test_tastes
    probabilities = predict(model, preprocessor, data, "test", config)
    labels = data.test["label"].to_numpy()
    test = metrics.binary_report(labels, probabilities, user_ids=data.test["user_id"].to_numpy())
    plot_roc(labels, probabilities, run_dir / "roc.png")
    plot_calibration(labels, probabilities, run_dir / "calibration.png")
    headline = {
        "roc_auc": test["roc_auc"],
        "per_user_auc": test.get("per_user_auc"),
        "ece": test["ece"],
    }
    report = {"task": "buy_probability", "test": test, "headline": headline}
    if data.truth is not None:
        truth_probs = predict(model, preprocessor, data, "truth", config)
        truth_auc = metrics.roc_auc(data.truth["label"].to_numpy(), truth_probs)
        report["synthetic_truth"] = {
            "roc_auc": truth_auc,
            "bayes_optimal_auc": data.bayes_optimal_auc,
            "ratio_to_optimal": truth_auc / data.bayes_optimal_auc,
            "pairs": len(data.truth),
        }
        headline["truth_auc"] = truth_auc
        headline["bayes_optimal_auc"] = data.bayes_optimal_auc
        headline["ratio_to_optimal"] = truth_auc / data.bayes_optimal_auc
    return report


def export(model, preprocessor, data, config, export_dir):
    from recsys.tasks import buy_probability_export

    return buy_probability_export.export(
        model, preprocessor, data.catalog, export_dir, config.data.history_length
    )


def card_extras(data, config):
    return {
        "catalog_products": len(data.catalog),
        "history_length": config.data.history_length,
        "context_length": config.model.sequence_length,
        "product_length": min(config.model.product_sequence_length, config.model.sequence_length),
    }
