"""Batch-scoring tasks: what each part of a job reads, and how a SavedModel scores it.

A job's input is cut into numbered parts of a fixed number of *units*, in a fixed order, so
that part `i` always holds the same rows and a resumed run recomputes exactly the missing
parts. Units are input rows for the classifier, users for the ranker, and (user, product)
pairs for the buy model (users x catalog, user-major, or the rows of a candidates file).

`plan_task` validates every input before anything is scored (one streaming pass; problems
become a `DataError` naming the file, column and row) and returns a `BatchTask`. A task is
plain data when pickled (the Beam runner ships it to workers); it opens its input cursors
and loads the SavedModel lazily, once per process:

- `task.elements(part)`: the part's work items, tuples of plain values;
- `task.score(elements)`: a `pyarrow.Table` of output rows (`task.schema`), from any list of
  work items, batched into model calls of `batch_size` rows.

Only TensorFlow and `tensorflow_text` are needed to score (never Keras or training code).

Users tables hold `user_id` and `history` (product ids, most recent first: a list column, or a
string of ids separated by spaces), optionally `history_events` (the event of each history
item; `purchase` marks a purchase). An events table (`user_id, product_id, event, timestamp`)
may stand in for it: histories are built from the events, most recent first.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib

import numpy as np
import pyarrow as pa

from recsys import schema
from recsys.data.errors import DataError
from recsys.data.streaming import RowCursor, TableStream, chunks

logger = logging.getLogger(__name__)

BUY, RANK, CLASSIFY = schema.TASKS
CHECK_ROWS = 65_536  # rows per chunk of the validation pass
_PAD_PAIR = "padding | padding"  # keeps `score`'s history features finite (see `_cold`)


class TaskError(DataError):
    """The flags do not fit the model, or the model cannot score: a message-only `DataError`."""


@dataclasses.dataclass(frozen=True)
class Options:
    """What a user may choose for a job.

    Args:
        k: int. Recommendations per user (ranking).
        text_columns: tuple of str. Columns joined with ". " into the text (classification).
        id_column: str or None. The column copied to the output to identify rows.
        drop_unknown: bool. Drop product ids the model does not know instead of refusing.
        all_probabilities: bool. Also write every label's probability (classification).
        part_rows: int. Output rows per part file (about).
        batch_size: int. Rows per model call (for the buy model: products per call).
    """

    k: int = 10
    text_columns: tuple = ()
    id_column: str | None = None
    drop_unknown: bool = False
    all_probabilities: bool = False
    part_rows: int = 100_000
    batch_size: int = 256

    def __post_init__(self):
        if not 1 <= self.k <= schema.MAX_K:
            raise TaskError(f"--k must be in 1..{schema.MAX_K}. Received: {self.k}.")
        if self.part_rows < 1 or self.batch_size < 1:
            raise TaskError(
                f"--part-rows and --batch-size must be >= 1. Received: {self.part_rows}, "
                f"{self.batch_size}."
            )


@dataclasses.dataclass(frozen=True)
class Plan:
    """A validated job: plain values only.

    Args:
        mode: str. "classify", "rank", "buy_pairs" or "buy_candidates".
        model_dir: str. The SavedModel's version directory.
        table: str. The file whose rows are the units (for buy pairs: the users).
        units: int. Units in the whole job.
        units_per_part: int.
        expected_rows: int. Output rows (an upper bound for ranking).
        options: Options.
        details: dict. Mode-specific settings (labels, text columns, catalog, ...).
    """

    mode: str
    model_dir: str
    table: str
    units: int
    units_per_part: int
    expected_rows: int
    options: Options
    details: dict

    @property
    def num_parts(self) -> int:
        return -(-self.units // self.units_per_part) if self.units else 0

    def part_range(self, part):
        """The units `[start, stop)` of a part."""
        start = part * self.units_per_part
        return start, min(start + self.units_per_part, self.units)


# -- planning ----------------------------------------------------------------------------------

FLAGS = {  # task -> (required inputs, allowed inputs and options)
    BUY: ({"users"}, {"users", "catalog", "candidates", "drop_unknown"}),
    RANK: ({"users"}, {"users", "k", "drop_unknown"}),
    CLASSIFY: ({"catalog"}, {"catalog", "text_columns", "id_column", "all_probabilities"}),
}
_FLAG_NAMES = {
    "users": "--users",
    "catalog": "--catalog",
    "candidates": "--candidates",
    "k": "--k",
    "text_columns": "--text-column",
    "id_column": "--id-column",
    "all_probabilities": "--all-probabilities",
    "drop_unknown": "--drop-unknown",
}


def check_flags(task, given, model_dir):
    """Refuses flags that do not fit the model's task (before any data is read).

    >>> check_flags("ranking", {"users", "k"}, "m/1")
    >>> check_flags("ranking", {"users", "catalog"}, "m/1")
    Traceback (most recent call last):
    ...
    recsys.batch_tasks.TaskError: m/1 is a ranking model: it needs --users, and takes --users, --k, --drop-unknown; --catalog is for buy_probability or text_classification models.
    """
    if task not in FLAGS:
        raise TaskError(
            f"{model_dir}: unknown task {task!r} in the model card; batch scoring knows "
            f"{list(FLAGS)}."
        )
    required, allowed = FLAGS[task]
    missing, extra = sorted(required - set(given)), sorted(set(given) - allowed)
    if not missing and not extra:
        return
    names = ", ".join(_FLAG_NAMES[f] for f in sorted(allowed, key=list(_FLAG_NAMES).index))
    message = (
        f"{model_dir} is a {task} model: it needs "
        f"{', '.join(_FLAG_NAMES[f] for f in sorted(required))}, and takes {names}"
    )
    if missing:
        message += f"; missing {', '.join(_FLAG_NAMES[f] for f in missing)}"
    for flag in extra:
        owners = [t for t, (_, ok) in FLAGS.items() if flag in ok]
        message += f"; {_FLAG_NAMES[flag]} is for {' or '.join(owners) or 'no'} models"
    raise TaskError(message + ".")


def plan_task(card, model_dir, inputs, options, staging_dir):
    """Validates the inputs against the model and plans the job.

    Args:
        card: dict. The model card.
        model_dir: path. The version directory.
        inputs: dict. "users", "catalog", "candidates" -> path or None.
        options: Options.
        staging_dir: path. Where histories built from events are written (by `stage()`).

    Returns:
        `(task, stage)`: a `BatchTask`, and a function to call once the output folder may
        be written (it writes the staged users table, if any), or None.

    Raises:
        DataError: bad input; TaskError: the flags do not fit the model.
    """
    task_name = card.get("task")
    model_dir = str(model_dir)
    if task_name == CLASSIFY:
        return _plan_classify(card, model_dir, inputs["catalog"], options), None
    catalog = _model_catalog(model_dir, required=task_name == BUY)
    users, stage = _users_table(inputs["users"], catalog, options, staging_dir)
    if task_name == RANK:
        return _plan_rank(card, model_dir, users, catalog, options), stage
    if inputs.get("candidates"):
        if inputs.get("catalog"):
            raise TaskError(
                "--catalog and --candidates are exclusive: score the pairs of --candidates, "
                "or every user against --catalog."
            )
        return _plan_buy_candidates(model_dir, users, inputs["candidates"], catalog, options), stage
    return _plan_buy_pairs(model_dir, users, inputs.get("catalog"), catalog, options), stage


def _model_catalog(model_dir, required):
    """The product ids the model knows (`catalog.parquet`), or None where it has none."""
    path = pathlib.Path(model_dir) / schema.CATALOG_ASSET
    if not path.is_file():
        if required:
            raise TaskError(f"{model_dir} has no {schema.CATALOG_ASSET}; re-export the model.")
        logger.warning("%s has no %s: product ids are not checked", model_dir, path.name)
        return None
    import pyarrow.parquet as pq

    ids = pq.read_table(path, columns=["product_id"]).column("product_id")
    return ids.cast(pa.string()).combine_chunks()


def _strings(column, path, name):
    """A column as Python strings (None for nulls); lists and structs are refused."""
    if pa.types.is_nested(column.type):
        raise DataError(f"expected text values, got {column.type}", path=path, column=name)
    return column.cast(pa.string()).to_pylist()


def _require_ids(values, start, path, name):
    for i, value in enumerate(values):
        if value is None or not value.strip():
            raise DataError(f"empty value; every row needs a {name}", path, name, start + i)


def _refuse_repeats(values, seen, start, path, name, hint):
    """Raises on the first value already in `seen` (which collects the values)."""
    for i, value in enumerate(values):
        if value is None:
            continue
        key = value.strip()
        if key in seen:
            raise DataError(f"duplicate {name}; {hint}", path, name, start + i, key)
        seen.add(key)


def _id_lists(column, path, name):
    """A history column as lists of str: a list column, or ids separated by spaces."""
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        if pa.types.is_nested(column.type.value_type):
            raise DataError(f"expected a list of ids, got {column.type}", path=path, column=name)
        lists = column.cast(pa.list_(pa.string())).to_pylist()
        return [[v for v in (items or ()) if v] for items in lists]
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return [(text or "").split() for text in column.to_pylist()]
    raise DataError(
        f"expected a list of product ids (or a string of ids separated by spaces), got "
        f"{column.type}",
        path=path,
        column=name,
    )


def _unknown(ids, known):
    return [i for i, pid in enumerate(ids) if pid.strip() not in known]


def _refuse_unknown(count, path, column, row, value, options):
    if count and not options.drop_unknown:
        raise DataError(
            f"{count} product id(s) are not in the model's catalog; score only products the "
            "model was exported with, or pass --drop-unknown to skip them",
            path=path,
            column=column,
            row=row,
            value=value,
        )
    if count:
        logger.warning("%s: dropping %d product id(s) unknown to the model", path, count)


def _users_table(path, catalog, options, staging_dir):
    """The users table (validated), or histories staged from an events table."""
    stream = TableStream(path)
    columns = set(stream.columns)
    if "history" not in columns and set(schema.EVENTS.required) <= columns:
        return _stage_events(path, catalog, options, staging_dir)
    stream.require(["user_id", "history"], "a users table (or an events table)")
    has_events = "history_events" in columns
    known = None if catalog is None else set(catalog.to_pylist())
    wanted = ["user_id", "history"] + (["history_events"] if has_events else [])
    unknown, first, rows, seen = 0, None, 0, set()
    for start, table in chunks(stream, wanted, CHECK_ROWS):
        rows = start + table.num_rows
        user_ids = _strings(table.column("user_id"), str(path), "user_id")
        _require_ids(user_ids, start, path, "user_id")
        _refuse_repeats(
            user_ids, seen, start, str(path), "user_id",
            "each user must appear once, with their whole history on one row",
        )  # fmt: skip
        histories = _id_lists(table.column("history"), str(path), "history")
        if has_events:
            events = _id_lists(table.column("history_events"), str(path), "history_events")
            for i, (h, e) in enumerate(zip(histories, events, strict=True)):
                if len(h) != len(e):
                    raise DataError(
                        f"history_events has {len(e)} values for {len(h)} history items; "
                        "expected one event per item",
                        str(path),
                        "history_events",
                        start + i,
                    )
        if known is not None:
            for i, history in enumerate(histories):
                bad = [pid for pid in history if pid not in known]
                unknown += len(bad)
                if bad and first is None:
                    first = (start + i, bad[0])
    if rows == 0:
        raise DataError("the users table has no rows", path=str(path))
    _refuse_unknown(unknown, str(path), "history", *(first or (None, None)), options)
    return Users(str(path), rows, has_events), None


@dataclasses.dataclass(frozen=True)
class Users:
    path: str
    rows: int
    has_events: bool
    frame: object = None  # histories built from events, before they are staged


def _user_ids(users):
    """The set of user ids of a users table (or of the staged histories, not written yet)."""
    if users.frame is not None:
        return set(users.frame["user_id"])
    found = set()
    for _, table in chunks(TableStream(users.path), ["user_id"], CHECK_ROWS):
        found.update(u.strip() for u in _strings(table.column("user_id"), users.path, "user_id"))
    return found


def _stage_events(path, catalog, options, staging_dir):
    """Histories from an events table (loaded whole), written as a users table by `stage`."""
    import pandas as pd

    from recsys.data.events import load_events

    known = None if catalog is None else pd.DataFrame({"product_id": catalog.to_pylist()})
    on_unknown = "drop" if options.drop_unknown else "error"
    events = load_events(path, catalog=known, on_unknown=on_unknown)  # sorted by time
    recent = events.iloc[::-1]
    recent = recent[recent.groupby("user_id", sort=False).cumcount() < schema.MAX_HISTORY]
    grouped = recent.groupby("user_id", sort=True)
    users = pd.DataFrame(
        {
            "history": grouped["product_id"].agg(list),
            "history_events": grouped["event"].agg(list),
        }
    ).reset_index()
    if users.empty:
        raise DataError("no events left to build histories from", path=str(path))
    staged = pathlib.Path(staging_dir) / "users.parquet"
    logger.info("Built %d user histories from %d events", len(users), len(events))

    def stage():
        import pyarrow.parquet as pq

        staged.parent.mkdir(parents=True, exist_ok=True)
        tmp = staged.with_name(f".{staged.name}.tmp")
        table = pa.Table.from_pandas(users, preserve_index=False)
        pq.write_table(table.cast(_USERS_SCHEMA), tmp)
        tmp.replace(staged)

    return Users(str(staged), len(users), True, frame=users), stage


_USERS_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("history", pa.list_(pa.string())),
        ("history_events", pa.list_(pa.string())),
    ]
)


def _plan_classify(card, model_dir, path, options):
    stream = TableStream(path)
    text_columns = list(options.text_columns) or _default_text_columns(card, stream.columns)
    stream.require(text_columns, f"the text column(s) {text_columns} (see --text-column)")
    id_column = options.id_column
    if id_column is not None:
        stream.require([id_column], "--id-column")
    elif "product_id" in stream.columns:
        id_column = "product_id"
    rows, seen = 0, set()
    wanted = text_columns + [c for c in [id_column] if c is not None and c not in text_columns]
    for start, table in chunks(stream, wanted, CHECK_ROWS):
        rows = start + table.num_rows
        if id_column is not None:  # the output's rows are told apart by it
            _refuse_repeats(
                _strings(table.column(id_column), str(path), id_column), seen, start, str(path),
                id_column, "the id column must tell the rows apart (or leave out --id-column: "
                "the output then numbers the rows)",
            )  # fmt: skip
        texts = _join_texts(table, text_columns, str(path))
        for i, text in enumerate(texts):
            if not text:
                raise DataError(
                    f"empty text; every row needs text in {text_columns}",
                    str(path),
                    text_columns[0],
                    start + i,
                )
    if rows == 0:
        raise DataError("the table has no rows", path=str(path))
    details = {
        "text_columns": text_columns,
        "id_column": id_column,
        "labels": [str(label) for label in card.get("labels") or []],
        "multi_label": bool(card.get("multi_label")),
    }
    return ClassifyTask(
        Plan("classify", model_dir, str(path), rows, options.part_rows, rows, options, details)
    )


def _default_text_columns(card, columns):
    trained = ((card.get("config") or {}).get("data") or {}).get("text_columns") or []
    for candidate in (list(trained), ["text"], ["title"]):
        if candidate and all(c in columns for c in candidate):
            return candidate
    raise DataError(
        f"no text column: expected {'/'.join(trained) or 'text'} or title, found {columns}; "
        "name it with --text-column"
    )


def _join_texts(table, columns, path):
    """Non-blank values joined with ". ", as training joins text columns."""
    values = [_strings(table.column(c), path, c) for c in columns]
    return [
        ". ".join(v.strip() for v in row if v is not None and v.strip())
        for row in zip(*values, strict=True)
    ]


def _plan_rank(card, model_dir, users, catalog, options):
    k = options.k
    if catalog is not None and k > len(catalog):
        logger.warning("--k %d is more than the model's %d products: using %d", k, len(catalog), k)
        k = len(catalog)
    details = {
        "k": k,
        "oldest_first": card.get("history_order", "oldest first") == "oldest first",
        "has_events": users.has_events,
    }
    per_part = max(1, options.part_rows // k)
    plan = Plan(
        "rank", model_dir, users.path, users.rows, per_part, users.rows * k, options, details
    )
    return RankTask(plan)


def _scoring_catalog(path, catalog, options):
    """The product ids to score every user against: `--catalog`'s, or the model's own."""
    if path is None:
        return catalog.to_pylist(), 0
    stream = TableStream(path)
    stream.require(["product_id"], "a catalog")
    known = set(catalog.to_pylist())
    ids, seen, unknown, first = [], set(), 0, None
    for start, table in chunks(stream, ["product_id"], CHECK_ROWS):
        values = _strings(table.column("product_id"), str(path), "product_id")
        _require_ids(values, start, str(path), "product_id")
        for i, pid in enumerate(values):
            pid = pid.strip()
            if pid in seen:
                raise DataError(
                    "duplicate product_id; each product_id must appear once",
                    str(path),
                    "product_id",
                    start + i,
                    pid,
                )
            seen.add(pid)
            if pid in known:
                ids.append(pid)
            else:
                unknown += 1
                first = first or (start + i, pid)
    _refuse_unknown(unknown, str(path), "product_id", *(first or (None, None)), options)
    if not ids:
        raise DataError("no product to score", path=str(path))
    return ids, unknown


def _plan_buy_pairs(model_dir, users, catalog_path, catalog, options):
    ids, dropped = _scoring_catalog(catalog_path, catalog, options)
    units = users.rows * len(ids)
    details = {
        "catalog": catalog_path,
        "products": len(ids),
        "dropped_products": dropped,
        "has_events": users.has_events,
    }
    plan = Plan(
        "buy_pairs", model_dir, users.path, units, options.part_rows, units, options, details
    )
    return BuyPairsTask(plan)


def _plan_buy_candidates(model_dir, users, path, catalog, options):
    stream = TableStream(path)
    stream.require(["user_id", "product_id"], "a candidates table")
    known = set(catalog.to_pylist())
    users_known = _user_ids(users)
    unknown, first, rows, cold = 0, None, 0, 0
    for start, table in chunks(stream, ["user_id", "product_id"], CHECK_ROWS):
        rows = start + table.num_rows
        for name in ("user_id", "product_id"):
            _require_ids(_strings(table.column(name), str(path), name), start, str(path), name)
        user_ids = _strings(table.column("user_id"), str(path), "user_id")
        cold += sum(u.strip() not in users_known for u in user_ids)
        products = _strings(table.column("product_id"), str(path), "product_id")
        bad = _unknown(products, known)
        unknown += len(bad)
        if bad and first is None:
            first = (start + bad[0], products[bad[0]])
    if rows == 0:
        raise DataError("the candidates table has no rows", path=str(path))
    _refuse_unknown(unknown, str(path), "product_id", *(first or (None, None)), options)
    if cold:
        logger.warning("%d candidate pair(s) name users without a history in %s", cold, users.path)
    details = {"users": users.path, "has_events": users.has_events}
    plan = Plan(
        "buy_candidates",
        model_dir,
        str(path),
        rows,
        options.part_rows,
        rows - unknown,
        options,
        details,
    )
    return BuyCandidatesTask(plan)


# -- reading and scoring -----------------------------------------------------------------------


def load_saved_model(model_dir):
    """`tf.saved_model.load`, after registering the tokenizer ops of TF Text."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the tokenizer ops before loading)

    return tf.saved_model.load(str(model_dir))


def _signature(module, name, model_dir):
    try:
        return module.signatures[name]
    except KeyError:
        raise TaskError(
            f"{model_dir} has no signature {name!r}; it has {sorted(module.signatures)}."
        ) from None


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
        texts = _join_texts(table, self.plan.details["text_columns"], self.plan.table)
        id_column = self.plan.details["id_column"]
        ids = (
            _strings(table.column(id_column), self.plan.table, id_column)
            if id_column
            else [None] * len(texts)
        )
        return list(zip(range(start, start + len(texts)), ids, texts, strict=True))

    def _load(self, module):
        import tensorflow as tf

        self._classify = _signature(module, schema.SIGNATURE_CLASSIFY, self.plan.model_dir)
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


def _user_items(table, has_events, path):
    """`(user_id, history, history_events)` tuples of a users table slice."""
    users = _strings(table.column("user_id"), path, "user_id")
    histories = _id_lists(table.column("history"), path, "history")
    if has_events:
        events = _id_lists(table.column("history_events"), path, "history_events")
    else:
        events = [["view"] * len(h) for h in histories]
    return [
        (u.strip(), tuple(h), tuple(e)) for u, h, e in zip(users, histories, events, strict=True)
    ]


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
        return [(u, h) for u, h, _ in _user_items(table, False, self.plan.table)]

    def _load(self, module):
        self._recommend = _signature(module, schema.SIGNATURE_RECOMMEND, self.plan.model_dir)

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

        self._score_catalog = _signature(
            module, schema.SIGNATURE_SCORE_CATALOG, self.plan.model_dir
        )
        self._score = _signature(module, schema.SIGNATURE_SCORE, self.plan.model_dir)
        ids = _model_catalog(self.plan.model_dir, required=True).to_pylist()
        self._index = {pid: i for i, pid in enumerate(ids)}
        texts = getattr(module, "product_texts", None)  # the texts `score_catalog` uses
        if texts is not None and int(texts.shape[0]) == len(ids):
            self._texts = [t.decode("utf-8") for t in texts.numpy()]
        else:
            self._texts = self._catalog_texts(ids)
        self._cold_cache = np.full(len(ids), np.nan, dtype=np.float32)
        self._empty = tf.constant("", tf.string)

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
            catalog = _model_catalog(self.plan.model_dir, required=True)
            ids, _ = _scoring_catalog(self.plan.details["catalog"], catalog, self.plan.options)
            if len(ids) != self.plan.details["products"]:
                raise TaskError(f"{self.plan.details['catalog']} changed since the job started.")
            self._products = ids
        return self._products

    def elements(self, part):
        start, stop = self.plan.part_range(part)
        m = self.plan.details["products"]
        first_user, last_user = start // m, (stop - 1) // m + 1
        users = _user_items(
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
            for _, table in chunks(stream, columns, CHECK_ROWS):
                for user, history, events in _user_items(table, has_events, stream.path):
                    found[user] = (history, events)
            self._histories = found
        return self._histories

    def elements(self, part):
        start, stop = self.plan.part_range(part)
        table = self._rows(start, stop)
        users = [u.strip() for u in _strings(table.column("user_id"), self.plan.table, "user_id")]
        products = [
            p.strip() for p in _strings(table.column("product_id"), self.plan.table, "product_id")
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
            self._known_ids = set(_model_catalog(self.plan.model_dir, required=True).to_pylist())
        return self._known_ids
