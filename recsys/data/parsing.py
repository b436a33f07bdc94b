"""Helpers that read raw dataset files and product text for `recsys.data.formats`.

Every problem becomes a `DataError` naming the file and, where it applies, the column and the
first bad row (its label in the frame, i.e. the 0-based data row of the file) and value.

Example:
>>> import pandas as pd
>>> parse_numbers(pd.Series(["1", "2.5"]), "f.csv", "price").tolist()
[1.0, 2.5]
>>> parse_numbers(pd.Series(["1", "x"]), "f.csv", "price")
Traceback (most recent call last):
...
recsys.data.errors.DataError: f.csv: column 'price', row 1 (value 'x'): expected a finite number
"""

from __future__ import annotations

import gzip
import pathlib
import re
import zlib

import numpy as np
import pandas as pd

from recsys.data.errors import DataError

# Words that describe a look rather than a kind of product; `retail_category` skips them.
_RETAIL_MODIFIERS = frozenset(
    """DESIGN DESIGNS RETROSPOT POLKADOT POLKADOTS PAISLEY PAISELY SPACEBOY WOODLAND LONDON
    CHRISTMAS VINTAGE REGENCY GINGHAM SPOT SPOTS SKULL SKULLS STRIPE STRIPES PINK RED WHITE BLUE
    GREEN CREAM BLACK IVORY GOLD SILVER PURPLE ORANGE YELLOW BROWN GREY TEAL LARGE SMALL MINI
    JUMBO MEDIUM BIG ASSORTED COLOUR COLOURS LOVE HEART HEARTS FLOWER FLORAL SET AND WITH THE
    FOR""".split()
)


def require_file(path) -> pathlib.Path:
    """The path, checked to be an existing, non-empty file."""
    path = pathlib.Path(path)
    if not path.exists():
        raise DataError("file not found", path=str(path))
    if path.is_dir():
        raise DataError("expected a file, got a directory", path=str(path))
    if path.stat().st_size == 0:
        raise DataError("the file is empty", path=str(path))
    return path


def compression(path):
    """Returns "gzip" when the file starts with the gzip magic bytes, else None."""
    with open(path, "rb") as f:
        return "gzip" if f.read(2) == b"\x1f\x8b" else None


def read_text(path, encoding) -> str:
    """The whole file (plain or gzipped) decoded with `encoding`."""
    path = require_file(path)
    try:
        if compression(path) == "gzip":
            with gzip.open(path, "rb") as f:
                return f.read().decode(encoding)
        return path.read_bytes().decode(encoding)
    except UnicodeDecodeError as e:
        raise DataError(
            f"unreadable encoding at byte {e.start}; expected {encoding} text", str(path)
        ) from None
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(
            f"unreadable file ({type(e).__name__}: {e}); was it truncated?", str(path)
        ) from None


def read_csv(path, **kwargs) -> pd.DataFrame:
    """A CSV (plain or gzipped) as string columns; empty fields are missing values."""
    path = require_file(path)
    options = dict(dtype=str, keep_default_na=False, na_values=[""], compression=compression(path))
    try:
        return pd.read_csv(path, **options, **kwargs)
    except UnicodeDecodeError as e:
        raise DataError(
            f"unreadable encoding at byte {e.start}; expected UTF-8 text", str(path)
        ) from None
    except pd.errors.EmptyDataError:
        raise DataError("the file has no columns; expected a header", str(path)) from None
    except (pd.errors.ParserError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"not a readable CSV file ({type(e).__name__}: {e})", str(path)) from None


def split_lines(path, sep, names, optional=0, encoding="utf-8") -> pd.DataFrame:
    """Splits a headerless file into string columns; the last `optional` may be absent (everywhere)."""
    lines = read_text(path, encoding).splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    rows = [line.split(sep) for line in lines]
    counts = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    width = int(counts[0]) if len(rows) else 0
    if not len(names) - optional <= width <= len(names) or (counts != width).any():
        row = int(np.flatnonzero(counts != width)[0]) if len(names) - optional <= width else 0
        expected = " or ".join(str(n) for n in range(len(names) - optional, len(names) + 1))
        separator = repr(sep) if sep else "whitespace"
        message = f"expected {expected} fields ({', '.join(names)}) separated by {separator}"
        raise DataError(message, str(path), row=row, value=lines[row][:80] if lines else None)
    return pd.DataFrame({name: [r[i] for r in rows] for i, name in enumerate(names[:width])})


def require_columns(frame, columns, path):
    """Raises a `DataError` naming the first of `columns` missing from `frame`."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        found = [str(c) for c in frame.columns]
        raise DataError(f"missing column(s) {missing}; found {found}", str(path), column=missing[0])


def first(mask, series):
    """(row label, value) of the first True in `mask`; a missing value is None."""
    row = int(np.flatnonzero(np.asarray(mask))[0])
    value = series.iloc[row]
    return int(series.index[row]), None if pd.isna(value) else value


def blank_to_na(series):
    """Strings that are empty or all spaces become missing values."""
    return series.where(series.str.strip().fillna("") != "")


def check_integer_ids(series, path, column):
    """Raises a `DataError` at the first value that is not a non-negative integer."""
    bad = ~series.str.fullmatch(r"\d+", na=False)
    if bad.any():
        raise DataError("expected an integer id", str(path), column, *first(bad, series))


def parse_numbers(series, path, column, integer=False, missing=False):
    """Numbers parsed from strings; `missing=True` lets empty values through as NaN."""
    numbers = pd.to_numeric(series, errors="coerce")
    bad = numbers.isna() & (series.notna() | (not missing))
    bad |= np.isinf(numbers.fillna(0))
    if integer:
        bad |= numbers.fillna(0) % 1 != 0
    if bad.any():
        kind = "an integer" if integer else "a finite number"
        raise DataError(f"expected {kind}", str(path), column, *first(bad, series))
    return numbers


def parse_times(series, path, column):
    """ISO 8601 date-times as UTC timestamps (naive values are read as UTC)."""
    stamps = pd.to_datetime(series, errors="coerce", utc=True, format="ISO8601")
    if stamps.isna().any():
        message = "expected a date and time like 2010-12-01 08:26:00"
        raise DataError(message, str(path), column, *first(stamps.isna(), series))
    return stamps


def typed(frame, validator, path, source=None, extras=()):
    """Validates `frame` with `validator(frame, path)`, reporting file rows and column names."""
    index, source = frame.index.to_numpy(), source or {}
    try:
        out = validator(frame.reset_index(drop=True), path=str(path))
    except DataError as e:
        row = None if e.row is None else int(index[e.row])
        column = source.get(e.column, e.column)
        raise DataError(e.message, e.path, column, row, e.value) from None
    for column in extras:
        out[column] = frame[column].reset_index(drop=True)
    return out


# --- product text ---------------------------------------------------------------------------


def readable_title(text: str) -> str:
    """Upper-case product text in readable case, with spaces collapsed.

    >>> readable_title("SET OF 3  CAKE TINS, DOLLY GIRL'S")
    "Set Of 3 Cake Tins, Dolly Girl's"
    """
    return re.sub(
        r"[A-Za-z]+('[A-Za-z]+)?", lambda m: m.group(0).capitalize(), " ".join(text.split())
    )


def retail_category(description: str) -> str:
    """A coarse, lower-case category: the last noun-like word of an upper-case description.

    Skips colours, sizes, patterns and short words, then makes the word singular.

    >>> retail_category("JUMBO BAG RED RETROSPOT"), retail_category("SET OF 4 KNICK KNACK TINS")
    ('bag', 'tin')
    >>> retail_category("PINK"), retail_category("GLASS JAR BOXES")
    ('other', 'box')
    """
    for word in reversed(re.findall(r"[A-Z]+", description.upper())):
        if len(word) >= 3 and word not in _RETAIL_MODIFIERS:
            return _singular(word).lower()
    return "other"


def _singular(word):
    if word.endswith("IES") and len(word) > 4:
        return word[:-3] + "Y"
    if word.endswith(("SSES", "XES", "CHES", "SHES")):
        return word[:-2]
    if word.endswith("S") and not word.endswith(("SS", "US", "IS")) and len(word) > 3:
        return word[:-1]
    return word


def split_item_text(texts, category_root=None) -> dict:
    """Splits UniSRec item texts "title. category path. brand." into their parts.

    With `category_root`, the category is the last segment starting with it (the root itself
    is dropped); otherwise the second-to-last segment. An empty category becomes "unknown".

    >>> parts = split_item_text(pd.Series(["Mr. Glue 8oz. Industrial & Scientific Tapes. Gorilla. "]),
    ...                         "Industrial & Scientific")
    >>> [parts[k][0] for k in ("title", "category", "brand")]
    ['Mr. Glue 8oz', 'Tapes', 'Gorilla']
    """
    rows = [_split_one(text, category_root) for text in texts]
    title, category, brand = (
        (list(column) for column in zip(*rows, strict=True)) if rows else ([], [], [])
    )
    return {
        "title": pd.Series(title, index=texts.index, dtype="string"),
        "category": pd.Series(category, index=texts.index, dtype="string"),
        "brand": blank_to_na(pd.Series(brand, index=texts.index, dtype="string")),
    }


def _split_one(text, root):
    segments = text.strip().removesuffix(".").split(". ")
    at = max((i for i, s in enumerate(segments) if i and root and s.startswith(root)), default=None)
    if at is None:
        at = max(len(segments) - 2, 1) if len(segments) > 1 else None
    if at is None:
        return text.strip(), "unknown", ""
    category = segments[at].removeprefix(root).strip() if root else segments[at].strip()
    category = category or (root if root and segments[at].strip() else "unknown")
    return ". ".join(segments[:at]).strip() or text.strip(), category, ". ".join(segments[at + 1 :])
