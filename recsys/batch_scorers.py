"""Batch-scoring tasks: how a SavedModel scores the work items of a planned job.

A task is built by `recsys.batch_tasks.plan_task` around its `Plan` and is plain data when
pickled (the Beam runner ships it to workers); it opens its input cursors and loads the
SavedModel lazily, once per process:

- `task.elements(part)`: the part's work items, tuples of plain values;
- `task.score(elements)`: a `pyarrow.Table` of output rows (`task.schema`), from any list of
  work items, batched into model calls of `batch_size` rows.

Only TensorFlow and `tensorflow_text` are needed to score (never Keras or training code).
"""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from recsys import batch_inputs, schema
from recsys.batch_inputs import TaskError
from recsys.data.streaming import RowCursor, TableStream, chunks

if TYPE_CHECKING:
    from recsys.batch_tasks import Plan

_PAD_PAIR = "padding | padding"  # keeps `score`'s history features finite (see `_cold`)


def load_saved_model(model_dir):
    """`tf.saved_model.load`, after registering the tokenizer ops of TF Text."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the tokenizer ops before loading)

    return tf.saved_model.load(str(model_dir))


class BatchTask:
    """A planned job: reads parts and scores work items. Cursors and the model load lazily."""

    mode = None
    columns = ()
    on_rows = None  # called with the number of output rows after each model call (progress)

    def __init__(self, plan: Plan):
        self.plan = plan
        self._cursor = None
        self._model = None

    def __getstate__(self):  # pickled for Beam workers: plain data only
        return {"plan": self.plan}

    def __setstate__(self, state):
        self.__init__(state["plan"])

    # reading
    def _rows(self, start, stop, path=None, columns=None):
        path = path or self.plan.table
        columns = list(columns or self.columns)
        key = (path, tuple(columns))
        if self._cursor is None or self._cursor[0] != key or start < self._cursor[2]:
            self._cursor = (key, RowCursor(TableStream(path), columns), start)
        self._cursor = (*self._cursor[:2], start)
        return self._cursor[1].take(start, stop)

    def elements(self, part) -> list:
        raise NotImplementedError

    # scoring
    def load(self):
        """Loads the SavedModel (once) and checks its signatures; returns self."""
        if self._model is None:
            module = load_saved_model(self.plan.model_dir)
            self._model = module  # keep the object alive: signatures reference it
            self._load(module)
        return self

    def _load(self, module):
        raise NotImplementedError

    @property
    def schema(self) -> pa.Schema:
        raise NotImplementedError

    def score(self, elements) -> pa.Table:
        raise NotImplementedError

    def _report(self, rows):
        if self.on_rows is not None:
            self.on_rows(rows)

    def batches(self, elements):
        size = self.plan.options.batch_size
        for start in range(0, len(elements), size):
            yield elements[start : start + size]


class ClassifyTask(BatchTask):
    """Work item: `(row, id, text)`. Output: id (or row), label, probability[, probabilities]."""

    mode = "classify"

    @property
    def columns(self):
        id_column = self.plan.details["id_column"]
        text_columns = self.plan.details["text_columns"]
        return text_columns + ([id_column] if id_column and id_column not in text_columns else [])

    def elements(self, part):
        start, stop = self.plan.part_range(part)
        table = self._rows(start, stop)
        texts = batch_inputs.join_texts(table, self.plan.details["text_columns"], self.plan.table)
        id_column = self.plan.details["id_column"]
        ids = (
            batch_inputs.strings(table.column(id_column), self.plan.table, id_column)
            if id_column
            else [None] * len(texts)
        )
        return list(zip(range(start, start + len(texts)), ids, texts, strict=True))

    def _load(self, module):
        import tensorflow as tf

        self._classify = schema.signature(
            module, schema.SIGNATURE_CLASSIFY, self.plan.model_dir, TaskError
        )
        probe = self._classify(text=tf.constant(["warm up"]))
        classes = int(probe["probabilities"].shape[-1])
        labels = self.plan.details["labels"] or [str(i) for i in range(classes)]
        if classes != len(labels):
            raise TaskError(
                f"{self.plan.model_dir}: classify returns {classes} probabilities but the model "
                f"card names {len(labels)} labels."
            )
        self._labels = np.asarray(labels, dtype=object)
        if ("predicted" in probe) != self.plan.details["multi_label"]:
            raise TaskError(
                f"{self.plan.model_dir}: the model card says multi_label="
                f"{self.plan.details['multi_label']} but classify "
                f"{'returns' if 'predicted' in probe else 'does not return'} `predicted`."
            )

    @property
    def schema(self):
        id_column = self.plan.details["id_column"]
        fields = [(id_column, pa.string())] if id_column else [("row", pa.int64())]
        fields += [("label", pa.string()), ("probability", pa.float32())]
        if self.plan.options.all_probabilities:
            fields.append(("probabilities", pa.list_(pa.float32())))
        if self.plan.details["multi_label"]:
            fields.append(("labels", pa.list_(pa.string())))
        return pa.schema(fields)

    def score(self, elements):
        import tensorflow as tf

        self.load()
        labels, probabilities, predicted = [], [], []
        for batch in self.batches(elements):
            out = self._classify(text=tf.constant([e[2] for e in batch], tf.string))
            labels.append(out["label"].numpy())
            probabilities.append(out["probabilities"].numpy().astype(np.float32))
            if self.plan.details["multi_label"]:
                predicted.append(out["predicted"].numpy())
            self._report(len(batch))
        probs = np.concatenate(probabilities) if probabilities else np.zeros((0, len(self._labels)))
        id_column = self.plan.details["id_column"]
        columns = {
            (id_column or "row"): [e[1] if id_column else e[0] for e in elements],
            "label": pa.array(np.concatenate(labels) if labels else [], pa.binary()).cast(
                pa.string()
            ),
            "probability": probs.max(axis=1) if len(probs) else np.zeros(0, np.float32),
        }
        if self.plan.options.all_probabilities:
            columns["probabilities"] = list(probs)
        if self.plan.details["multi_label"]:
            flags = np.concatenate(predicted) if predicted else np.zeros((0, len(self._labels)))
            columns["labels"] = [self._labels[row].tolist() for row in flags.astype(bool)]
        return pa.table(columns, schema=self.schema)


class _UsersTask(BatchTask):
    @property
    def columns(self):
        extra = ["history_events"] if self.plan.details["has_events"] else []
        return ["user_id", "history", *extra]


class RankTask(_UsersTask):
    """Work item: `(user_id, history)`. Output: user_id, rank (1 = best), product_id, score."""

    mode = "rank"
    columns = ("user_id", "history")

    def elements(self, part):
        start, stop = self.plan.part_range(part)
        table = self._rows(start, stop)
        return [(u, h) for u, h, _ in batch_inputs.user_items(table, False, self.plan.table)]

    def _load(self, module):
        self._recommend = schema.signature(
            module, schema.SIGNATURE_RECOMMEND, self.plan.model_dir, TaskError
        )

    @property
    def schema(self):
        return pa.schema(
            [
                ("user_id", pa.string()),
                ("rank", pa.int32()),
                ("product_id", pa.string()),
                ("score", pa.float32()),
            ]
        )

    def score(self, elements):
        import tensorflow as tf

        self.load()
        k = self.plan.details["k"]
        oldest_first = self.plan.details["oldest_first"]
        parts = []
        for batch in self.batches(elements):
            histories = [list(h)[::-1] if oldest_first else list(h) for _, h in batch]
            width = max(1, max(len(h) for h in histories))
            padded = [h + [""] * (width - len(h)) for h in histories]
            out = self._recommend(
                history=tf.constant(padded, tf.string, shape=[len(batch), width]),
                k=tf.constant(k, tf.int32),
                exclude=tf.zeros([len(batch), 0], tf.string),
            )
            ids, scores = out["product_ids"].numpy(), out["scores"].numpy().astype(np.float32)
            keep = (ids != b"") & np.isfinite(scores)
            self._report(int(keep.sum()))
            user_rows, ranks = np.nonzero(keep)
            users = np.asarray([u for u, _ in batch], dtype=object)
            parts.append(
                pa.table(
                    {
                        "user_id": users[user_rows].tolist(),
                        "rank": (ranks + 1).astype(np.int32),
                        "product_id": pa.array(ids[keep], pa.binary()).cast(pa.string()),
                        "score": scores[keep],
                    },
                    schema=self.schema,
                )
            )
        return pa.concat_tables(parts) if parts else self.schema.empty_table()


class _BuyTask(_UsersTask):
    """Buy probabilities through `score_catalog` (the user context is encoded once per call).

    A user without a known history item (a cold user) has an empty context, so their
    probabilities do not depend on the user: each product's is computed once per process,
    through `score` with an empty context, as the HTTP service does (some exported models
    return NaN from `score_catalog` for a context without any item).
    """

    OUTPUT = pa.schema(
        [("user_id", pa.string()), ("product_id", pa.string()), ("probability", pa.float32())]
    )

    @property
    def schema(self):
        return self.OUTPUT

    def _load(self, module):
        import tensorflow as tf

        self._score_catalog = schema.signature(
            module, schema.SIGNATURE_SCORE_CATALOG, self.plan.model_dir, TaskError
        )
        self._score = schema.signature(
            module, schema.SIGNATURE_SCORE, self.plan.model_dir, TaskError
        )
        ids = self._model_ids().to_pylist()
        self._index = {pid: i for i, pid in enumerate(ids)}
        texts = getattr(module, "product_texts", None)  # the texts `score_catalog` uses
        if texts is not None and int(texts.shape[0]) == len(ids):
            self._texts = [t.decode("utf-8") for t in texts.numpy()]
        else:
            self._texts = self._catalog_texts(ids)
        self._cold_cache = np.full(len(ids), np.nan, dtype=np.float32)
        self._empty = tf.constant("", tf.string)

    def _model_ids(self):
        """The product ids of the model's catalog, an Arrow array (read once per process)."""
        if getattr(self, "_model_id_array", None) is None:
            self._model_id_array = batch_inputs.model_catalog(self.plan.model_dir, required=True)
        return self._model_id_array

    def _catalog_texts(self, ids):
        import pandas as pd

        from recsys.data.buy_pairs import catalog_texts

        catalog = pd.read_parquet(pathlib.Path(self.plan.model_dir) / schema.CATALOG_ASSET)
        _, products = catalog_texts(catalog.assign(product_id=catalog["product_id"].astype(str)))
        return [products[i] for i in ids]

    def _is_cold(self, history):
        return not any(pid in self._index for pid in history)

    def _cold(self, products):
        """Probabilities for a cold user (empty context) of catalog products."""
        import tensorflow as tf

        rows = np.fromiter((self._index[p] for p in products), dtype=np.int64, count=len(products))
        missing = np.unique(rows[np.isnan(self._cold_cache[rows])])
        for start in range(0, len(missing), self.plan.options.batch_size):
            chunk = missing[start : start + self.plan.options.batch_size]
            # A padding pair with a one-item context rides along: the history features take a
            # max over the batch's history items, which is NaN when no row has any.
            contexts = [""] * len(chunk) + [_PAD_PAIR]
            texts = [self._texts[i] for i in chunk] + [_PAD_PAIR]
            out = self._score(context=tf.constant(contexts), product=tf.constant(texts))
            self._cold_cache[chunk] = out["probability"].numpy()[:-1]
        self._report(len(rows))
        return self._cold_cache[rows]

    def _user_scores(self, history, events, products):
        """Probabilities of one user for `products` (a list of known ids)."""
        import tensorflow as tf

        if self._is_cold(history):
            return self._cold(products)
        history_t = tf.constant(list(history), tf.string, shape=[len(history)])
        events_t = tf.constant(list(events), tf.string, shape=[len(events)])
        out = []
        for start in range(0, len(products), self.plan.options.batch_size):
            batch = products[start : start + self.plan.options.batch_size]
            result = self._score_catalog(
                history=history_t,
                history_events=events_t,
                candidates=tf.constant(batch, tf.string, shape=[len(batch)]),
                query=self._empty,
            )
            out.append(result["probability"].numpy())
            self._report(len(batch))
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


class BuyPairsTask(_BuyTask):
    """Every user against a catalog. Work item: `(user_id, history, events, first, stop)`, the
    user's products `[first, stop)` of the scoring catalog (parts may cut a user in two)."""

    mode = "buy_pairs"

    def products(self):
        """The scoring catalog's product ids (read once per process)."""
        if getattr(self, "_products", None) is None:
            ids, _ = batch_inputs.scoring_catalog(
                self.plan.details["catalog"], self._model_ids(), self.plan.options
            )
            if len(ids) != self.plan.details["products"]:
                raise TaskError(f"{self.plan.details['catalog']} changed since the job started.")
            self._products = ids
        return self._products

    def elements(self, part):
        start, stop = self.plan.part_range(part)
        m = self.plan.details["products"]
        first_user, last_user = start // m, (stop - 1) // m + 1
        users = batch_inputs.user_items(
            self._rows(first_user, last_user), self.plan.details["has_events"], self.plan.table
        )
        out = []
        for offset, (user, history, events) in enumerate(users):
            base = (first_user + offset) * m
            out.append((user, history, events, max(start - base, 0), min(stop - base, m)))
        return out

    def score(self, elements):
        self.load()
        products = self.products()
        users, ids, probabilities = [], [], []
        for user, history, events, first, stop in elements:
            chosen = products[first:stop]
            users.append(np.full(len(chosen), user, dtype=object))
            ids.extend(chosen)
            probabilities.append(self._user_scores(history, events, chosen))
        return _buy_table(self.OUTPUT, users, ids, probabilities)


def _buy_table(output, users, ids, probabilities):
    if not users:
        return output.empty_table()
    return pa.table(
        {
            "user_id": np.concatenate(users).tolist(),
            "product_id": ids,
            "probability": np.concatenate(probabilities).astype(np.float32),
        },
        schema=output,
    )


class BuyCandidatesTask(_BuyTask):
    """Pairs from a candidates file. Work item: `(rows, user_id, history, events, products)`,
    one user's candidates of a part; output rows keep the file's order."""

    mode = "buy_candidates"
    columns = ("user_id", "product_id")

    def histories(self):
        """user_id -> (history, events), from the users table (read once per process)."""
        if getattr(self, "_histories", None) is None:
            has_events = self.plan.details["has_events"]
            columns = ["user_id", "history"] + (["history_events"] if has_events else [])
            stream = TableStream(self.plan.details["users"])
            found = {}
            for _, table in chunks(stream, columns, batch_inputs.CHECK_ROWS):
                for user, history, events in batch_inputs.user_items(
                    table, has_events, stream.path
                ):
                    found[user] = (history, events)
            self._histories = found
        return self._histories

    def elements(self, part):
        start, stop = self.plan.part_range(part)
        table = self._rows(start, stop)
        users = [
            u.strip()
            for u in batch_inputs.strings(table.column("user_id"), self.plan.table, "user_id")
        ]
        products = [
            p.strip()
            for p in batch_inputs.strings(table.column("product_id"), self.plan.table, "product_id")
        ]
        known = self._known()
        histories = self.histories()
        groups = {}
        for row, (user, product) in enumerate(zip(users, products, strict=True), start=start):
            if product in known:  # unknown ones were refused, or are dropped (--drop-unknown)
                groups.setdefault(user, ([], []))
                groups[user][0].append(row)
                groups[user][1].append(product)
        out = []
        for user, (rows, chosen) in groups.items():
            history, events = histories.get(user, ((), ()))
            out.append((tuple(rows), user, history, events, tuple(chosen)))
        return out

    def score(self, elements):
        self.load()
        rows, users, ids, probabilities = [], [], [], []
        for row_ids, user, history, events, chosen in elements:
            rows.extend(row_ids)
            users.append(np.full(len(chosen), user, dtype=object))
            ids.extend(chosen)
            probabilities.append(self._user_scores(history, events, list(chosen)))
        table = _buy_table(self.OUTPUT, users, ids, probabilities)
        return table.take(np.argsort(np.asarray(rows, dtype=np.int64), kind="stable"))

    def _known(self):
        """The product ids the model knows (read once per process)."""
        if getattr(self, "_known_ids", None) is None:
            self._known_ids = set(self._model_ids().to_pylist())
        return self._known_ids
