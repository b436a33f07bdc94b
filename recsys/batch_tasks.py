"""Batch-scoring jobs: which flags fit a model, and a validated plan cut into parts.

A job's input is cut into numbered parts of a fixed number of *units*, in a fixed order, so
that part `i` always holds the same rows and a resumed run recomputes exactly the missing
parts. Units are input rows for the classifier, users for the ranker, and (user, product)
pairs for the buy model (users x catalog, user-major, or the rows of a candidates file).

`check_flags` refuses flags that do not fit the model's task; `plan_task` validates every
input before anything is scored (`recsys.batch_inputs`: one streaming pass, problems become a
`DataError` naming the file, column and row) and returns the scoring task of
`recsys.batch_scorers` that carries the `Plan`.

>>> Plan("rank", "m/1", "users.parquet", 25, 10, 250, Options(), {}).part_range(2)
(20, 25)
"""

from __future__ import annotations

import dataclasses
import logging

from recsys import batch_inputs, schema
from recsys.batch_inputs import TaskError
from recsys.batch_scorers import BuyCandidatesTask, BuyPairsTask, ClassifyTask, RankTask
from recsys.data.errors import DataError
from recsys.data.streaming import TableStream, chunks

logger = logging.getLogger(__name__)

BUY, RANK, CLASSIFY = schema.TASKS


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
    recsys.batch_inputs.TaskError: m/1 is a ranking model: it needs --users, and takes --users, --k, --drop-unknown; --catalog is for buy_probability or text_classification models.
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
    catalog = batch_inputs.model_catalog(model_dir, required=task_name == BUY)
    users, stage = batch_inputs.users_table(inputs["users"], catalog, options, staging_dir)
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


def _plan_classify(card, model_dir, path, options):
    stream = TableStream(path)
    text_columns = list(options.text_columns) or batch_inputs.default_text_columns(
        card, stream.columns
    )
    stream.require(text_columns, f"the text column(s) {text_columns} (see --text-column)")
    id_column = options.id_column
    if id_column is not None:
        stream.require([id_column], "--id-column")
    elif "product_id" in stream.columns:
        id_column = "product_id"
    rows, seen = 0, set()
    wanted = text_columns + [c for c in [id_column] if c is not None and c not in text_columns]
    for start, table in chunks(stream, wanted, batch_inputs.CHECK_ROWS):
        rows = start + table.num_rows
        if id_column is not None:  # the output's rows are told apart by it
            ids = batch_inputs.strings(table.column(id_column), str(path), id_column)
            batch_inputs.refuse_repeats(
                ids, seen, start, str(path), id_column,
                "the id column must tell the rows apart (or leave out --id-column: "
                "the output then numbers the rows)",
            )  # fmt: skip
        texts = batch_inputs.join_texts(table, text_columns, str(path))
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


def _plan_buy_pairs(model_dir, users, catalog_path, catalog, options):
    ids, dropped = batch_inputs.scoring_catalog(catalog_path, catalog, options)
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
    users_known = batch_inputs.user_ids_of(users)
    unknown, first, rows, cold = 0, None, 0, 0
    for start, table in chunks(stream, ["user_id", "product_id"], batch_inputs.CHECK_ROWS):
        rows = start + table.num_rows
        user_ids = batch_inputs.strings(table.column("user_id"), str(path), "user_id")
        batch_inputs.require_ids(user_ids, start, str(path), "user_id")
        products = batch_inputs.strings(table.column("product_id"), str(path), "product_id")
        batch_inputs.require_ids(products, start, str(path), "product_id")
        cold += sum(u.strip() not in users_known for u in user_ids)
        bad = batch_inputs.unknown_positions(products, known)
        unknown += len(bad)
        if bad and first is None:
            first = (start + bad[0], products[bad[0]])
    if rows == 0:
        raise DataError("the candidates table has no rows", path=str(path))
    batch_inputs.refuse_unknown(unknown, str(path), "product_id", *(first or (None, None)), options)
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
