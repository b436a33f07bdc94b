r"""Loaders for the public datasets in `../shared/data/` (see each folder's README.md).

Each loader returns typed frames with the column names of `recsys.schema` (ids as strings) plus
a few documented extra columns. Every problem becomes a `DataError` naming the file and, where it
applies, the column (as the file names it) and the first bad row: the 0-based data row, header
excluded; for files without a header, the 0-based line.

Example:
>>> import pathlib, tempfile
>>> tmp = tempfile.TemporaryDirectory()
>>> path = pathlib.Path(tmp.name) / "seq.txt"
>>> _ = path.write_text("1 10\n1 11\n2 10\n")
>>> sequences = load_sasrec(path)
>>> sequences
{'1': ['10', '11'], '2': ['10']}
>>> sequences_to_events(sequences)[["user_id", "product_id"]].values.tolist()
[['1', '10'], ['1', '11'], ['2', '10']]
>>> tmp.cleanup()
"""

from __future__ import annotations

import csv
import logging
import os
import pathlib
import re

import numpy as np
import pandas as pd

from recsys.data import catalog as catalog_lib
from recsys.data import reviews as reviews_lib
from recsys.data.errors import DataError
from recsys.data.events import check_products
from recsys.data.parsing import (
    blank_to_na,
    check_integer_ids,
    first,
    parse_numbers,
    parse_times,
    read_csv,
    readable_title,
    require_columns,
    retail_category,
    split_item_text,
    split_lines,
    typed,
)
from recsys.data.splits import SequenceExample
from recsys.data.tables import validate
from recsys.schema import EVENT_TYPES, EVENTS

logger = logging.getLogger(__name__)

# Synthesized timestamps (files without time) start here and advance one second per line.
SYNTHETIC_START = pd.Timestamp("2000-01-01", tz="UTC")

_UNISREC_CATEGORY_ROOTS = {"Scientific": "Industrial & Scientific"}


def shared_data_dir() -> pathlib.Path:
    """The folder of public datasets: `$RECSYS_SHARED_DATA`, else `<repo root>/../shared/data`.

    The folder may be missing (check `.is_dir()`); nothing is read here.

    >>> isinstance(shared_data_dir(), pathlib.Path)
    True
    """
    if os.environ.get("RECSYS_SHARED_DATA"):
        return pathlib.Path(os.environ["RECSYS_SHARED_DATA"])
    return pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data"


def load_movielens_dat(folder, ratings="ratings_users_1-2999.dat.gz"):
    """Reads MovieLens `movies.dat` and a ratings `.dat` file (plain or gzipped).

    Args:
        folder: path. Holds `movies.dat` (ISO-8859-1, `MovieID::Title::Genres`).
        ratings: str or path. The ratings file, relative to `folder`:
            `UserID::MovieID::Rating[::Timestamp]`. Without timestamps, they are synthesized
            from the line order (`SYNTHETIC_START` plus one second per line).

    Returns:
        (catalog, events). Catalog: `product_id` (MovieID), `title`, `category` (first genre),
        `description` (all genres, comma separated). Events: every rating as a "purchase",
        sorted by time (stable, so ties keep the file order), with an extra `rating` column.

    Raises:
        DataError: a missing file, a line with the wrong number of fields, a bad id, rating or
            timestamp, or a rated movie missing from `movies.dat`.
    """
    folder = pathlib.Path(folder)
    movies_path = folder / "movies.dat"
    movies = split_lines(movies_path, "::", ("MovieID", "Title", "Genres"), encoding="latin-1")
    check_integer_ids(movies["MovieID"], movies_path, "MovieID")
    genres = blank_to_na(movies["Genres"]).str.split("|")
    source = {"product_id": "MovieID", "title": "Title", "category": "Genres"}
    catalog = typed(
        pd.DataFrame(
            {
                "product_id": movies["MovieID"],
                "title": blank_to_na(movies["Title"]),
                "category": genres.str[0],
                "description": genres.str.join(", "),
            }
        ),
        catalog_lib.from_frame,
        movies_path,
        source,
    )
    ratings_path = folder / ratings
    names = ("UserID", "MovieID", "Rating", "Timestamp")
    raw = split_lines(ratings_path, "::", names, optional=1)
    for column in ("UserID", "MovieID"):
        check_integer_ids(raw[column], ratings_path, column)
    if "Timestamp" in raw:
        seconds = parse_numbers(raw["Timestamp"], ratings_path, "Timestamp", integer=True)
        stamps = pd.to_datetime(seconds.astype("int64"), unit="s", utc=True)
    else:
        stamps = _synthetic_times(len(raw))
    events = pd.DataFrame(
        {
            "user_id": raw["UserID"],
            "product_id": raw["MovieID"],
            "event": "purchase",
            "timestamp": stamps,
            "rating": parse_numbers(raw["Rating"], ratings_path, "Rating").astype("float64"),
        }
    )
    source = {"product_id": "MovieID"}
    events = typed(events, _known_movie_events(catalog), ratings_path, source, ("rating",))
    logger.info("Loaded %d movies and %d ratings from %s", len(catalog), len(events), folder)
    return catalog, _sort_by_time(events)


def load_sasrec(path, item_map=None) -> dict[str, list[str]]:
    """Reads a SASRec-style file (`user item` per line, chronological per user, maybe gzipped).

    Args:
        path: path. The file.
        item_map: mapping or None. When given, item ids are translated through it (e.g.
            SASRec item -> MovieID); an item missing from it is an error.

    Returns:
        dict. user id -> list of item ids in file order; users in order of first appearance.
    """
    raw = split_lines(path, None, ("user", "item"))
    items = raw["item"]
    if item_map is not None:
        mapping = {str(k): str(v) for k, v in dict(item_map).items()}
        mapped = items.map(mapping)
        if mapped.isna().any():
            row, value = first(mapped.isna(), items)
            raise DataError("item missing from `item_map`", str(path), "item", row, value)
        items = mapped
    return {str(user): group.tolist() for user, group in items.groupby(raw["user"], sort=False)}


def load_sasrec_item_map(path) -> pd.DataFrame:
    """Reads `sasrec_item_map.tsv` (`sasrec_item movie_id title genres`) as a catalog.

    Returns:
        A catalog: `product_id` (the SASRec item id), `title`, `category` (first genre),
        `description` (genres, comma separated), plus `movie_id` when the file has it.
    """
    frame = read_csv(path, sep="\t", quoting=csv.QUOTE_NONE)
    require_columns(frame, ("sasrec_item", "title", "genres"), path)
    genres = blank_to_na(frame["genres"]).str.split("|")
    out = pd.DataFrame(
        {
            "product_id": frame["sasrec_item"],
            "title": frame["title"],
            "category": genres.str[0],
            "description": genres.str.join(", "),
        }
    )
    extras = ()
    if "movie_id" in frame:
        out["movie_id"], extras = frame["movie_id"].astype("string"), ("movie_id",)
    source = {"product_id": "sasrec_item", "category": "genres"}
    return typed(out, catalog_lib.from_frame, path, source, extras)


def sequences_to_events(sequences, event="purchase", start=SYNTHETIC_START) -> pd.DataFrame:
    """Turns user -> item sequences into an events frame with synthesized timestamps.

    Timestamps run from `start`, one second per item, through the users in dict order, so they
    increase within each user (and overall); only the order is meaningful.

    >>> sequences_to_events({"u1": ["a", "b"]})["timestamp"].dt.second.tolist()
    [0, 1]
    """
    if event not in EVENT_TYPES:
        raise ValueError(f"`event` must be one of {list(EVENT_TYPES)}. Received: {event!r}")
    users = [str(user) for user, items in sequences.items() for _ in items]
    if not users:
        raise ValueError("`sequences` holds no items; expected at least one user with items.")
    items = [str(item) for seq in sequences.values() for item in seq]
    frame = pd.DataFrame({"user_id": users, "product_id": items, "event": event})
    frame["timestamp"] = start + pd.to_timedelta(np.arange(len(items)), unit="s")
    return validate(frame, EVENTS, path="<sequences>")


def load_online_retail(path):
    """Reads the UCI Online Retail CSV, filtered as in protocol P1 step 1 (PROTOCOLS.md).

    Keeps lines with a customer id and a description, drops cancellations (invoice `C...`),
    quantity <= 0, unit price <= 0, and stock codes not starting with five digits.

    Returns:
        (catalog, events). Catalog: one row per stock code; `title` is its most frequent
        description (readable case), `category` comes from `retail_category`, `price` is the
        median unit price. Events: "purchase" lines sorted by `InvoiceDate` (UTC) with extra
        columns `quantity` (int), `price` (unit price) and `invoice`.
    """
    raw = read_csv(path)
    names = ("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice")
    require_columns(raw, (*names, "CustomerID"), path)
    quantity = parse_numbers(raw["Quantity"], path, "Quantity", integer=True)
    price = parse_numbers(raw["UnitPrice"], path, "UnitPrice")
    customer = parse_numbers(raw["CustomerID"], path, "CustomerID", integer=True, missing=True)
    stamps = parse_times(raw["InvoiceDate"], path, "InvoiceDate")
    invoice, code = raw["InvoiceNo"].str.strip(), raw["StockCode"].str.strip()
    description = blank_to_na(raw["Description"].str.strip())
    keep = (
        customer.notna()
        & description.notna()
        & ~invoice.str.startswith("C", na=False)
        & (quantity > 0)
        & (price > 0)
        & code.str.match(r"\d{5}", na=False)
    )
    events = pd.DataFrame(
        {
            "user_id": customer[keep].astype("int64").astype(str),
            "product_id": code[keep],
            "event": "purchase",
            "timestamp": stamps[keep],
            "quantity": quantity[keep].astype("int64"),
            "price": price[keep],
            "invoice": invoice[keep].astype("string"),
        }
    )
    source = {"user_id": "CustomerID", "product_id": "StockCode", "timestamp": "InvoiceDate"}
    events = typed(events, _validate_events, path, source, ("quantity", "price", "invoice"))
    catalog = _retail_catalog(events["product_id"], description[keep].to_numpy(), events["price"])
    logger.info(
        "Online Retail: kept %d of %d lines, %d products", len(events), len(raw), len(catalog)
    )
    return catalog, _sort_by_time(events)


def _retail_catalog(codes, descriptions, prices):
    frame = pd.DataFrame({"product_id": codes, "description": descriptions, "price": prices})
    counts = frame.groupby(["product_id", "description"]).size().rename("n").reset_index()
    counts = counts.sort_values(["product_id", "n", "description"], ascending=[True, False, True])
    top = counts.drop_duplicates("product_id").reset_index(drop=True)
    out = pd.DataFrame(
        {
            "product_id": top["product_id"],
            "title": top["description"].map(readable_title),
            "category": top["description"].map(retail_category),
            "price": top["product_id"].map(frame.groupby("product_id")["price"].median()),
        }
    )
    return catalog_lib.from_frame(out, path="<online retail catalog>")


def load_clothing_reviews(path) -> pd.DataFrame:
    """Reads the Women's E-Commerce Clothing Reviews CSV; rows without review text are dropped.

    Returns:
        A reviews frame: `product_id` (Clothing ID), `text`, `rating`, `title`, `recommended`
        (Recommended IND), plus `department`, `division` and `class_name` when present.
    """
    raw = read_csv(path)
    source = {"product_id": "Clothing ID", "text": "Review Text", "rating": "Rating"}
    source.update(title="Title", recommended="Recommended IND")
    require_columns(raw, [c for c in source.values() if c != "Title"], path)
    kept = raw[blank_to_na(raw["Review Text"]).notna()]
    frame = pd.DataFrame({ours: kept[theirs] for ours, theirs in source.items() if theirs in kept})
    extras = {
        "department": "Department Name",
        "division": "Division Name",
        "class_name": "Class Name",
    }
    extras = {ours: theirs for ours, theirs in extras.items() if theirs in kept}
    for ours, theirs in extras.items():
        frame[ours] = kept[theirs].astype("string").str.strip()
    return typed(frame, reviews_lib.from_frame, path, source, tuple(extras))


def load_pricerunner(path) -> pd.DataFrame:
    """Reads the PriceRunner product classification CSV (header spelling is normalized).

    Returns:
        A catalog-like frame: `product_id`, `title` (the offer title), `category` (Category
        Label), plus `cluster_id` and `merchant_id` (strings).
    """
    raw = read_csv(path)
    header = {re.sub(r"[^a-z]", "", str(c).lower()): str(c) for c in raw.columns}
    wanted = {"product_id": "Product ID", "title": "Product Title", "category": "Category Label"}
    wanted.update(cluster_id="Cluster ID", merchant_id="Merchant ID")
    source = {
        ours: header.get(re.sub(r"[^a-z]", "", name.lower()), name) for ours, name in wanted.items()
    }
    require_columns(raw, tuple(source.values()), path)
    frame = pd.DataFrame({ours: raw[theirs] for ours, theirs in source.items()})
    for column in ("cluster_id", "merchant_id"):
        values = blank_to_na(frame[column].astype("string").str.strip())
        if values.isna().any():
            row = first(values.isna(), values)[0]
            raise DataError("empty value", str(path), source[column], row)
        frame[column] = values
    return typed(frame, catalog_lib.from_frame, path, source, ("cluster_id", "merchant_id"))


def load_unisrec(folder, name="Scientific"):
    """Reads a UniSRec/RecBole dataset (`<name>.text`, `.item2index`, `.test.inter`).

    Returns:
        (catalog, sequences). Catalog: `product_id` (the item index, as in the `.inter`
        files), `title`, `category` (the category path), `brand`, `description` (the full item
        text) and an extra `asin`. Sequences: user index -> full item sequence, rebuilt from the
        test file (history + target; histories there hold at most 50 items).
    """
    folder = pathlib.Path(folder)
    text_path, index_path = folder / f"{name}.text", folder / f"{name}.item2index"
    texts = read_csv(text_path, sep="\t", quoting=csv.QUOTE_NONE)
    texts.columns = [str(c).split(":")[0] for c in texts.columns]
    require_columns(texts, ("item_id", "text"), text_path)
    index = split_lines(index_path, "\t", ("asin", "index"))
    indices = texts["item_id"].map(dict(zip(index["asin"], index["index"], strict=True)))
    if indices.isna().any():
        row, value = first(indices.isna(), texts["item_id"])
        raise DataError(
            f"item missing from {index_path.name}", str(text_path), "item_id", row, value
        )
    parts = split_item_text(texts["text"].fillna(""), _UNISREC_CATEGORY_ROOTS.get(name))
    frame = pd.DataFrame({"product_id": indices, **parts, "description": texts["text"]})
    frame["asin"] = texts["item_id"].astype("string")
    catalog = typed(frame, catalog_lib.from_frame, text_path, {"product_id": "item_id"}, ("asin",))
    catalog = catalog.iloc[np.argsort(catalog["product_id"].astype(int).to_numpy(), kind="stable")]
    examples = load_unisrec_splits(folder, name, parts=("test",))["test"]
    sequences = {e.user: [*e.history, e.target] for e in examples}
    return catalog.reset_index(drop=True), sequences


def load_unisrec_splits(folder, name="Scientific", parts=("train", "valid", "test")):
    """Reads the provided `<name>.<part>.inter` files as lists of `SequenceExample`s."""
    out = {}
    for part in parts:
        path = pathlib.Path(folder) / f"{name}.{part}.inter"
        frame = read_csv(path, sep="\t", quoting=csv.QUOTE_NONE)
        frame.columns = [str(c).split(":")[0] for c in frame.columns]
        require_columns(frame, ("user_id", "item_id_list", "item_id"), path)
        for column in ("user_id", "item_id"):
            if frame[column].isna().any():
                row = first(frame[column].isna(), frame[column])[0]
                raise DataError("empty value", str(path), column, row)
        histories = frame["item_id_list"].fillna("").str.split()
        out[part] = [
            SequenceExample(user, tuple(history), target)
            for user, history, target in zip(
                frame["user_id"], histories, frame["item_id"], strict=True
            )
        ]
    return out


def _synthetic_times(n):
    return SYNTHETIC_START + pd.to_timedelta(np.arange(n), unit="s")


def _known_movie_events(catalog):
    return lambda frame, path: check_products(_validate_events(frame, path), catalog, path=path)


def _validate_events(frame, path):
    return validate(frame, EVENTS, path=path)


def _sort_by_time(events):
    return events.sort_values("timestamp", kind="stable").reset_index(drop=True)
