"""Training pairs for buy probability, built from events without looking into the future.

Positives are purchases. Negatives are products the user viewed or carted but never bought,
plus products drawn uniformly from the catalog. Each example's user context is built only from
the user's events before the candidate's session (events more than `SESSION_GAP` before it),
so neither the label nor the session that led to it leak into the context.

Example:
>>> import pandas as pd
>>> events = pd.DataFrame({
...     "user_id": ["u", "u", "u"], "product_id": ["a", "b", "b"],
...     "event": ["purchase", "view", "purchase"],
...     "timestamp": pd.to_datetime(["2024-01-01 00:00", "2024-02-01 00:00", "2024-02-01 00:05"], utc=True)})
>>> catalog = pd.DataFrame({"product_id": ["a", "b", "c"], "title": ["Mug", "Cap", "Hat"],
...                         "category": ["kitchen", "hats", "hats"]})
>>> pairs = build_pairs(events, catalog, negatives=1, seed=0)
>>> pairs[["product_id", "label", "context"]].values.tolist()[:2]
[['a', 1, ''], ['b', 1, 'bought: Mug | kitchen']]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.schema import price_band
from recsys.tasks.buy_probability import context_text, event_prefix, item_text, product_text

SESSION_GAP = pd.Timedelta(minutes=30)
RECENT_DAYS = 30  # window of the products' recent distinct buyers (`product_counts`)
SHORT_DAYS, LONG_DAYS = 7, 60  # the windows of two more such counts


def catalog_texts(catalog: pd.DataFrame):
    """Returns `(item_texts, product_texts)`: dicts product id -> context / product text."""
    brands = catalog["brand"] if "brand" in catalog else pd.Series([None] * len(catalog))
    prices = catalog["price"] if "price" in catalog else pd.Series([None] * len(catalog))
    items, products = {}, {}
    for pid, title, category, brand, price in zip(
        catalog["product_id"], catalog["title"], catalog["category"], brands, prices, strict=True
    ):
        price = None if price is None or pd.isna(price) else float(price)
        brand = None if brand is None or pd.isna(brand) else brand
        items[pid] = item_text(title, category, brand)
        products[pid] = product_text(
            title, category, brand, price_band(price) if price is not None else None
        )
    return items, products


class HistoryIndex:
    """Per-user event history for building contexts at any point in time."""

    def __init__(self, events: pd.DataFrame, item_texts: dict):
        events = events.sort_values("timestamp", kind="stable")
        self._item_texts = item_texts
        self._times, self._products, self._events = {}, {}, {}
        for user, group in events.groupby("user_id", sort=False):
            self._times[user] = group["timestamp"].to_numpy(dtype="datetime64[ns]")
            self._products[user] = group["product_id"].to_numpy()
            self._events[user] = group["event"].to_numpy()

    def _window(self, user, before, length):
        times = self._times.get(user)
        if times is None:
            return slice(0, 0)
        end = int(np.searchsorted(times, np.datetime64(before.tz_convert(None)), side="left"))
        return slice(max(0, end - length), end)

    def history(self, user, before, length):
        """The user's last `length` product ids strictly before `before`, most recent first."""
        window = self._window(user, before, length)
        return list(self._products.get(user, np.array([]))[window][::-1])

    def history_events(self, user, before, length):
        """Like `history`, as (product id, event) pairs."""
        window = self._window(user, before, length)
        if user not in self._products:
            return []
        return list(
            zip(self._products[user][window][::-1], self._events[user][window][::-1], strict=True)
        )

    def context(self, user, before, length, query=None):
        items = [
            event_prefix(event) + self._item_texts[p]
            for p, event in self.history_events(user, before, length)
            if p in self._item_texts
        ]
        return context_text(items, query=query)


def build_pairs(events, catalog, negatives=4, history_length=10, seed=0, max_pairs=None):
    """Labelled (user, product) pairs with their context and product texts.

    Args:
        events: validated events frame.
        catalog: validated catalog frame.
        negatives: int. Negatives per positive (half viewed-not-bought where there are enough,
            the rest uniform over the catalog).
        history_length: int. History items in the context.
        seed: int. Sampling seed.
        max_pairs: int or None. Keep at most this many pairs (a random subset, same seed).

    Returns:
        DataFrame with `user_id`, `product_id`, `timestamp`, `label`, `context`, `product`,
        sorted by time.
    """
    purchases = _purchase_rows(events)
    rng = np.random.default_rng(seed)
    items, products = catalog_texts(catalog)
    positives = purchases[["user_id", "product_id", "timestamp"]].assign(label=1)
    bought = set(zip(purchases["user_id"], purchases["product_id"], strict=True))
    browsed = events[events["event"] != "purchase"].drop_duplicates(["user_id", "product_id"])
    keep = np.array(
        [
            (u, p) not in bought
            for u, p in zip(browsed["user_id"], browsed["product_id"], strict=True)
        ],
        dtype=bool,
    )
    browsed = browsed[keep]
    wanted = negatives * len(positives)
    n_browsed = min(len(browsed), wanted // 2)
    hard = browsed.iloc[rng.permutation(len(browsed))[:n_browsed]]
    hard = hard[["user_id", "product_id", "timestamp"]].assign(label=0)
    n_uniform = wanted - n_browsed
    anchor = positives.iloc[rng.integers(0, len(positives), n_uniform)]
    catalog_ids = catalog["product_id"].to_numpy()
    uniform = pd.DataFrame(
        {
            "user_id": anchor["user_id"].to_numpy(),
            "product_id": catalog_ids[rng.integers(0, len(catalog_ids), n_uniform)],
            "timestamp": anchor["timestamp"].to_numpy(),
            "label": 0,
        }
    )
    fresh = [
        (u, p) not in bought for u, p in zip(uniform["user_id"], uniform["product_id"], strict=True)
    ]
    uniform = uniform[np.array(fresh, dtype=bool)]
    pairs = pd.concat([positives, hard, uniform], ignore_index=True)
    pairs["timestamp"] = pd.to_datetime(pairs["timestamp"], utc=True)
    if max_pairs is not None and len(pairs) > max_pairs:
        pairs = pairs.iloc[np.sort(rng.permutation(len(pairs))[:max_pairs])]
    pairs = pairs.sort_values("timestamp", kind="stable").reset_index(drop=True)
    index = HistoryIndex(events, items)
    pairs["context"] = [
        index.context(u, t - SESSION_GAP, history_length)
        for u, t in zip(pairs["user_id"], pairs["timestamp"], strict=True)
    ]
    pairs["product"] = pairs["product_id"].map(products)
    pairs["label"] = pairs["label"].astype("int64")
    return pairs


def horizon_cutoffs(events, horizon_days):
    """Cutoffs `horizon_days` apart, counted back from the last event, each with a full window
    after it and some events before it (oldest first).

    >>> import pandas as pd
    >>> events = pd.DataFrame({"timestamp": pd.to_datetime(["2024-01-01", "2024-03-31"])})
    >>> [str(t.date()) for t in horizon_cutoffs(events, 30)]
    ['2024-01-01', '2024-01-31', '2024-03-01']
    """
    first = events["timestamp"].min()
    end = events["timestamp"].max() + pd.Timedelta(seconds=1)  # the last window holds the end
    step = pd.Timedelta(days=horizon_days)
    cutoffs, cutoff = [], end - step
    while cutoff > first:
        cutoffs.append(cutoff)
        cutoff -= step
    return cutoffs[::-1]


def build_horizon_pairs(
    events, catalog, horizon_days, negatives=4, history_length=10, seed=0, max_pairs=None
):
    """Next-period pairs: will the user buy the product in the `horizon_days` after a cutoff?

    At each cutoff of `horizon_cutoffs`, every user with events before it who buys in the window
    after it gives one positive per distinct product bought there (among products seen before
    the cutoff) and `negatives` per positive drawn uniformly from the other products seen before
    it. The context is the user's history before the cutoff and the pair's `timestamp` is the
    cutoff, so product statistics can be counted as of that date (protocol P1 asks this question
    at one cutoff).

    Returns:
        DataFrame with `user_id`, `product_id`, `timestamp`, `label`, `context`, `product`,
        sorted by time.

    >>> import pandas as pd
    >>> events = pd.DataFrame({"user_id": ["u", "u", "v"], "product_id": ["a", "b", "b"],
    ...     "event": "purchase", "timestamp": pd.to_datetime(
    ...         ["2024-01-01", "2024-01-20", "2024-01-10"], utc=True)})
    >>> catalog = pd.DataFrame({"product_id": ["a", "b"], "title": ["Mug", "Cap"],
    ...                         "category": ["kitchen", "hats"]})
    >>> pairs = build_horizon_pairs(events, catalog, horizon_days=10, negatives=1)
    >>> pairs[["user_id", "product_id", "label", "context"]].values.tolist()
    [['u', 'b', 1, 'bought: Mug | kitchen'], ['u', 'a', 0, 'bought: Mug | kitchen']]
    """
    if horizon_days <= 0:
        raise ValueError(f"`horizon_days` must be > 0. Received: {horizon_days}")
    purchases = _purchase_rows(events)
    rng = np.random.default_rng(seed)
    known_ids = set(catalog["product_id"])
    step = pd.Timedelta(days=horizon_days)
    rows = []
    for cutoff in horizon_cutoffs(events, horizon_days):
        before = events[events["timestamp"] < cutoff]
        seen = np.array(sorted(set(before["product_id"]) & known_ids))
        window = purchases[
            (purchases["timestamp"] >= cutoff) & (purchases["timestamp"] < cutoff + step)
        ]
        active = set(before["user_id"])
        for user, bought in window.groupby("user_id")["product_id"]:
            if user not in active:
                continue
            bought = set(bought)
            positives = sorted(bought.intersection(seen))
            candidates = seen[~np.isin(seen, list(bought))]
            if not positives or len(candidates) == 0:
                continue
            drawn = rng.choice(candidates, size=negatives * len(positives), replace=True)
            rows += [(user, p, cutoff, 1) for p in positives]
            rows += [(user, p, cutoff, 0) for p in drawn]
    if not rows:
        raise ValueError(
            f"No next-period pairs: no cutoff {horizon_days} days apart has purchases after it "
            "by users with earlier events; use a shorter `data.horizon_days` or more events."
        )
    pairs = pd.DataFrame(rows, columns=["user_id", "product_id", "timestamp", "label"])
    if max_pairs is not None and len(pairs) > max_pairs:
        pairs = pairs.iloc[np.sort(rng.permutation(len(pairs))[:max_pairs])]
    pairs = pairs.sort_values("timestamp", kind="stable").reset_index(drop=True)
    pairs["label"] = pairs["label"].astype("int64")
    return with_texts(pairs, events, catalog, history_length)


def with_texts(pairs, events, catalog, history_length):
    """Adds each pair's context (the user's events before its `timestamp`, built once per user
    and time) and its product text.

    >>> import pandas as pd
    >>> events = pd.DataFrame({"user_id": ["u"], "product_id": ["a"], "event": ["purchase"],
    ...     "timestamp": pd.to_datetime(["2024-01-01"], utc=True)})
    >>> catalog = pd.DataFrame({"product_id": ["a"], "title": ["Mug"], "category": ["kitchen"]})
    >>> pairs = pd.DataFrame({"user_id": ["u", "u"], "product_id": ["a", "a"],
    ...     "timestamp": pd.to_datetime(["2024-01-01", "2024-02-01"], utc=True)})
    >>> with_texts(pairs, events, catalog, 5)[["context", "product"]].values.tolist()
    [['', 'Mug | kitchen'], ['bought: Mug | kitchen', 'Mug | kitchen']]
    """
    items, products = catalog_texts(catalog)
    index = HistoryIndex(events, items)
    keys = list(zip(pairs["user_id"], pairs["timestamp"], strict=True))
    contexts = {key: index.context(key[0], key[1], history_length) for key in set(keys)}
    return pairs.assign(
        context=[contexts[key] for key in keys], product=pairs["product_id"].map(products)
    )


def _purchase_rows(events):
    """The purchase events; refuses events that are empty or hold no purchase."""
    if len(events) == 0:
        raise ValueError("No events to build buy-probability pairs from.")
    purchases = events[events["event"] == "purchase"]
    if len(purchases) == 0:
        raise ValueError("The events hold no purchases; buy probability needs purchase events.")
    return purchases


def cutoff_split(pairs, validation_fraction=0.1, test_fraction=0.1):
    """Like `time_split`, but whole cutoffs (pairs sharing a `timestamp`) go to one part: the
    latest cutoffs are the test part, the ones before them validation (at least one each when
    its fraction is above 0).

    >>> import pandas as pd
    >>> pairs = pd.DataFrame({"timestamp": [1, 1, 2, 2, 3, 4, 4]})
    >>> [len(part) for part in cutoff_split(pairs, 0.25, 0.25)]
    [4, 1, 2]
    >>> [len(part) for part in cutoff_split(pairs, 0.25, 0.0)]
    [5, 2, 0]
    """
    cutoffs = sorted(pairs["timestamp"].unique())

    def count(fraction):
        return max(1, int(round(len(cutoffs) * fraction))) if fraction > 0 else 0

    n_test, n_val = count(test_fraction), count(validation_fraction)
    if len(cutoffs) <= n_test + n_val:
        raise ValueError(
            f"Too few cutoffs ({len(cutoffs)}) to split into train, validation and test; "
            "use a shorter `data.horizon_days` or more events."
        )
    rank = pairs["timestamp"].map({t: i for i, t in enumerate(cutoffs)})
    first_val, first_test = len(cutoffs) - n_val - n_test, len(cutoffs) - n_test
    return (
        pairs[rank < first_val].reset_index(drop=True),
        pairs[(rank >= first_val) & (rank < first_test)].reset_index(drop=True),
        pairs[rank >= first_test].reset_index(drop=True),
    )


def time_split(pairs, validation_fraction=0.1, test_fraction=0.1):
    """Cuts time-sorted pairs into train, validation and test by time (latest last).

    >>> import pandas as pd
    >>> tr, va, te = time_split(pd.DataFrame({"x": range(10)}), 0.2, 0.1)
    >>> len(tr), len(va), len(te)
    (7, 2, 1)
    """
    n = len(pairs)
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * validation_fraction))
    train = pairs.iloc[: n - n_val - n_test]
    if len(train) == 0:
        raise ValueError(f"Too few pairs ({n}) to split into train, validation and test.")
    return (
        train.reset_index(drop=True),
        pairs.iloc[n - n_val - n_test : n - n_test].reset_index(drop=True),
        pairs.iloc[n - n_test :].reset_index(drop=True),
    )


def product_counts(events, catalog, before=None, recent_days=RECENT_DAYS):
    """Per product text, the columns of `ProductStats`: purchases, views, log price relative to
    the category median, distinct buyers in the last `recent_days` days, how recently it last
    sold (`7 / (7 + days)`, 0 when never), its age in days since its first event and the share
    of its buyers who bought it on more than one day.

    Counts use events before `before` when given; days count back from `before` (or from the
    latest event). Products with identical text share one entry.

    Returns:
        `(texts, purchases, views, relative_price, recent_buyers, sale_recency, age_days,
        repeat_rate, buyers_7d, buyers_60d)` aligned lists for `ProductStats` (the last two
        count distinct buyers like `recent_buyers`, over `SHORT_DAYS` and `LONG_DAYS`).

    >>> import pandas as pd
    >>> events = pd.DataFrame({"user_id": ["u", "v", "v", "w"], "product_id": ["a", "a", "a", "b"],
    ...     "event": ["purchase", "purchase", "purchase", "view"],
    ...     "timestamp": pd.to_datetime(["2024-01-01", "2024-03-01", "2024-03-02", "2024-03-03"])})
    >>> catalog = pd.DataFrame({"product_id": ["a", "b"], "title": ["Mug", "Cap"],
    ...                         "category": ["kitchen", "hats"]})
    >>> texts, bought, seen, _, recent, sold, age, repeat, *_ = product_counts(events, catalog)
    >>> bought, seen, recent  # a: 3 purchases, 1 buyer (v) in the 30 days to 2024-03-03
    ([3.0, 0.0], [0.0, 1.0], [1.0, 0.0])
    >>> sold, age  # a last sold 1 day before the end (b never), first seen 62 days before it
    ([0.875, 0.0], [62.0, 0.0])
    >>> repeat  # of a's buyers (u, v), v bought it on two days
    [0.5, 0.0]
    """
    if before is not None:
        events = events[events["timestamp"] < before]
    end = before if before is not None else events["timestamp"].max()
    purchase_rows = events[events["event"] == "purchase"]
    columns = {
        "purchases": purchase_rows["product_id"].value_counts(),
        "views": events[events["event"] != "purchase"]["product_id"].value_counts(),
    }
    if len(events) and not pd.isna(end):
        day = pd.Timedelta(days=1)
        windows = (
            ("recent_buyers", recent_days),
            ("buyers_7d", SHORT_DAYS),
            ("buyers_60d", LONG_DAYS),
        )
        for name, days in windows:  # distinct buyers in the last `days` days
            window = purchase_rows[purchase_rows["timestamp"] >= end - days * day]
            columns[name] = window.groupby("product_id")["user_id"].nunique()
        last_sale = (end - purchase_rows.groupby("product_id")["timestamp"].max()) / day
        columns["sale_recency"] = 7.0 / (7.0 + last_sale)
        columns["age_days"] = (end - events.groupby("product_id")["timestamp"].min()) / day
        days = purchase_rows.assign(day=purchase_rows["timestamp"].dt.floor("D"))
        buyer_days = days.groupby(["product_id", "user_id"])["day"].nunique()
        columns["repeat_rate"] = (buyer_days > 1).groupby(level="product_id").mean()
    _, product_texts = catalog_texts(catalog)
    relative = pd.Series(0.0, index=catalog["product_id"].to_numpy())
    if "price" in catalog:
        price = pd.to_numeric(catalog["price"], errors="coerce").to_numpy(dtype="float64")
        median = catalog.assign(_p=price).groupby("category")["_p"].transform("median").to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.log(price / median)
        relative[:] = np.where(np.isfinite(ratio), ratio, 0.0)
    combine = {  # products sharing a text: counts add up, recency and age take the larger
        "purchases": sum,
        "views": sum,
        "relative_price": lambda values: values[0],
        "recent_buyers": sum,
        "sale_recency": max,
        "age_days": max,
        "repeat_rate": max,
        "buyers_7d": sum,
        "buyers_60d": sum,
    }
    columns["relative_price"] = relative
    by_id = {name: columns[name].to_dict() if name in columns else {} for name in combine}
    ids_by_text = {}
    for pid, text in product_texts.items():
        ids_by_text.setdefault(text, []).append(pid)
    merged = [
        [float(merge([by_id[name].get(pid, 0.0) for pid in ids])) for ids in ids_by_text.values()]
        for name, merge in combine.items()
    ]
    return (list(ids_by_text), *merged)
