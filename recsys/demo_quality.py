"""The demo's quality checks: each model's headline metric next to its target.

- buy probability: ROC-AUC on the synthetic store's held-out truth pairs against the
  Bayes-optimal AUC of the same pairs (the best any model can reach);
- ranking: full-ranking NDCG@10 (protocol P2, leave-one-out, history excluded) against a
  most-popular baseline computed on the same split in the same run;
- review classification: macro-F1 on the test split, with a majority-class guess for scale.

Example:
>>> check = classifier_check({"test": {"macro_f1": 0.8, "confusion_matrix": [[6, 0], [1, 3]]}})
>>> check.met, round(check.reference_value, 3)
(True, 0.375)
>>> print(check.line())
classifier  macro-F1 0.800  (majority-class guess 0.375)  target >= 0.70  ok
"""

from __future__ import annotations

import dataclasses

import numpy as np

from recsys import metrics
from recsys.schema import NUM_RESERVED_IDS

BUY_TARGET_RATIO = 0.90  # truth-pair AUC / Bayes-optimal AUC
RANKER_TARGET_LIFT = 2.0  # NDCG@10 / most-popular NDCG@10
CLASSIFIER_TARGET_F1 = 0.70  # macro-F1


@dataclasses.dataclass(frozen=True)
class Check:
    """One model's headline metric, what it is compared with, and whether it meets its target.

    Args:
        model: str. "buy", "ranker" or "classifier".
        metric: str. The headline metric's name.
        value: float. Its value.
        reference: str. What the value is compared with, e.g. "Bayes-optimal".
        reference_value: float or None. The reference's value.
        target: str. The target, in words.
        met: bool or None. None when the target cannot be judged (no reference).
    """

    model: str
    metric: str
    value: float
    reference: str
    reference_value: float | None
    target: str
    met: bool | None

    def line(self) -> str:
        ref = "n/a" if self.reference_value is None else f"{self.reference_value:.3f}"
        verdict = {True: "ok", False: "BELOW TARGET", None: "not judged"}[self.met]
        return (
            f"{self.model:<10}  {self.metric} {self.value:.3f}  ({self.reference} {ref})  "
            f"target {self.target}  {verdict}"
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def buy_check(report, bayes_optimal_auc):
    """The buy model's truth-pair AUC against the Bayes-optimal AUC (ratio >= 0.90).

    Without truth pairs (not the synthetic store) the test ROC-AUC is shown, unjudged.

    >>> c = buy_check({"synthetic_truth": {"roc_auc": 0.82}}, 0.88)
    >>> c.met, c.target
    (True, '>= 0.90 x optimal = 0.792')
    """
    truth = report.get("synthetic_truth")
    if truth is None or bayes_optimal_auc is None:
        value = (truth or {}).get("roc_auc", report.get("headline", {}).get("roc_auc"))
        return Check("buy", "test ROC-AUC", float(value), "Bayes-optimal", None, "n/a", None)
    goal = BUY_TARGET_RATIO * bayes_optimal_auc
    return Check(
        "buy",
        "truth-pair ROC-AUC",
        float(truth["roc_auc"]),
        "Bayes-optimal",
        float(bayes_optimal_auc),
        f">= {BUY_TARGET_RATIO:.2f} x optimal = {goal:.3f}",
        bool(truth["roc_auc"] >= goal),
    )


def ranker_check(report, baseline):
    """The ranker's test NDCG@10 against the most-popular baseline's (>= 2x).

    >>> ranker_check({"headline": {"ndcg_at_10": 0.03}}, {"ndcg_at_10": 0.01}).met
    True
    """
    value = float(report["headline"]["ndcg_at_10"])
    popular = float(baseline["ndcg_at_10"])
    goal = RANKER_TARGET_LIFT * popular
    return Check(
        "ranker",
        "NDCG@10",
        value,
        "most popular",
        popular,
        f">= {RANKER_TARGET_LIFT:.0f}x most popular = {goal:.3f}",
        bool(value >= goal),
    )


def majority_macro_f1(confusion):
    """Macro-F1 of always predicting the most frequent true class (rows: true classes).

    >>> round(majority_macro_f1([[6, 0], [1, 3]]), 3)
    0.375
    """
    support = np.asarray(confusion).sum(axis=1)
    share = support.max() / support.sum()
    return float(2 * share / (1 + share) / len(support))


def classifier_check(report):
    """The classifier's test macro-F1 against its target (>= 0.70)."""
    test = report["test"]
    value = float(test["macro_f1"])
    return Check(
        "classifier",
        "macro-F1",
        value,
        "majority-class guess",
        majority_macro_f1(test["confusion_matrix"]),
        f">= {CLASSIFIER_TARGET_F1:.2f}",
        bool(value >= CLASSIFIER_TARGET_F1),
    )


def popularity_ranks(popularity, histories, targets, batch_size=512):
    """0-based ranks of the targets when every user gets the most popular items.

    The protocol is the ranker's (P2 full ranking): reserved ids and the user's history are
    excluded. Ties in popularity are broken by item index, so the baseline gets no free wins.

    Args:
        popularity: int array `[V]`. Training interaction counts per vocabulary index.
        histories: list of int arrays. Each user's history (vocabulary indices).
        targets: int array `[N]`. Each user's target.

    Example:
    >>> popularity_ranks(np.array([0, 0, 5, 3, 3]), [np.array([2])], np.array([4])).tolist()
    [1]
    """
    popularity = np.asarray(popularity, dtype=np.float64)
    size = len(popularity)
    scores = popularity + (size - np.arange(size)) / (size + 1.0)  # ties: lower index first
    targets = np.asarray(targets)
    ranks = np.zeros(len(targets), np.int64)
    for start in range(0, len(targets), batch_size):
        stop = min(start + batch_size, len(targets))
        exclude = np.zeros((stop - start, size), bool)
        exclude[:, :NUM_RESERVED_IDS] = True
        for row, history in enumerate(histories[start:stop]):
            exclude[row, history] = True
        block = np.broadcast_to(scores, exclude.shape)
        ranks[start:stop] = metrics.rank_of_target(block, targets[start:stop], exclude)
    return ranks


def popularity_baseline(config_path, overrides=()):
    """The most-popular baseline on the ranker's own test split: a `ranking_report` dict.

    The split comes from the ranking adapter's `prepare` with the same config, so the
    baseline and the model see the same users, histories and targets.
    """
    from recsys.config import load_config
    from training import rank

    data = rank.prepare(load_config(config_path, overrides))
    ranks = popularity_ranks(data.popularity, data.test.histories, data.test.targets)
    return metrics.ranking_report(ranks)
