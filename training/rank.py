"""Task adapter: next-item ranking (data, model, evaluation, export) for `training.train`.

Data sources (`data.source`): `sasrec` (any `user item` file, plain or gzipped; default the
MovieLens-1M file; titles from a `sasrec_item_map.tsv` beside it or `data.catalog`),
`movielens` (`.dat` files), `unisrec` (Amazon Scientific), `synthetic` (the synthetic store's
events) and `events` (`data.path` events + `data.catalog`). Each user's items, oldest first,
are split leave-one-out (protocol P2): the last item is the test target, the one before the
validation target, the rest trains.

Evaluation (`evaluate`, and every epoch for early stopping): full ranking over every item with
the user's history excluded (primary) and the target against 100 items drawn uniformly from
those the user never interacted with; HR@1/5/10, NDCG@5/10 and MRR on validation and test.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import pathlib
import time

import numpy as np

from recsys import metrics
from recsys.config import ConfigError
from recsys.data.errors import DataError
from recsys.data.splits import ItemVocabulary, leave_one_out
from recsys.schema import NUM_RESERVED_IDS

logger = logging.getLogger(__name__)

SAMPLED_NEGATIVES = 100
# `fit` reports the loss on this many validation users; early stopping uses the ranking
# metrics of all of them (`ValidationRanking`).
VALIDATION_LOSS_USERS = 1024
EVAL_BATCH = 256
MONITOR = "val_ndcg_at_10"
# Training batches are sorted by length within pools of this many batches (less padding).
_POOL = 16


@dataclasses.dataclass
class EvalSplit:
    """Leave-one-out examples: per user the history (oldest first), the target and every item
    the user interacted with (for sampled negatives). Ids are vocabulary indices."""

    histories: list
    targets: np.ndarray
    interacted: list

    def __len__(self):
        return len(self.targets)


@dataclasses.dataclass
class RankingData:
    """Encoded sequences, their leave-one-out split and what the export needs."""

    vocabulary: ItemVocabulary
    train: list  # per user: training items (int arrays, oldest first)
    windows: list  # training windows cut from `train` (int arrays)
    validation: EvalSplit
    test: EvalSplit
    popularity: np.ndarray  # [V] training interaction counts
    catalog: object = None  # DataFrame or None
    texts: list | None = None  # [V] item texts for text fusion ("" where unknown)
    source_fingerprint: str = ""
    cache_dir: pathlib.Path | None = None

    @property
    def train_size(self):
        return len(self.windows)

    @property
    def fingerprint(self):
        return self.source_fingerprint

    @property
    def cold_items(self):
        """Vocabulary indices of items never seen in training."""
        cold = np.flatnonzero(self.popularity == 0)
        return cold[cold >= NUM_RESERVED_IDS]

    def describe(self):
        interactions = sum(len(t) for t in self.train) + len(self.validation) + len(self.test)
        return (
            f"{len(self.train)} users, {len(self.vocabulary.items)} items, {interactions} "
            f"interactions; {len(self.windows)} training windows, {len(self.validation)} "
            f"validation / {len(self.test)} test users, {len(self.cold_items)} cold items"
        )


def _dedupe_consecutive(items):
    return [item for i, item in enumerate(items) if i == 0 or item != items[i - 1]]


def _from_events(events, catalog):
    from recsys.data.splits import user_sequences

    sequences = user_sequences(events)
    return {user: _dedupe_consecutive(items) for user, items in sequences.items()}, catalog


def _load(config):
    """(sequences: user -> item ids oldest first, catalog or None) for `data.source`."""
    from recsys.data import formats

    data = config.data
    shared = formats.shared_data_dir()
    if data.source == "sasrec":
        path = pathlib.Path(data.path or shared / "movielens-1m" / "ml-1m-sasrec.txt.gz")
        sequences = formats.load_sasrec(path)
        catalog = None
        item_map = (
            pathlib.Path(data.catalog) if data.catalog else path.parent / "sasrec_item_map.tsv"
        )
        if data.catalog and not item_map.is_file():
            raise DataError(f"catalog file not found: {item_map}")
        if item_map.is_file() and item_map.name.endswith(".tsv"):
            catalog = formats.load_sasrec_item_map(item_map)
        elif item_map.is_file():
            from recsys.data.catalog import load_catalog

            catalog = load_catalog(item_map)
        if catalog is not None:
            known = set(catalog["product_id"].astype(str))
            if any(i not in known for items in sequences.values() for i in items):
                logger.warning("%s does not cover %s; ranking without titles", item_map, path)
                catalog = None
        return sequences, catalog
    if data.source == "movielens":
        folder = data.path or shared / "movielens-1m"
        catalog, events = formats.load_movielens_dat(folder)
        return _from_events(events, catalog)
    if data.source == "unisrec":
        catalog, sequences = formats.load_unisrec(data.path or shared / "amazon-scientific")
        return sequences, catalog
    if data.source == "synthetic":
        from recsys.data import synthetic

        if data.path:
            store = synthetic.load_store_dir(data.path)
        else:
            store = synthetic.generate(
                products=data.products, users=data.users, seed=config.train.seed
            )
        return _from_events(store.events, store.catalog)
    if data.source == "events":
        from recsys.data.catalog import load_catalog
        from recsys.data.events import load_events

        if not data.path or not data.catalog:
            raise DataError("data.source 'events' needs data.path (events file) and data.catalog")
        catalog = load_catalog(data.catalog)
        return _from_events(load_events(data.path, catalog=catalog, on_unknown="drop"), catalog)
    raise DataError(
        f"data.source {data.source!r} does not apply to ranking; "
        "use sasrec, movielens, unisrec, synthetic or events"
    )


def prepare(config, run_dir=None) -> RankingData:
    from recsys.tasks.ranking import item_text, training_windows

    sequences, catalog = _load(config)
    sequences = {u: [str(i) for i in items] for u, items in sequences.items() if items}
    if config.data.max_examples:
        sequences = dict(list(sequences.items())[: config.data.max_examples])
    if not sequences:
        raise DataError("no user has any interaction")
    seen = dict.fromkeys(i for items in sequences.values() for i in items)
    ids = list(dict.fromkeys(catalog["product_id"].astype(str))) if catalog is not None else []
    in_catalog = set(ids)
    vocabulary = ItemVocabulary.build(ids + [i for i in seen if i not in in_catalog])
    train, valid, test = leave_one_out(sequences)
    train = [vocabulary.encode(items) for items in train.values()]
    full = {u: vocabulary.encode(items) for u, items in sequences.items()}

    def split(examples):
        return EvalSplit(
            [vocabulary.encode(e.history) for e in examples],
            vocabulary.encode([e.target for e in examples]),
            [full[e.user] for e in examples],
        )

    length = config.model.sequence_length
    windows = [
        np.asarray(w, np.int64)
        for items in train
        for w in training_windows(items, length, config.data.windows)
    ]
    if not windows:
        raise DataError("no user has two or more training interactions")
    popularity = np.bincount(np.concatenate(train), minlength=len(vocabulary)).astype(np.int64)
    texts = None
    if catalog is not None:
        by_id = {str(r["product_id"]): r for r in catalog.to_dict("records")}
        texts = ["" for _ in range(NUM_RESERVED_IDS)] + [
            item_text(by_id[i]) if i in by_id else "" for i in vocabulary.items
        ]
    digest = hashlib.sha256()
    for user, items in sequences.items():
        digest.update(f"{user}:{' '.join(items)}\n".encode())
    return RankingData(
        vocabulary=vocabulary,
        train=train,
        windows=windows,
        validation=split(valid),
        test=split(test),
        popularity=popularity,
        catalog=catalog,
        texts=texts,
        source_fingerprint=digest.hexdigest()[:16],
        cache_dir=pathlib.Path(run_dir) if run_dir else None,
    )


def _backbone_sizes(config):
    """Backbone keyword arguments from `model.*`; `backbone` names the GPT-2 family."""
    spec = config.backbone
    if isinstance(spec, str):
        spec = {"family": spec}
    if spec.get("family") != "gpt2":
        raise ConfigError(
            "The ranking task trains a GPT-2 backbone over item ids from scratch: set "
            f"`backbone: gpt2` (sizes from model.*). Received: backbone={config.backbone!r}"
        )
    model = config.model
    sizes = {
        "num_layers": model.num_layers,
        "num_heads": model.num_heads,
        "hidden_dim": model.embedding_dim,
        "dropout": model.dropout,
    }
    for key, value in spec.items():
        if key in sizes and value != sizes[key]:
            raise ConfigError(
                f"`backbone.{key}` ({value}) disagrees with the ranking setting {sizes[key]} "
                "(set it under `model`: num_layers, num_heads, embedding_dim, dropout)."
            )
        if key not in sizes and key not in ("family", "intermediate_dim"):
            raise ConfigError(
                f"Unknown key `backbone.{key}` for ranking; it accepts family and "
                "intermediate_dim (sizes go under `model`)."
            )
    if model.embedding_dim % model.num_heads:
        raise ConfigError(
            f"`model.embedding_dim` ({model.embedding_dim}) must be divisible by "
            f"`model.num_heads` ({model.num_heads})."
        )
    return {**sizes, "intermediate_dim": spec.get("intermediate_dim")}


def text_embeddings(data, config):
    """Frozen text embeddings `[V, T]` of the items, cached under the run directory."""
    from recsys.tasks.ranking import encode_texts

    if data.texts is None or not any(data.texts):
        raise DataError(
            "model.text_fusion needs item titles: a catalog (data.catalog, or "
            "sasrec_item_map.tsv beside a SASRec file)"
        )
    key = hashlib.sha256(
        ("\n".join(data.texts) + f"\n{config.model.text_backbone}").encode()
    ).hexdigest()[:16]
    path = data.cache_dir / f"item_text_{key}.npy" if data.cache_dir else None
    if path is not None and path.is_file():
        logger.info("Item text embeddings from %s", path)
        return np.load(path)
    started = time.perf_counter()
    embeddings = encode_texts(data.texts, config.model.text_backbone)
    logger.info(
        "Embedded %d item texts with %s in %.1f s",
        len(data.texts),
        config.model.text_backbone,
        time.perf_counter() - started,
    )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, embeddings)
    return embeddings


def build(config, data):
    from recsys.tasks import ranking

    sizes = _backbone_sizes(config)
    embeddings = text_embeddings(data, config) if config.model.text_fusion else None
    model = ranking.build_model(
        len(data.vocabulary),
        config.model.sequence_length,
        text_dim=0 if embeddings is None else embeddings.shape[1],
        num_negatives=(
            config.model.num_negatives if config.model.loss == "sampled_softmax" else None
        ),
        id_dropout=config.model.id_dropout,
        exclude_seen=config.model.exclude_seen,
        **sizes,
    )
    if embeddings is not None:
        model.set_item_text(embeddings, data.popularity > 0)
    return model, None


def training_model(model, config):
    return model


def objectives(config, data):
    from recsys.tasks import ranking

    return ranking.objectives()  # the model computes its own loss (`next_item_loss`)


def monitor(config):
    return MONITOR, "max"


def _sequence_dataset(inputs, targets, batch_size, shuffle_seed=None, sort=False):
    """Right-padded batches. Training shuffles, then sorts pools of `_POOL` batches by length
    so that batches pad little (and their count stays `ceil(n / batch_size)`)."""
    import tensorflow as tf

    from recsys.tasks.ranking import INPUT, OUTPUT

    order = np.arange(len(inputs))
    if sort:
        order = np.argsort([len(x) for x in inputs], kind="stable")
    lengths = np.fromiter((len(inputs[i]) for i in order), np.int64, len(order))

    def ragged(rows):
        values = [rows[i] for i in order]
        values = np.concatenate(values).astype(np.int32) if values else np.zeros(0, np.int32)
        return tf.RaggedTensor.from_row_lengths(values, lengths)

    parts = (ragged(inputs),) + ((ragged(targets),) if targets is not None else ())
    ds = tf.data.Dataset.from_tensor_slices(parts)
    if shuffle_seed is not None:

        def by_length(*rows):
            ranking = tf.argsort(rows[0].row_lengths(), stable=True)
            return tuple(tf.gather(r, ranking) for r in rows)

        ds = ds.shuffle(len(order), seed=shuffle_seed, reshuffle_each_iteration=True)
        ds = ds.ragged_batch(batch_size * _POOL).map(by_length).unbatch()
    ds = ds.map(lambda *rows: tuple(tf.identity(r) for r in rows))  # 1-D ragged spec -> dense
    ds = ds.padded_batch(batch_size)
    if shuffle_seed is not None:
        ds = ds.shuffle(_POOL, seed=shuffle_seed, reshuffle_each_iteration=True)
    if targets is None:
        ds = ds.map(lambda x: {INPUT: x})
    else:
        ds = ds.map(lambda x, y: ({INPUT: x}, {OUTPUT: y}))
    batches = -(-len(order) // batch_size)
    ds = ds.apply(tf.data.experimental.assert_cardinality(batches))  # for `fit`'s progress
    return ds.prefetch(tf.data.AUTOTUNE)


def dataset(data, split, preprocessor, batch_size, config, training=False, labels=True, model=None):
    length = config.model.sequence_length
    if split == "train":
        inputs = [w[:-1] for w in data.windows]
        targets = [w[1:] for w in data.windows]
    else:
        examples = {"validation": data.validation, "test": data.test}[split]
        users = np.arange(len(examples))
        if split == "validation" and labels and len(users) > VALIDATION_LOSS_USERS:
            users = np.sort(
                np.random.default_rng(config.train.seed).choice(
                    users, VALIDATION_LOSS_USERS, replace=False
                )
            )
        users = [u for u in users if len(examples.histories[u])]
        inputs = [examples.histories[u][-length:] for u in users]
        targets = [
            np.r_[np.zeros(len(x) - 1, np.int64), examples.targets[u]]
            for x, u in zip(inputs, users, strict=True)
        ]
    return _sequence_dataset(
        inputs,
        targets if labels else None,
        batch_size,
        shuffle_seed=config.train.seed if training else None,
        sort=labels and not training,
    )


def _scorer(model):
    import tensorflow as tf

    return tf.function(lambda ids: model.scores(model.last_hidden(ids)), reduce_retracing=True)


def rank_split(model, split, length, sampled_seed=0, score=None, batch_size=EVAL_BATCH):
    """0-based ranks of each user's target: full ranking (history excluded) and sampled-100.

    Users are scored in order of history length so that batches pad little.

    Returns:
        (full_ranks, sampled_ranks), int arrays of `len(split)`, in user order.
    """
    score = score or _scorer(model)
    num_items = model.vocabulary_size
    rng = np.random.default_rng(sampled_seed)
    negatives = np.stack(
        [
            metrics.sampled_negatives(rng, num_items, items, n=SAMPLED_NEGATIVES)
            for items in split.interacted
        ]
    )
    histories = [h[-length:] for h in split.histories]
    order = np.argsort([len(h) for h in histories], kind="stable")
    full = np.zeros(len(split), np.int64)
    sampled = np.zeros(len(split), np.int64)
    for start in range(0, len(order), batch_size):
        users = order[start : start + batch_size]
        width = max(1, max(len(histories[u]) for u in users))
        width = min(length, -(-width // 8) * 8)  # fewer distinct shapes to trace
        ids = np.zeros((len(users), width), np.int32)
        for row, u in enumerate(users):
            ids[row, : len(histories[u])] = histories[u]
        scores = score(ids).numpy()
        exclude = np.zeros(scores.shape, bool)
        exclude[:, :NUM_RESERVED_IDS] = True
        for row, u in enumerate(users):
            exclude[row, split.histories[u]] = True
        targets = split.targets[users]
        full[users] = metrics.rank_of_target(scores, targets, exclude)
        rows = np.arange(len(users))
        sampled[users] = metrics.sampled_rank(
            scores[rows, targets], scores[rows[:, None], negatives[users]]
        )
    return full, sampled


def validation_ranking(model, data, config):
    """A Keras callback writing full-ranking validation metrics into the epoch logs
    (`val_ndcg_at_10`, `val_hr_at_10`, `val_mrr`), for early stopping and the training log."""
    import keras

    class ValidationRanking(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.score = _scorer(model)

        def on_epoch_end(self, epoch, logs=None):
            if logs is None or not len(data.validation):
                return
            started = time.perf_counter()
            full, _ = rank_split(
                model,
                data.validation,
                config.model.sequence_length,
                config.train.seed,
                score=self.score,
            )
            report = metrics.ranking_report(full)
            for key in ("ndcg_at_10", "hr_at_10", "mrr"):
                logs[f"val_{key}"] = report[key]
            logger.info(
                "Epoch %d validation (full ranking, %d users, %.1f s): NDCG@10 %.4f "
                "HR@10 %.4f MRR %.4f",
                epoch + 1,
                report["users"],
                time.perf_counter() - started,
                report["ndcg_at_10"],
                report["hr_at_10"],
                report["mrr"],
            )

    return ValidationRanking()


def callbacks(config, data, model, run_dir):
    return [validation_ranking(model, data, config)]


def _report(model, data, split, config):
    full, sampled = rank_split(
        model, split, config.model.sequence_length, sampled_seed=config.train.seed
    )
    out = {
        "full": metrics.ranking_report(full),
        "sampled_100": metrics.ranking_report(sampled),
    }
    cold = np.isin(split.targets, data.cold_items)
    if cold.any():
        out["full_cold_targets"] = metrics.ranking_report(full[cold])
        out["full_warm_targets"] = metrics.ranking_report(full[~cold])
    return out


def evaluate(model, preprocessor, data, config, run_dir):
    started = time.perf_counter()
    report = {
        "task": "ranking",
        "protocol": "P2 leave-one-out: full ranking with the history excluded; "
        f"sampled: target vs {SAMPLED_NEGATIVES} uniform non-interacted items",
        "validation": _report(model, data, data.validation, config),
        "test": _report(model, data, data.test, config),
    }
    test = report["test"]
    report["headline"] = {
        "ndcg_at_10": test["full"]["ndcg_at_10"],
        "hr_at_10": test["full"]["hr_at_10"],
        "mrr": test["full"]["mrr"],
        "sampled_ndcg_at_10": test["sampled_100"]["ndcg_at_10"],
        "sampled_hr_at_10": test["sampled_100"]["hr_at_10"],
    }
    logger.info("Evaluated in %.1f s: %s", time.perf_counter() - started, report["headline"])
    return report


def export(model, preprocessor, data, config, export_dir):
    from recsys.tasks import ranking_export

    return ranking_export.export(
        model,
        data.vocabulary.to_list(),
        data.popularity,
        config.model.sequence_length,
        export_dir,
        catalog=data.catalog,
    )


def card_extras(data, config):
    return {
        "num_items": len(data.vocabulary.items),
        "vocabulary_size": len(data.vocabulary),
        "cold_items": len(data.cold_items),
        "history_order": "oldest first",
        "max_history": config.model.sequence_length,
        "loss": config.model.loss,
        "exclude_seen": config.model.exclude_seen,
        "text_fusion": config.model.text_fusion,
    }
