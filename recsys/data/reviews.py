"""Product reviews: `product_id`, `text`, `rating`, optional `user_id`, `title`, `recommended`.

Example:
>>> import pandas as pd
>>> reviews = from_frame(pd.DataFrame({"product_id": ["p1"], "text": ["Lovely"], "rating": ["5"]}))
>>> reviews["rating"].tolist()
[5.0]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.data.errors import DataError
from recsys.data.tables import load_table, validate
from recsys.schema import REVIEWS

MIN_RATING, MAX_RATING = 1.0, 5.0


def load_reviews(path) -> pd.DataFrame:
    """Reads and validates a reviews file (CSV or Parquet); ratings must lie in 1..5."""
    return _check_reviews(load_table(path, REVIEWS), path)


def from_frame(frame: pd.DataFrame, path="<reviews>") -> pd.DataFrame:
    """Validates in-memory reviews."""
    return _check_reviews(validate(frame, REVIEWS, path=path), path)


def _check_reviews(reviews, path):
    ratings = reviews["rating"].to_numpy()
    bad = (ratings < MIN_RATING) | (ratings > MAX_RATING)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"rating out of range; expected {MIN_RATING:g}..{MAX_RATING:g}",
            path=str(path),
            column="rating",
            row=row,
            value=float(ratings[row]),
        )
    return reviews


def review_text(row) -> str:
    """Title and text joined the way the classifiers read them.

    >>> review_text({"title": "Great", "text": "Fits well"})
    'Great. Fits well'
    """
    title = row.get("title") if hasattr(row, "get") else None
    if (
        title is None
        or title is pd.NA
        or (isinstance(title, float) and title != title)
        or not title
    ):
        return str(row["text"])
    return f"{title}. {row['text']}"
