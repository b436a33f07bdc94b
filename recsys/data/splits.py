"""Train / validation / test splits, user sequences and the item vocabulary.

Example:
>>> train, valid, test = leave_one_out({"u1": ["a", "b", "c", "d"], "u2": ["a"]})
>>> train
{'u1': ['a', 'b'], 'u2': ['a']}
>>> valid
[SequenceExample(user='u1', history=('a', 'b'), target='c')]
>>> test
[SequenceExample(user='u1', history=('a', 'b', 'c'), target='d')]
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import numpy as np
import pandas as pd

from recsys.data.errors import DataError
from recsys.schema import EVENT_TYPES, NUM_RESERVED_IDS, OOV_ID, PAD_ID

# A user needs this many items to give a training prefix, a validation and a test target.
MIN_LEAVE_ONE_OUT_LENGTH = 3
PAD_TOKEN = "[PAD]"
OOV_TOKEN = "[OOV]"


class SequenceExample(NamedTuple):
    """One next-item example: the `history` before `target` (oldest first) of `user`."""

    user: str
    history: tuple
    target: str


def leave_one_out(sequences):
    """Splits each user's sequence: last item = test target, second-to-last = validation target.

    Users with fewer than `MIN_LEAVE_ONE_OUT_LENGTH` (3) items are kept whole in `train` and
    give no validation or test example; users with no items are dropped.

    Args:
        sequences: dict. user id -> items, oldest first.

    Returns:
        (train, valid, test). `train`: dict user -> items without the last two. `valid` and
        `test`: lists of `SequenceExample`, in user order; a test history includes the
        validation target.

    Raises:
        ValueError: `sequences` is empty.
    """
    if not sequences:
        raise ValueError("`sequences` is empty; expected a dict of user id -> items.")
    train, valid, test = {}, [], []
    for user, items in sequences.items():
        items = list(items)
        if len(items) < MIN_LEAVE_ONE_OUT_LENGTH:
            if items:
                train[user] = items
            continue
        train[user] = items[:-2]
        valid.append(SequenceExample(user, tuple(items[:-2]), items[-2]))
        test.append(SequenceExample(user, tuple(items[:-1]), items[-1]))
    return train, valid, test


def leave_one_out_events(events: pd.DataFrame):
    """Leave-one-out on an events frame: per user by time, last event = test, previous = valid.

    Ties in time keep the frame's order. Users with fewer than 3 events stay in train only.

    Returns:
        (train, valid, test) frames, each sorted by time with the original index.

    >>> ev = pd.DataFrame({"user_id": ["u"] * 3, "product_id": ["a", "b", "c"],
    ...                    "timestamp": pd.to_datetime([3, 1, 2], unit="s", utc=True)})
    >>> [part["product_id"].tolist() for part in leave_one_out_events(ev)]
    [['b'], ['c'], ['a']]
    """
    _require_columns(events, ("user_id", "timestamp"), "events")
    ordered = events.sort_values("timestamp", kind="stable")
    users = ordered.groupby("user_id", sort=False)
    from_end = users.cumcount(ascending=False).to_numpy()
    eligible = users["user_id"].transform("size").to_numpy() >= MIN_LEAVE_ONE_OUT_LENGTH
    train = ordered[~eligible | (from_end >= 2)]
    return train, ordered[eligible & (from_end == 1)], ordered[eligible & (from_end == 0)]


def time_split(events: pd.DataFrame, cutoff):
    """Splits events at a global time: (`timestamp < cutoff`, `timestamp >= cutoff`).

    Args:
        events: DataFrame with a `timestamp` column (datetimes; naive ones are read as UTC).
        cutoff: str or datetime. A naive cutoff is read as UTC.

    >>> ev = pd.DataFrame({"timestamp": pd.to_datetime(["2011-11-01", "2011-11-09"], utc=True)})
    >>> [len(part) for part in time_split(ev, "2011-11-09")]
    [1, 1]
    """
    _require_columns(events, ("timestamp",), "events")
    try:
        cutoff = pd.Timestamp(cutoff)
    except (TypeError, ValueError):
        raise ValueError(f"`cutoff` must be a date or time. Received: cutoff={cutoff!r}") from None
    if cutoff is pd.NaT:
        raise ValueError(f"`cutoff` must be a date or time. Received: cutoff={cutoff!r}")
    cutoff = cutoff.tz_localize("UTC") if cutoff.tzinfo is None else cutoff.tz_convert("UTC")
    stamps = events["timestamp"]
    if not pd.api.types.is_datetime64_any_dtype(stamps):
        raise DataError(
            "expected datetimes; validate the events first (recsys.data.events.from_frame)",
            column="timestamp",
        )
    before = (pd.to_datetime(stamps, utc=True) < cutoff).to_numpy()
    return events[before], events[~before]


def stratified_split(frame: pd.DataFrame, label_column, fractions=(0.8, 0.1, 0.1), seed=0):
    """A seeded split that keeps each label's share in every part.

    Each label's rows are shuffled and cut by largest-remainder rounding of `fractions`; a part
    with a positive fraction gets at least one row of every label.

    Args:
        frame: DataFrame.
        label_column: str. The column to stratify on (no missing values).
        fractions: sequence of float. Share of each part; they must sum to 1.
        seed: int. Same seed, same split.

    Returns:
        A tuple of DataFrames, one per fraction, rows in their original order and index.

    Raises:
        ValueError: bad fractions or empty `frame`. DataError: a missing label, or a label with
            fewer rows than there are parts with a positive fraction.

    >>> frame = pd.DataFrame({"y": [0] * 8 + [1] * 4})
    >>> [part["y"].tolist() for part in stratified_split(frame, "y", (0.5, 0.5))]
    [[0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 1, 1]]
    """
    fractions = _check_fractions(fractions)
    codes, labels = _codes(frame, label_column)
    needed = sum(f > 0 for f in fractions)
    rng = np.random.default_rng(seed)
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes, minlength=len(labels))
    parts = [[] for _ in fractions]
    for label, rows in zip(labels, np.split(order, np.cumsum(sizes)[:-1]), strict=True):
        if len(rows) < needed:
            raise DataError(
                f"label {label!r} has {len(rows)} row(s); a stratified split into {needed} "
                f"non-empty parts needs at least {needed}",
                column=label_column,
            )
        cuts = np.cumsum(_allocate(len(rows), fractions))[:-1]
        for part, chunk in zip(parts, np.split(rng.permutation(rows), cuts), strict=True):
            part.append(chunk)
    return tuple(frame.iloc[np.sort(np.concatenate(part))] for part in parts)


def group_split(frame: pd.DataFrame, group_column, fractions=(0.8, 0.1, 0.1), seed=0):
    """A seeded split in which all rows of a group land in the same part.

    `fractions` are shares of the groups (as scikit-learn's `GroupShuffleSplit`), not of rows.

    Returns:
        A tuple of DataFrames, one per fraction, rows in their original order and index.

    Raises:
        ValueError: bad fractions or empty `frame`. DataError: a missing group, or fewer groups
            than parts with a positive fraction.

    >>> frame = pd.DataFrame({"g": ["a", "a", "b", "c", "c", "d"]})
    >>> parts = group_split(frame, "g", (0.5, 0.5), seed=1)
    >>> sorted(len(set(p["g"])) for p in parts), set(parts[0]["g"]) & set(parts[1]["g"])
    ([2, 2], set())
    """
    fractions = _check_fractions(fractions)
    codes, groups = _codes(frame, group_column)
    needed = sum(f > 0 for f in fractions)
    if len(groups) < needed:
        raise DataError(
            f"{len(groups)} group(s) cannot fill {needed} non-empty parts", column=group_column
        )
    shuffled = np.random.default_rng(seed).permutation(len(groups))
    part_of_group = np.empty(len(groups), dtype=np.int64)
    part_of_group[shuffled] = np.repeat(
        np.arange(len(fractions)), _allocate(len(groups), fractions)
    )
    part_of_row = part_of_group[codes]
    return tuple(frame[part_of_row == i] for i in range(len(fractions)))


def user_sequences(events: pd.DataFrame, max_length=None, event_types=None) -> dict:
    """Each user's products in time order (ties keep the frame's order).

    Args:
        events: DataFrame with `user_id`, `product_id`, `timestamp` (and `event` when
            `event_types` is given).
        max_length: int or None. Keep only the most recent `max_length` items.
        event_types: iterable of str or None. Keep only these events (e.g. ["purchase"]).

    Returns:
        dict. user id -> list of product ids, oldest first; users in order of first event.

    >>> ev = pd.DataFrame({"user_id": ["u", "u", "u"], "product_id": ["a", "b", "c"],
    ...                    "timestamp": [3, 1, 2]})
    >>> user_sequences(ev), user_sequences(ev, max_length=2)
    ({'u': ['b', 'c', 'a']}, {'u': ['c', 'a']})
    """
    columns = ("user_id", "product_id", "timestamp") + (("event",) if event_types else ())
    _require_columns(events, columns, "events")
    if len(events) == 0:
        raise ValueError("`events` has no rows; expected at least one event.")
    if max_length is not None and (not isinstance(max_length, int) or max_length < 1):
        raise ValueError(f"`max_length` must be a positive int or None. Received: {max_length!r}")
    if event_types is not None:
        event_types = [event_types] if isinstance(event_types, str) else list(event_types)
        if unknown := sorted(set(event_types) - set(EVENT_TYPES)):
            raise ValueError(
                f"Unknown event types {unknown}; expected some of {list(EVENT_TYPES)}."
            )
        events = events[events["event"].isin(event_types).to_numpy()]
    ordered = events.sort_values("timestamp", kind="stable")
    lists = ordered.groupby("user_id", sort=False)["product_id"].agg(list)
    start = -max_length if max_length else 0
    return {str(user): [str(item) for item in items[start:]] for user, items in lists.items()}


@dataclasses.dataclass(frozen=True)
class ItemVocabulary:
    """Item ids <-> dense indices: 0 is padding, 1 out-of-vocabulary, items from 2 on.

    The layout matches `keras.layers.StringLookup(vocabulary=vocab.to_list(),
    mask_token="[PAD]", num_oov_indices=1)`.

    Args:
        items: sequence of str. Distinct item ids; item `items[i]` gets index
            `i + NUM_RESERVED_IDS`.

    Example:
    >>> vocab = ItemVocabulary.build(["b", "a", "b"])
    >>> vocab.encode(["a", "b", "unseen"]).tolist(), len(vocab)
    ([3, 2, 1], 4)
    >>> vocab.decode([0, 1, 3])
    ['[PAD]', '[OOV]', 'a']
    >>> ItemVocabulary.from_list(vocab.to_list()) == vocab
    True
    """

    items: tuple
    _index: dict = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        items = tuple(str(item) for item in self.items)
        if not items:
            raise ValueError("An item vocabulary needs at least one item. Received: no items.")
        if reserved := sorted({PAD_TOKEN, OOV_TOKEN, ""} & set(items)):
            raise ValueError(f"Item ids may not be empty or reserved tokens. Received: {reserved}")
        index = {item: i + NUM_RESERVED_IDS for i, item in enumerate(items)}
        if len(index) != len(items):
            repeated = next(item for item in items if items.count(item) > 1)
            raise ValueError(f"Item ids must be distinct. Received {repeated!r} more than once.")
        object.__setattr__(self, "items", items)
        object.__setattr__(self, "_index", index)

    @classmethod
    def build(cls, item_ids):
        """A vocabulary of the distinct ids in `item_ids`, in order of first appearance."""
        return cls(tuple(dict.fromkeys(str(item) for item in item_ids)))

    @classmethod
    def from_list(cls, items):
        """Rebuilds a vocabulary saved with `to_list()`."""
        return cls(tuple(items))

    def to_list(self) -> list:
        """The item ids in index order, reserved tokens excluded (e.g. to save as JSON)."""
        return list(self.items)

    def __len__(self):
        """The number of indices, reserved ones included (an embedding table's size)."""
        return len(self.items) + NUM_RESERVED_IDS

    def __contains__(self, item):
        return str(item) in self._index

    def encode(self, ids) -> np.ndarray:
        """Indices (int64) of `ids`; unknown ids map to `OOV_ID`."""
        return np.fromiter((self._index.get(str(i), OOV_ID) for i in ids), dtype=np.int64)

    def decode(self, indices) -> list:
        """Item ids of `indices`; `PAD_ID` and `OOV_ID` decode to "[PAD]" and "[OOV]"."""
        out = []
        for index in np.asarray(indices, dtype=np.int64).ravel().tolist():
            if not 0 <= index < len(self):
                raise ValueError(f"Index out of range [0, {len(self)}). Received: {index}")
            out.append(
                PAD_TOKEN
                if index == PAD_ID
                else OOV_TOKEN
                if index == OOV_ID
                else self.items[index - NUM_RESERVED_IDS]
            )
        return out


def _check_fractions(fractions):
    fractions = tuple(float(f) for f in fractions)
    if not fractions or any(not math.isfinite(f) or f < 0 for f in fractions):
        raise ValueError(f"`fractions` must be non-negative numbers. Received: {fractions}")
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(
            f"`fractions` must sum to 1. Received: {fractions} (sum {sum(fractions):g})"
        )
    return fractions


def _allocate(n, fractions):
    """Splits n items by largest remainder, then gives each positive fraction at least one."""
    raw = np.asarray(fractions) * n
    counts = np.floor(raw).astype(np.int64)
    remainder = raw - counts
    counts[np.argsort(-remainder, kind="stable")[: n - counts.sum()]] += 1
    for i in np.flatnonzero((np.asarray(fractions) > 0) & (counts == 0)):
        counts[np.argmax(counts)] -= 1
        counts[i] += 1
    return counts


def _codes(frame, column):
    if len(frame) == 0:
        raise ValueError("`frame` has no rows; expected at least one row.")
    _require_columns(frame, (column,), "frame")
    values = frame[column]
    if values.isna().any():
        row = int(np.flatnonzero(values.isna().to_numpy())[0])
        raise DataError("missing value; every row needs one", column=column, row=row)
    codes, uniques = pd.factorize(values, sort=True)
    return codes, list(uniques)


def _require_columns(frame, columns, name):
    if missing := [c for c in columns if c not in frame.columns]:
        raise DataError(
            f"`{name}` lacks column(s) {missing}; found {[str(c) for c in frame.columns]}",
            column=missing[0],
        )
