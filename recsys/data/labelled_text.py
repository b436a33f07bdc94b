"""Labelled texts for classification: texts from columns, labels, label names and splits.

Example:
>>> import pandas as pd
>>> raw = pd.DataFrame({"title": ["Great", None, "Meh"], "text": ["Fits", "Tore", "Ok"],
...                     "rating": [5.0, 1.0, 3.0]})
>>> examples(raw, ["title", "text"], "sentiment").to_dict("list")
{'text': ['Great. Fits', 'Tore', 'Meh. Ok'], 'label': ['positive', 'negative', 'neutral']}
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from recsys.data.errors import DataError

logger = logging.getLogger(__name__)

LABEL_SEPARATOR = "|"
SPLITS = ("train", "validation", "test")
SENTIMENTS = ("negative", "neutral", "positive")
RECOMMENDED = {True: "recommended", False: "not_recommended"}


def sentiment_from_rating(rating) -> str:
    """A 1..5 star rating as sentiment: negative (<= 2), neutral (3) or positive (>= 4).

    >>> [sentiment_from_rating(r) for r in (1, 2.0, 3, 4, 5)]
    ['negative', 'negative', 'neutral', 'positive', 'positive']
    """
    rating = float(rating)
    return SENTIMENTS[0] if rating <= 2 else SENTIMENTS[1] if rating < 4 else SENTIMENTS[2]


def join_texts(frame, columns) -> pd.Series:
    """Joins the non-blank values of `columns` with ". " (a review: "title. text").

    >>> join_texts(pd.DataFrame({"t": ["Great", None], "x": ["Fits", "Small"]}), ["t", "x"]).tolist()
    ['Great. Fits', 'Small']
    """
    parts = [frame[c].astype("string").str.strip().fillna("") for c in columns]
    rows = zip(*(p.tolist() for p in parts), strict=True)
    return pd.Series([". ".join(v for v in row if v) for row in rows], index=frame.index)


def split_labels(value) -> tuple:
    """A multi-label cell as label names: a list, or a "|"-separated string; blank is none.

    >>> split_labels("red | blue"), split_labels(["a"]), split_labels(None)
    (('red', 'blue'), ('a',), ())
    """
    if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
        return ()
    values = value.split(LABEL_SEPARATOR) if isinstance(value, str) else list(value)
    return tuple(dict.fromkeys(str(v).strip() for v in values if str(v).strip()))


def require(frame, column, path="<table>"):
    """Raises a DataError naming the columns found when `column` is missing."""
    if column not in frame.columns:
        raise DataError(
            f"no column {column!r}; found {[str(c) for c in frame.columns]}",
            path=str(path),
            column=column,
        )


def label_values(frame, label, multi_label=False, path="<table>") -> pd.Series:
    """The label of each row: `sentiment` (from `rating`), `recommended`, or a column.

    Multi-label: a tuple of label names per row (see `split_labels`).

    >>> label_values(pd.DataFrame({"recommended": [True, False]}), "recommended").tolist()
    ['recommended', 'not_recommended']
    """
    if label == "sentiment":
        require(frame, "rating", path)
        values = frame["rating"].map(sentiment_from_rating)
    elif label == "recommended":
        require(frame, "recommended", path)
        values = frame["recommended"].astype("boolean").map(RECOMMENDED)
    else:
        require(frame, label, path)
        values = frame[label]
        if label == "rating":
            values = values.map(lambda r: r if pd.isna(r) else f"{float(r):g}")
        elif not multi_label:
            values = values.astype("string").str.strip()
    return values.map(split_labels) if multi_label else values


def examples(
    raw,
    text_columns,
    label,
    multi_label=False,
    path="<table>",
    group=None,
    split_column=None,
    max_examples=None,
    seed=0,
) -> pd.DataFrame:
    """One row per example: `text`, `label`, plus `group` and `split` when asked for.

    Rows with empty text are dropped; `max_examples` keeps a seeded sample (in row order).

    Raises:
        DataError: a missing column, no examples, every text empty, or (multi-class) a row
            without a label.
    """
    for column in (*text_columns, *([group] if group else [])):
        require(raw, column, path)
    frame = pd.DataFrame(
        {
            "text": join_texts(raw, text_columns),
            "label": label_values(raw, label, multi_label, path),
        }
    )
    if group:
        frame["group"] = raw[group]
    if split_column:
        require(raw, split_column, path)
        frame["split"] = raw[split_column].astype("string").str.strip()
    if len(frame) == 0:
        raise DataError("the data has no examples; expected at least one text", path=str(path))
    if not multi_label and frame["label"].isna().any():
        row = int(np.flatnonzero(frame["label"].isna().to_numpy())[0])
        raise DataError("missing label; every example needs one", str(path), label, row)
    blank = frame["text"].str.len().to_numpy() == 0
    if blank.all():
        raise DataError("every text is empty; expected text to classify", path=str(path))
    if blank.any():
        logger.info("Dropping %d examples with empty text", int(blank.sum()))
        frame = frame[~blank]
    if max_examples and len(frame) > max_examples:
        frame = frame.sample(max_examples, random_state=seed).sort_index()
    return frame


def label_names(labels, multi_label=False, given=(), path="<table>") -> tuple:
    """The label set: `given` (in its order) or the sorted distinct labels.

    Raises:
        DataError: a label missing from `given`, or fewer than two labels.

    >>> label_names(pd.Series([("b",), ("a", "c")]), multi_label=True)
    ('a', 'b', 'c')
    """
    seen = {n for row in labels for n in row} if multi_label else set(labels)
    names = tuple(given) or tuple(sorted(seen))
    if unknown := sorted(seen - set(names)):
        raise DataError(f"labels {unknown} are not in model.labels {list(names)}", str(path))
    if len(set(names)) < 2:
        raise DataError(
            "a classifier needs at least two classes (labels); the data has "
            f"{len(set(names))}: {sorted(set(names))}. Check `data.label` or add examples of "
            "other classes",
            path=str(path),
        )
    return names


def split_examples(frame, fractions=(0.8, 0.1, 0.1), seed=0, multi_label=False, column=None):
    """(train, validation, test): from the `split` column when `column` names its source,
    grouped by `group` when present, random for multi-label, else stratified by `label`.

    Raises:
        DataError: an unknown part name, or an empty part.
    """
    from recsys.data import splits

    if column:
        if unknown := sorted(set(frame["split"].dropna()) - set(SPLITS)):
            raise DataError(f"unknown part(s) {unknown}; expected {list(SPLITS)}", column=column)
        parts = tuple(frame[frame["split"] == name] for name in SPLITS)
    elif "group" in frame:
        parts = splits.group_split(frame, "group", fractions, seed)
    elif multi_label:
        rows = frame.assign(row=np.arange(len(frame)))
        parts = tuple(
            p.drop(columns="row") for p in splits.group_split(rows, "row", fractions, seed)
        )
    else:
        parts = splits.stratified_split(frame, "label", fractions, seed)
    for name, part in zip(SPLITS, parts, strict=True):
        if len(part) == 0:
            raise DataError(f"the {name} part has no examples; add data or change the split")
    return parts
