"""The product catalog: `product_id`, `title`, `category`, optional `description`, `brand`, `price`.

Example:
>>> import pandas as pd
>>> catalog = from_frame(pd.DataFrame({
...     "product_id": ["p1"], "title": ["Linen shirt"], "category": ["shirts"], "price": ["19.5"]}))
>>> product_text(catalog.iloc[0])
'Linen shirt | shirts | low'
"""

from __future__ import annotations

import pandas as pd

from recsys.data.errors import DataError
from recsys.data.tables import load_table, validate
from recsys.schema import CATALOG, price_band


def load_catalog(path) -> pd.DataFrame:
    """Reads and validates a catalog file (CSV or Parquet).

    Raises:
        DataError: see `recsys.data.tables.validate`; also a duplicate `product_id` or a
            negative `price`.
    """
    return _check_prices(load_table(path, CATALOG), path)


def from_frame(frame: pd.DataFrame, path="<catalog>") -> pd.DataFrame:
    """Validates an in-memory catalog.

    >>> from_frame(pd.DataFrame({"product_id": ["p1"], "title": ["Mug"], "category": ["k"],
    ...                          "price": [-2.0]}))
    Traceback (most recent call last):
    ...
    recsys.data.errors.DataError: <catalog>: column 'price', row 0 (value -2.0): a price must be >= 0
    """
    return _check_prices(validate(frame, CATALOG, path=path), path)


def _check_prices(catalog, path):
    if "price" in catalog.columns:
        negative = (catalog["price"] < 0).fillna(False).to_numpy(dtype=bool)
        if negative.any():
            row = int(negative.nonzero()[0][0])
            value = float(catalog["price"].iloc[row])
            raise DataError("a price must be >= 0", str(path), "price", row, value)
    return catalog


def product_text(row) -> str:
    """The text a model sees for a product: title, category, brand and price band.

    Args:
        row: a mapping with `title` and `category`, optionally `brand` and `price`.
    """
    parts = [str(row["title"]), str(row["category"])]
    brand = _get(row, "brand")
    if brand:
        parts.append(str(brand))
    price = _get(row, "price")
    if price is not None:
        parts.append(price_band(float(price)))
    return " | ".join(parts)


def _get(row, key):
    try:
        value = row[key]
    except (KeyError, IndexError):
        return None
    if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
        return None
    return value
