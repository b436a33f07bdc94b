"""Reading and checking the tables of a batch-scoring job (see `recsys.batch_tasks`).

Every check streams its table in chunks of `CHECK_ROWS` rows and raises a `DataError` that
names the file, column, row and value of the first problem; readers turn table slices into
plain Python values for the scoring tasks (`recsys.batch_scorers`).

Users tables hold `user_id` and `history` (product ids, most recent first: a list column, or a
string of ids separated by spaces), optionally `history_events` (the event of each history
item; `purchase` marks a purchase). An events table (`user_id, product_id, event, timestamp`)
may stand in for it: histories are built from the events, most recent first.

>>> import pyarrow as pa
>>> table = pa.table({"title": ["Mug", None], "text": [" Blue ", "Red"]})
>>> join_texts(table, ["title", "text"], "t")
['Mug. Blue', 'Red']
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib

import pyarrow as pa

from recsys import schema
from recsys.data.errors import DataError
from recsys.data.streaming import TableStream, chunks

logger = logging.getLogger(__name__)


CHECK_ROWS = 65_536  # rows per chunk of the validation pass


class TaskError(DataError):
    """The flags do not fit the model, or the model cannot score: a message-only `DataError`."""


def model_catalog(model_dir, required):
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


def strings(column, path, name):
    """A column as Python strings (None for nulls); lists and structs are refused."""
    if pa.types.is_nested(column.type):
        raise DataError(f"expected text values, got {column.type}", path=path, column=name)
    return column.cast(pa.string()).to_pylist()


def require_ids(values, start, path, name):
    for i, value in enumerate(values):
        if value is None or not value.strip():
            raise DataError(f"empty value; every row needs a {name}", path, name, start + i)


def refuse_repeats(values, seen, start, path, name, hint):
    """Raises on the first value already in `seen` (which collects the values)."""
    for i, value in enumerate(values):
        if value is None:
            continue
        key = value.strip()
        if key in seen:
            raise DataError(f"duplicate {name}; {hint}", path, name, start + i, key)
        seen.add(key)


def id_lists(column, path, name):
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


def unknown_positions(ids, known):
    return [i for i, pid in enumerate(ids) if pid.strip() not in known]


def refuse_unknown(count, path, column, row, value, options):
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


def users_table(path, catalog, options, staging_dir):
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
        user_ids = strings(table.column("user_id"), str(path), "user_id")
        require_ids(user_ids, start, path, "user_id")
        refuse_repeats(
            user_ids, seen, start, str(path), "user_id",
            "each user must appear once, with their whole history on one row",
        )  # fmt: skip
        histories = id_lists(table.column("history"), str(path), "history")
        if has_events:
            events = id_lists(table.column("history_events"), str(path), "history_events")
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
    refuse_unknown(unknown, str(path), "history", *(first or (None, None)), options)
    return Users(str(path), rows, has_events), None


@dataclasses.dataclass(frozen=True)
class Users:
    path: str
    rows: int
    has_events: bool
    frame: object = None  # histories built from events, before they are staged


def user_ids_of(users):
    """The set of user ids of a users table (or of the staged histories, not written yet)."""
    if users.frame is not None:
        return set(users.frame["user_id"])
    found = set()
    for _, table in chunks(TableStream(users.path), ["user_id"], CHECK_ROWS):
        found.update(u.strip() for u in strings(table.column("user_id"), users.path, "user_id"))
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


def scoring_catalog(path, catalog, options):
    """The product ids to score every user against: `--catalog`'s, or the model's own."""
    if path is None:
        return catalog.to_pylist(), 0
    stream = TableStream(path)
    stream.require(["product_id"], "a catalog")
    known = set(catalog.to_pylist())
    ids, seen, unknown, first = [], set(), 0, None
    for start, table in chunks(stream, ["product_id"], CHECK_ROWS):
        values = strings(table.column("product_id"), str(path), "product_id")
        require_ids(values, start, str(path), "product_id")
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
    refuse_unknown(unknown, str(path), "product_id", *(first or (None, None)), options)
    if not ids:
        raise DataError("no product to score", path=str(path))
    return ids, unknown


def default_text_columns(card, columns):
    trained = ((card.get("config") or {}).get("data") or {}).get("text_columns") or []
    for candidate in (list(trained), ["text"], ["title"]):
        if candidate and all(c in columns for c in candidate):
            return candidate
    raise DataError(
        f"no text column: expected {'/'.join(trained) or 'text'} or title, found {columns}; "
        "name it with --text-column"
    )


def join_texts(table, columns, path):
    """Non-blank values joined with ". ", as training joins text columns."""
    values = [strings(table.column(c), path, c) for c in columns]
    return [
        ". ".join(v.strip() for v in row if v is not None and v.strip())
        for row in zip(*values, strict=True)
    ]


def user_items(table, has_events, path):
    """`(user_id, history, history_events)` tuples of a users table slice."""
    users = strings(table.column("user_id"), path, "user_id")
    histories = id_lists(table.column("history"), path, "history")
    if has_events:
        events = id_lists(table.column("history_events"), path, "history_events")
    else:
        events = [["view"] * len(h) for h in histories]
    return [
        (u.strip(), tuple(h), tuple(e)) for u, h, e in zip(users, histories, events, strict=True)
    ]
