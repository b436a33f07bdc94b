"""Reading and validating typed tables from CSV or Parquet files.

Every problem becomes a `DataError` that names the file, the column and the first offending
row and value; pandas and pyarrow exceptions never reach the caller.

Example:
>>> import pandas as pd
>>> from recsys.schema import CATALOG
>>> frame = pd.DataFrame({"product_id": ["p1"], "title": ["Red shoe"], "category": ["shoes"]})
>>> validate(frame, CATALOG, path="inline")["title"].tolist()
['Red shoe']
"""

from __future__ import annotations

import math
import pathlib

import numpy as np
import pandas as pd

from recsys.data.errors import DataError
from recsys.schema import TableSchema

_CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt", ".txt.gz")
_PARQUET_SUFFIXES = (".parquet", ".pq")


def read_frame(path) -> pd.DataFrame:
    """Reads a CSV (plain or gzipped) or Parquet file into a DataFrame of raw values.

    Raises:
        DataError: the file is missing, empty, not valid Parquet, or not UTF-8 text.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise DataError("file not found", path=str(path))
    if path.is_dir():
        raise DataError("expected a file, got a directory", path=str(path))
    if path.stat().st_size == 0:
        raise DataError("the file is empty; expected a header and at least one row", path=str(path))
    name = path.name.lower()
    if name.endswith(_PARQUET_SUFFIXES):
        return _read_parquet(path)
    if name.endswith(_CSV_SUFFIXES):
        return _read_csv(path, sep="\t" if ".tsv" in name else ",")
    raise DataError(
        f"unknown file type; expected one of {', '.join(_CSV_SUFFIXES + _PARQUET_SUFFIXES)}",
        path=str(path),
    )


def _read_parquet(path):
    import pyarrow
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pyarrow.ArrowException, OSError) as e:
        raise DataError(
            f"not a readable Parquet file ({type(e).__name__}: {e}); "
            "expected a complete Parquet file (was it truncated?)",
            path=str(path),
        ) from None
    _refuse_nan(table, path)
    return table.to_pandas()


def _refuse_nan(table, path):
    """A NaN in a Parquet float column is not a missing value (that is a null): refuse it.

    pandas turns both into NaN, so past this point a NaN would pass for "no value". (pandas
    itself writes its NaN as null, so files written from pandas are not affected.)
    """
    import pyarrow
    import pyarrow.compute as pc

    for name, column in zip(table.column_names, table.columns, strict=True):
        if not pyarrow.types.is_floating(column.type):
            continue
        nan = pc.is_nan(column)
        if pc.any(nan).as_py():
            row = int(pc.index(nan, True).as_py())
            raise DataError(
                "NaN is not a number; expected a finite number, or null for a missing value",
                path=str(path),
                column=name,
                row=row,
                value="NaN",
            )


def _read_csv(path, sep):
    try:
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""])
    except UnicodeDecodeError as e:
        raise DataError(
            f"unreadable encoding at byte {e.start}; expected UTF-8 text", path=str(path)
        ) from None
    except pd.errors.EmptyDataError:
        raise DataError("the file has no columns; expected a CSV header", path=str(path)) from None
    except (pd.errors.ParserError, EOFError, OSError) as e:
        raise DataError(f"not a readable CSV file: {e}", path=str(path)) from None
    if not isinstance(frame.index, pd.RangeIndex):
        # pandas silently turns the leading fields into an index (shifting every column) when
        # the first data row has more fields than the header.
        raise DataError(
            f"more fields than the header has columns ({len(frame.columns)}: "
            f"{list(map(str, frame.columns))}); expected one field per column",
            path=str(path),
            row=0,
        )
    return frame


def validate(frame: pd.DataFrame, schema: TableSchema, path="<table>") -> pd.DataFrame:
    """Checks columns and types against `schema` and returns a typed copy.

    Columns outside the schema are dropped; optional columns that are absent stay absent.

    Raises:
        DataError: a required column is missing, a value has the wrong type, a required value
            is empty, or the key column repeats a value.
    """
    path = str(path)
    if len(frame) == 0:
        raise DataError(f"the {schema.kind} table has no rows", path=path)
    missing = [c for c in schema.required if c not in frame.columns]
    if missing:
        raise DataError(
            f"missing required column(s) {missing}; a {schema.kind} table needs "
            f"{list(schema.required)} (optional: {list(schema.optional)}); "
            f"found {list(map(str, frame.columns))}",
            path=path,
            column=missing[0],
        )
    out = {}
    for column in schema.columns:
        if column not in frame.columns:
            continue
        kind = schema.dtypes[column]
        out[column] = _coerce(frame[column], kind, column, path, column in schema.required)
    typed = pd.DataFrame(out)
    if schema.key is not None:
        dup = typed[schema.key].duplicated()
        if dup.any():
            row = int(np.flatnonzero(dup.to_numpy())[0])
            raise DataError(
                f"duplicate {schema.key}; each {schema.key} must appear once",
                path=path,
                column=schema.key,
                row=row,
                value=typed[schema.key].iloc[row],
            )
    return typed


def _first_bad(mask, series):
    row = int(np.flatnonzero(np.asarray(mask))[0])
    value = series.iloc[row]
    if isinstance(value, np.generic):
        value = value.item()  # report 'inf', not 'np.float64(inf)'
    if isinstance(value, float) and math.isnan(value):
        value = "NaN"
    return row, value


def _coerce(series, kind, column, path, required):
    series = series.reset_index(drop=True)
    nulls = series.isna().to_numpy()
    if required and nulls.any():
        row, _ = _first_bad(nulls, series)
        raise DataError(f"empty value; every row needs a {kind} {column}", path, column, row)
    if kind == "string":
        if nulls.all():
            return series.astype("string")
        text = series.astype("string").str.strip()
        blank = (text == "").fillna(False).to_numpy(dtype=bool)
        if required and blank.any():  # "" in Parquet, or only whitespace in either format
            row, value = _first_bad(blank, series)
            raise DataError(
                f"blank value; every row needs a non-empty {column}", path, column, row, value
            )
        return text
    if kind == "float":
        numbers = pd.to_numeric(series, errors="coerce")
        bad = numbers.isna().to_numpy() & ~nulls
        if bad.any():
            row, value = _first_bad(bad, series)
            raise DataError("expected a number", path, column, row, value)
        values = numbers.to_numpy(dtype="float64")
        bad = ~np.isfinite(values) & ~nulls
        if bad.any():
            row, value = _first_bad(bad, series)
            raise DataError(
                "expected a finite number (not NaN or infinity)", path, column, row, value
            )
        return pd.Series(values, dtype="float64")
    if kind == "bool":
        text = series.astype("string").str.strip().str.lower()
        mapping = {
            "1": True,
            "0": False,
            "true": True,
            "false": False,
            "yes": True,
            "no": False,
            "1.0": True,
            "0.0": False,
        }
        mapped = text.map(mapping)
        bad = mapped.isna().to_numpy() & ~nulls
        if bad.any():
            row, value = _first_bad(bad, series)
            raise DataError(
                "expected a boolean (1/0, true/false, yes/no)", path, column, row, value
            )
        return mapped.astype("boolean")
    if kind == "timestamp":
        return _to_timestamps(series, column, path)
    raise AssertionError(f"unknown dtype {kind}")


def _to_timestamps(series, column, path):
    if pd.api.types.is_datetime64_any_dtype(series):
        stamps = pd.to_datetime(series, utc=True)
    else:
        numbers = pd.to_numeric(series, errors="coerce")
        if numbers.notna().all():
            stamps = pd.to_datetime(numbers, unit="s", utc=True)
        else:
            stamps = pd.to_datetime(series, errors="coerce", utc=True, format="mixed")
    bad = stamps.isna().to_numpy()
    if bad.any():
        row, value = _first_bad(bad, series)
        raise DataError(
            "expected a timestamp (ISO 8601 like 2024-05-01T12:00:00 or Unix seconds)",
            path,
            column,
            row,
            value,
        )
    return stamps.reset_index(drop=True)


def load_table(path, schema: TableSchema) -> pd.DataFrame:
    """Reads and validates one table file (see `read_frame` and `validate`)."""
    return validate(read_frame(path), schema, path=path)
