"""The interaction log: `user_id`, `product_id`, `event` in {view, cart, purchase}, `timestamp`.

Example:
>>> import pandas as pd
>>> events = from_frame(pd.DataFrame({"user_id": ["u1"], "product_id": ["p1"],
...                                   "event": ["purchase"], "timestamp": ["2024-01-02"]}))
>>> events["event"].tolist(), str(events["timestamp"].dt.tz)
(['purchase'], 'UTC')
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.data.errors import DataError
from recsys.data.tables import load_table, validate
from recsys.schema import EVENT_TYPES, EVENTS


def load_events(path, catalog=None, on_unknown="error") -> pd.DataFrame:
    """Reads and validates an events file, optionally against a catalog.

    Args:
        path: CSV or Parquet file.
        catalog: DataFrame or None. When given, events naming products missing from it are
            counted and handled as `on_unknown` says.
        on_unknown: "error" or "drop".

    Raises:
        DataError: bad columns or values, an unknown event type, or (with
            `on_unknown="error"`) events naming products missing from the catalog.
    """
    # Check before sorting by time, so that error rows are the file's data rows.
    events = _check_event_types(load_table(path, EVENTS), path)
    if catalog is not None:
        events = check_products(events, catalog, on_unknown=on_unknown, path=path)
    return _sort_by_time(events)


def from_frame(frame: pd.DataFrame, path="<events>") -> pd.DataFrame:
    """Validates in-memory events and sorts them by time (stable)."""
    return _sort_by_time(_check_event_types(validate(frame, EVENTS, path=path), path))


def _check_event_types(events, path):
    lowered = events["event"].str.lower()
    bad = ~lowered.isin(EVENT_TYPES).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"unknown event; expected one of {list(EVENT_TYPES)}",
            path=str(path),
            column="event",
            row=row,
            value=events["event"].iloc[row],
        )
    return events.assign(event=lowered)


def _sort_by_time(events):
    return events.sort_values("timestamp", kind="stable").reset_index(drop=True)


def check_products(events, catalog, on_unknown="error", path="<events>"):
    """Handles events whose product is not in the catalog.

    Returns the events (without the unknown ones when `on_unknown="drop"`). The number dropped
    is stored in `events.attrs["dropped_unknown_products"]`.

    >>> import pandas as pd
    >>> ev = pd.DataFrame({"product_id": ["a", "zz"], "user_id": ["u", "u"]})
    >>> cat = pd.DataFrame({"product_id": ["a"]})
    >>> check_products(ev, cat, on_unknown="drop").attrs["dropped_unknown_products"]
    1
    """
    if on_unknown not in ("error", "drop"):
        raise ValueError(f"`on_unknown` must be 'error' or 'drop'. Received: {on_unknown!r}")
    known = events["product_id"].isin(set(catalog["product_id"])).to_numpy()
    unknown = int((~known).sum())
    if unknown and on_unknown == "error":
        row = int(np.flatnonzero(~known)[0])
        raise DataError(
            f"{unknown} event(s) name products missing from the catalog; add them to the "
            "catalog or drop them (on_unknown='drop', CLI --drop-unknown)",
            path=str(path),
            column="product_id",
            row=row,
            value=events["product_id"].iloc[row],
        )
    out = events[known].reset_index(drop=True) if unknown else events
    out.attrs["dropped_unknown_products"] = unknown
    return out
