"""A seeded synthetic store whose true buy probabilities are known.

Products have readable titles (brand, material, adjective, type, size) in a dozen categories.
Users have hidden tastes over categories, brands and materials and a price sensitivity. Their
chance of buying a product they look at depends on those tastes, the product and whether they
bought from its category or brand before (the formula is in `recsys.data.synthetic_sim`).
Sessions of views, carts and purchases over ~6 months are drawn from that model, and reviews
follow the shopper's satisfaction. `truth` holds pairs from a held-out period after the events,
labelled independently of them, so `bayes_optimal_auc` is the best ROC-AUC any model trained on
the events can reach.

Example:
>>> store = generate(products=24, users=12, seed=0, events_target=400)
>>> store.catalog.columns.tolist()
['product_id', 'title', 'category', 'description', 'brand', 'price']
>>> store.buy_probability(["U00000"], ["P00003"]).shape
(1,)
>>> bool(store.truth["timestamp"].min() > store.events["timestamp"].max())
True
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import shutil
import tempfile

import numpy as np
import pandas as pd

from recsys.data import catalog as catalog_table
from recsys.data import events as events_table
from recsys.data import reviews as reviews_table
from recsys.data import synthetic_sim as sim
from recsys.data import synthetic_text as text
from recsys.data.errors import DataError
from recsys.data.synthetic_sim import Hidden
from recsys.data.tables import read_frame

logger = logging.getLogger(__name__)

FILES = ("catalog.parquet", "events.parquet", "reviews.parquet", "truth.parquet")
MAX_USER_PRODUCT_CELLS = 50_000_000


@dataclasses.dataclass(frozen=True, eq=False)
class SyntheticStore:
    """The generated tables plus the hidden parameters that produced them.

    Args:
        catalog, events, reviews: DataFrames validated like `recsys.data.*.from_frame`.
        truth: DataFrame. Held-out pairs: `user_id`, `product_id`, `timestamp` (after every
            event), `probability` (the true buy probability) and `label` (0/1, sampled).
        hidden: Hidden. The parameters behind the tables.
        seed: int. The seed they were generated from.
    """

    catalog: pd.DataFrame
    events: pd.DataFrame
    reviews: pd.DataFrame
    truth: pd.DataFrame
    hidden: Hidden
    seed: int

    def buy_probability(self, user_ids, product_ids) -> np.ndarray:
        """The true probability that each user buys each product they look at, given the
        purchases in `events` (elementwise over two equal-length id sequences).

        Raises:
            ValueError: the lengths differ or an id is unknown.
        """
        users = _positions(self.hidden.user_ids, user_ids, "user_ids")
        products = _positions(self.hidden.product_ids, product_ids, "product_ids")
        if users.shape != products.shape:
            raise ValueError(
                f"`user_ids` and `product_ids` must have the same length. "
                f"Received: {users.shape[0]} and {products.shape[0]}"
            )
        return sim.sigmoid(self.hidden.logits(users, products))

    def bayes_optimal_auc(self) -> float:
        """ROC-AUC of the true probabilities on the `truth` labels (see `bayes_optimal_auc`)."""
        return bayes_optimal_auc(self.truth)

    def summary(self) -> dict:
        """Counts per table, categories, event mix, purchase rate and Bayes-optimal AUC."""
        mix = self.events["event"].value_counts()
        views = int(mix.get("view", 0))
        try:
            auc = round(self.bayes_optimal_auc(), 4)
        except ValueError:
            auc = None
        return {
            "seed": self.seed,
            "products": len(self.catalog),
            "users": len(self.hidden.user_ids),
            "events": len(self.events),
            "reviews": len(self.reviews),
            "truth_pairs": len(self.truth),
            "categories": sorted(self.catalog["category"].unique().tolist()),
            "event_mix": {e: int(mix.get(e, 0)) for e in ("view", "cart", "purchase")},
            "purchase_rate": round(int(mix.get("purchase", 0)) / max(views, 1), 4),
            "truth_positive_rate": round(float(self.truth["label"].mean()), 4),
            "events_start": str(self.events["timestamp"].min()),
            "events_end": str(self.events["timestamp"].max()),
            "bayes_optimal_auc": auc,
        }


EVENTS_PER_USER = 100_000 / 3000


def generate(products=2000, users=3000, seed=0, events_target=None) -> SyntheticStore:
    """Generates a synthetic store; the same arguments always give identical tables.

    Args:
        products: int. Catalog size; at least one per category (12).
        users: int. Number of shoppers; each has at least one session.
        seed: int. Random seed (>= 0).
        events_target: int or None. About how many events to simulate (>= users); by
            default about 33 per user (100,000 for the default 3,000 users).

    Raises:
        ValueError: an argument is out of range.
    """
    if events_target is None and isinstance(users, int):
        events_target = max(int(round(users * EVENTS_PER_USER)), users)
    _check_args(products, users, seed, events_target)
    hidden, catalog, events, reviews, truth = sim.build(products, users, seed, events_target)
    store = SyntheticStore(
        catalog=catalog_table.from_frame(catalog, path="<synthetic catalog>"),
        events=events_table.from_frame(events, path="<synthetic events>"),
        reviews=reviews_table.from_frame(reviews, path="<synthetic reviews>"),
        truth=truth,
        hidden=hidden,
        seed=int(seed),
    )
    logger.info(
        "Generated synthetic store: %d products, %d users, %d events, %d reviews",
        len(store.catalog),
        users,
        len(store.events),
        len(store.reviews),
    )
    return store


def _check_args(products, users, seed, events_target):
    for name, value in (
        ("products", products),
        ("users", users),
        ("seed", seed),
        ("events_target", events_target),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(f"`{name}` must be an int. Received: {name}={value!r}")
    if products < len(text.CATEGORIES):
        raise ValueError(
            f"`products` must be >= {len(text.CATEGORIES)} (one per category). "
            f"Received: products={products}"
        )
    if users < 1:
        raise ValueError(f"`users` must be >= 1. Received: users={users}")
    if seed < 0:
        raise ValueError(f"`seed` must be >= 0. Received: seed={seed}")
    if products * users > MAX_USER_PRODUCT_CELLS:  # browsing keeps a dense [users, products] table
        raise ValueError(
            f"`products * users` must be <= {MAX_USER_PRODUCT_CELLS:,}. "
            f"Received: products={products}, users={users}"
        )
    if events_target < users:
        raise ValueError(
            f"`events_target` must be >= users ({users}), since every user has a "
            f"session. Received: events_target={events_target}"
        )


def bayes_optimal_auc(truth: pd.DataFrame) -> float:
    """ROC-AUC of `truth["probability"]` against `truth["label"]`: the best any model can reach.

    >>> bayes_optimal_auc(pd.DataFrame({"probability": [0.1, 0.4, 0.4, 0.9],
    ...                                 "label": [0, 0, 1, 1]}))
    0.875
    """
    return _roc_auc(truth["label"].to_numpy(), truth["probability"].to_numpy())


def _roc_auc(labels, scores) -> float:
    """Rank-based ROC-AUC (Mann-Whitney U) with tied scores given their average rank.

    >>> _roc_auc(np.array([0, 1, 0, 1]), np.array([0.2, 0.2, 0.1, 0.9]))
    0.875
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"ROC-AUC needs both labels. Received: {n_pos} positive(s) and {n_neg} negative(s)"
        )
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], scores.size]
    avg_rank = (starts + ends + 1) / 2.0  # 1-based average rank of each tie group
    ranks = np.empty(scores.size)
    ranks[order] = np.repeat(avg_rank, ends - starts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _positions(known, ids, name):
    ids = np.asarray(ids, dtype=str).ravel()
    sorter = np.argsort(known, kind="stable")
    pos = sorter[np.minimum(np.searchsorted(known, ids, sorter=sorter), known.size - 1)]
    bad = known[pos] != ids
    if bad.any():
        raise ValueError(f"Unknown id in `{name}`: {str(ids[np.flatnonzero(bad)[0]])!r}")
    return pos


def write_store(store: SyntheticStore, out_dir, overwrite=False) -> pathlib.Path:
    """Writes the tables, `params.npz` and `summary.json` to `out_dir` atomically.

    Everything goes into a temporary sibling directory that is renamed into place, so readers
    never see a half-written store.

    Raises:
        FileExistsError: `out_dir` exists and `overwrite` is False.
    """
    out_dir = pathlib.Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} already exists; pass overwrite=True to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    old = None
    try:
        for name, frame in zip(
            FILES, (store.catalog, store.events, store.reviews, store.truth), strict=True
        ):
            frame.to_parquet(tmp / name, index=False)
        np.savez(tmp / "params.npz", **dataclasses.asdict(store.hidden))
        (tmp / "summary.json").write_text(json.dumps(store.summary(), indent=2) + "\n")
        if out_dir.exists():  # replacing: two renames, the old copy is deleted afterwards
            old = out_dir.with_name(tmp.name + ".old")
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
    except BaseException:
        if old is not None and not out_dir.exists():
            os.replace(old, out_dir)  # put the previous store back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old)
    logger.info("Wrote synthetic store to %s", out_dir)
    return out_dir


def load_store_dir(path) -> SyntheticStore:
    """Reads a directory written by `write_store`, validating every table.

    Raises:
        DataError: a file is missing or holds bad data.
    """
    path = pathlib.Path(path)
    for name in (*FILES, "params.npz", "summary.json"):
        if not (path / name).is_file():
            raise DataError(
                f"missing {name}; expected a directory written by write_store", path=str(path)
            )
    try:
        with np.load(path / "params.npz", allow_pickle=False) as arrays:
            hidden = Hidden(**{f.name: arrays[f.name] for f in dataclasses.fields(Hidden)})
    except (OSError, KeyError, ValueError) as e:
        raise DataError(
            f"unreadable params.npz ({type(e).__name__}: {e}); expected the file write_store wrote",
            path=str(path),
        ) from None
    catalog = catalog_table.load_catalog(path / FILES[0])
    events = events_table.load_events(path / FILES[1], catalog=catalog)
    reviews = reviews_table.load_reviews(path / FILES[2])
    truth = _check_truth(read_frame(path / FILES[3]), hidden, str(path / FILES[3]))
    seed = json.loads((path / "summary.json").read_text())["seed"]
    return SyntheticStore(catalog, events, reviews, truth, hidden, seed)


def _check_truth(truth, h: Hidden, where):
    columns = ["user_id", "product_id", "timestamp", "probability", "label"]
    missing = [c for c in columns if c not in truth.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}; expected {columns}", path=where)
    checks = (
        ("user_id", ~np.isin(truth["user_id"].to_numpy(str), h.user_ids), "unknown user"),
        (
            "product_id",
            ~np.isin(truth["product_id"].to_numpy(str), h.product_ids),
            "unknown product",
        ),
        (
            "probability",
            ~truth["probability"].between(0.0, 1.0).to_numpy(),
            "expected a probability in 0..1",
        ),
        ("label", ~truth["label"].isin([0, 1]).to_numpy(), "expected a label 0 or 1"),
    )
    for column, bad, message in checks:
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(
                message, path=where, column=column, row=row, value=truth[column].iloc[row]
            )
    return truth[columns].astype({"user_id": "string", "product_id": "string"})
