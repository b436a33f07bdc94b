"""Evaluation metrics as pure numpy functions: ROC/PR-AUC, calibration, ranking, classification.

They compute the figures of `docs/PROTOCOLS.md`: P1 (global and per-user ROC-AUC, log loss,
expected calibration error), P2 (HR@K, NDCG@K and MRR from full or 100-sampled ranking) and
P3/P4 (accuracy, F1). Inputs may be lists or numpy arrays. Nothing here imports TensorFlow or
scikit-learn, and scalar results are Python floats, so they go into JSON as they are.
Ranks are 0-based everywhere: rank 0 is the top of the list.

This module runs past the ~400-line guide on purpose: it is one concept (the architecture names
`recsys/metrics.py`), its functions share private validators, and half of it is docstrings.
"""

from __future__ import annotations

import numpy as np


def _vector(values, name, dtype=np.float64):
    array = np.asarray(values, dtype=dtype)
    if array.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D. Received shape: {array.shape}.")
    if array.size == 0:
        raise ValueError(f"`{name}` must not be empty.")
    if array.dtype.kind == "f" and np.isnan(array).any():
        raise ValueError(f"`{name}` must not contain NaN.")
    return array


def _same_length(a, b, name_a, name_b):
    if len(a) != len(b):
        raise ValueError(
            f"`{name_a}` and `{name_b}` must have the same length. Received: {len(a)} and {len(b)}."
        )


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return int(value)


def _binary_pair(labels, scores, name):
    y = _vector(labels, "labels")
    if not np.isin(y, (0.0, 1.0)).all():
        other = np.unique(y[~np.isin(y, (0.0, 1.0))])[:5].tolist()
        raise ValueError(f"`labels` must contain only 0 and 1. Received other values: {other}.")
    s = _vector(scores, name)
    _same_length(y, s, "labels", name)
    if name == "probabilities" and ((s < 0) | (s > 1)).any():
        raise ValueError(f"`probabilities` must lie in [0, 1]. Received: [{s.min()}, {s.max()}].")
    return y, s


def _grouped_auc(groups, labels, scores):
    """Mann-Whitney ROC-AUC of each group id 0..G-1 (ties averaged), and which groups are defined."""
    num_groups = int(groups.max()) + 1
    order = np.lexsort((scores, groups))
    g, s, y = groups[order], scores[order], labels[order]
    starts = np.flatnonzero(np.r_[True, (g[1:] != g[:-1]) | (s[1:] != s[:-1])])
    sizes = np.diff(np.r_[starts, len(s)])
    ranks = np.repeat((2 * starts + sizes + 1) / 2.0, sizes)  # 1-based, averaged over ties
    ranks -= np.searchsorted(g, g)  # make them ranks within the group
    pos = np.bincount(g, weights=y, minlength=num_groups)
    neg = np.bincount(g, minlength=num_groups) - pos
    rank_sum = np.bincount(g, weights=ranks * y, minlength=num_groups)
    valid = (pos > 0) & (neg > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (rank_sum - pos * (pos + 1) / 2) / (pos * neg), valid


def roc_auc(labels, scores):
    """Area under the ROC curve, from ranks (Mann-Whitney U), with tied scores averaged.

    Args:
        labels: array-like of 0/1, shape `[n]`.
        scores: array-like of float, shape `[n]`. Higher means more likely positive.

    Returns:
        float. The probability that a random positive outscores a random negative.

    Raises:
        ValueError: on a length mismatch, labels other than 0/1 or a single class.

    Example:
    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    y, s = _binary_pair(labels, scores, "scores")
    auc, valid = _grouped_auc(np.zeros(len(y), np.int64), y, s)
    if not valid[0]:
        raise ValueError(f"ROC-AUC needs both classes in `labels`. Received only {int(y[0])}.")
    return float(auc[0])


def per_user_auc(user_ids, labels, scores):
    """Mean of per-user ROC-AUC over the users that have both a positive and a negative pair.

    Args:
        user_ids: array-like of ids (int or str), shape `[n]`.
        labels: array-like of 0/1, shape `[n]`.
        scores: array-like of float, shape `[n]`.

    Returns:
        tuple `(mean_auc, users)`: float, and the int number of users averaged over.

    Raises:
        ValueError: on a length mismatch, or when no user has both classes.

    Example:
    >>> per_user_auc(["a", "a", "b", "b", "c"], [1, 0, 1, 0, 1], [0.9, 0.1, 0.2, 0.3, 0.5])
    (0.5, 2)
    """
    y, s = _binary_pair(labels, scores, "scores")
    users = _vector(user_ids, "user_ids", dtype=None)
    _same_length(users, y, "user_ids", "labels")
    groups = np.unique(users, return_inverse=True)[1].ravel()
    auc, valid = _grouped_auc(groups, y, s)
    if not valid.any():
        raise ValueError(
            "No user has both a positive and a negative pair: per-user AUC is undefined."
        )
    return float(auc[valid].mean()), int(valid.sum())


def _threshold_counts(y, s):
    """False and true positives at each distinct score, taken as a threshold (descending)."""
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]
    tps = np.cumsum(y)[last]
    return last + 1 - tps, tps, s[last]


def roc_curve(labels, scores):
    """ROC curve points for plotting, one per distinct score (no points dropped).

    Returns:
        tuple `(fpr, tpr, thresholds)` of arrays, starting at `(0, 0, inf)`; a point means
        "predict positive when score >= threshold".

    Example:
    >>> fpr, tpr, thresholds = roc_curve([0, 1, 1], [0.2, 0.9, 0.2])
    >>> fpr.tolist(), tpr.tolist(), thresholds.tolist()
    ([0.0, 0.0, 1.0], [0.0, 0.5, 1.0], [inf, 0.9, 0.2])
    """
    y, s = _binary_pair(labels, scores, "scores")
    fps, tps, thresholds = _threshold_counts(y, s)
    if tps[-1] == 0 or fps[-1] == 0:
        raise ValueError("The ROC curve needs both classes in `labels`.")
    return np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]], np.r_[np.inf, thresholds]


def pr_auc(labels, scores):
    """Average precision: sum over thresholds of (recall gain) x precision, as scikit-learn.

    Example:
    >>> pr_auc([0, 1, 1, 0], [0.1, 0.8, 0.4, 0.6])
    0.8333333333333333
    """
    y, s = _binary_pair(labels, scores, "scores")
    fps, tps, _ = _threshold_counts(y, s)
    if tps[-1] == 0:
        raise ValueError("Average precision needs at least one positive in `labels`.")
    recall_gain = np.diff(np.r_[0.0, tps / tps[-1]])
    return float(np.sum(recall_gain * tps / (tps + fps)))


def log_loss(labels, probabilities, eps=1e-7):
    """Mean binary cross-entropy, with probabilities clipped to `[eps, 1 - eps]`.

    Example:
    >>> round(log_loss([1, 0], [0.8, 0.4]), 4)
    0.367
    """
    y, p = _binary_pair(labels, probabilities, "probabilities")
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def _bin_sums(labels, probabilities, bins):
    y, p = _binary_pair(labels, probabilities, "probabilities")
    bins = _positive_int(bins, "bins")
    # Equal-width bins, right-closed (lo, hi] with 0 in the first, as scikit-learn's.
    ids = np.searchsorted(np.linspace(0.0, 1.0, bins + 1)[1:-1], p)
    return (
        np.bincount(ids, minlength=bins),
        np.bincount(ids, weights=p, minlength=bins),
        np.bincount(ids, weights=y, minlength=bins),
    )


def expected_calibration_error(labels, probabilities, bins=10):
    """ECE: mean |mean predicted - observed frequency| over equal-width bins, weighted by count.

    Example:
    >>> round(expected_calibration_error([0, 1, 1, 1], [0.1, 0.9, 0.9, 0.9]), 6)
    0.1
    """
    counts, sum_p, sum_y = _bin_sums(labels, probabilities, bins)
    return float(np.abs(sum_p - sum_y).sum() / counts.sum())


def calibration_curve(labels, probabilities, bins=10):
    """Reliability-diagram points: one per non-empty equal-width bin (empty bins are left out).

    Returns:
        tuple `(mean_predicted, observed_frequency, counts)` of arrays of the same length.

    Example:
    >>> mean_p, observed, counts = calibration_curve([0, 1, 1, 0], [0.1, 0.2, 0.9, 0.7], bins=2)
    >>> mean_p.tolist(), observed.tolist(), counts.tolist()
    ([0.15000000000000002, 0.8], [0.5, 0.5], [2, 2])
    """
    counts, sum_p, sum_y = _bin_sums(labels, probabilities, bins)
    kept = counts > 0
    return sum_p[kept] / counts[kept], sum_y[kept] / counts[kept], counts[kept]


def rank_of_target(scores, target_index, exclude_mask=None):
    """0-based rank of each row's target item among the items not excluded.

    The rank counts the non-excluded items with a strictly greater score, so ties are resolved in
    the target's favour. The target itself is always ranked, even when `exclude_mask` marks it.

    Args:
        scores: array-like of float, shape `[batch, num_items]`.
        target_index: array-like of int, shape `[batch]`. The target item of each row.
        exclude_mask: optional array-like of bool, shape `[batch, num_items]`. True for items
            to leave out of the ranking (padding ids, the user's history).

    Returns:
        int64 array of shape `[batch]`.

    Example:
    >>> scores = [[0.1, 0.9, 0.5, 0.7], [0.3, 0.3, 0.8, 0.1]]
    >>> rank_of_target(scores, [2, 1]).tolist()
    [2, 1]
    >>> rank_of_target(scores, [2, 1], [[0, 1, 0, 0], [0, 0, 1, 0]]).tolist()
    [1, 0]
    """
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.dtype.kind not in "fiu":
        raise ValueError(f"`scores` must be [batch, num_items] numbers. Received: {scores.shape}.")
    if scores.dtype.kind == "f" and np.isnan(scores).any():
        raise ValueError("`scores` must not contain NaN.")
    rows, num_items = scores.shape
    target = np.asarray(target_index)
    if target.shape != (rows,) or target.dtype.kind not in "iu":
        raise ValueError(f"`target_index` must be [{rows}] ints. Received: {target!r}.")
    if ((target < 0) | (target >= num_items)).any():
        raise ValueError(f"`target_index` must lie in [0, {num_items}). Received: {target}.")
    above = scores > scores[np.arange(rows), target][:, None]
    if exclude_mask is not None:
        mask = np.asarray(exclude_mask, dtype=bool)
        if mask.shape != scores.shape:
            raise ValueError(f"`exclude_mask` must be {scores.shape}. Received: {mask.shape}.")
        above &= ~mask
    return above.sum(axis=1, dtype=np.int64)


def _ranks(ranks):
    r = _vector(ranks, "ranks", dtype=None)
    if r.dtype.kind not in "iuf" or (r < 0).any() or (r != np.floor(r)).any():
        raise ValueError("`ranks` must be non-negative integers (0-based ranks).")
    return r


def hit_rate_at_k(ranks, k):
    """Fraction of 0-based ranks below `k` (HR@K, also called recall@K with one target).

    >>> hit_rate_at_k([0, 4, 5, 20], 5)
    0.5
    """
    return float(np.mean(_ranks(ranks) < _positive_int(k, "k")))


def ndcg_at_k(ranks, k):
    """Mean of `1 / log2(rank + 2)` when `rank < k`, else 0 (one relevant item per row).

    >>> ndcg_at_k([0, 1, 10], 10)
    0.5436432511904858
    """
    r = _ranks(ranks)
    return float(np.mean(np.where(r < _positive_int(k, "k"), 1.0 / np.log2(r + 2.0), 0.0)))


def mrr(ranks):
    """Mean reciprocal rank, `mean(1 / (rank + 1))`, over all rows (no cut-off).

    >>> mrr([0, 1, 3])
    0.5833333333333334
    """
    return float(np.mean(1.0 / (_ranks(ranks) + 1.0)))


def ranking_report(ranks, ks=(1, 5, 10), ndcg_ks=(5, 10)):
    """HR@K, NDCG@K and MRR of 0-based ranks, keyed like `"hr_at_10"`, plus the row count.

    >>> ranking_report([0, 2], ks=(1,), ndcg_ks=(5,))
    {'hr_at_1': 0.5, 'ndcg_at_5': 0.75, 'mrr': 0.6666666666666666, 'users': 2}
    """
    r = _ranks(ranks)
    report = {f"hr_at_{k}": hit_rate_at_k(r, k) for k in ks}
    report.update({f"ndcg_at_{k}": ndcg_at_k(r, k) for k in ndcg_ks})
    return {**report, "mrr": mrr(r), "users": len(r)}


def sampled_negatives(rng, num_items, interacted, n=100, reserved=2):
    """Draws `n` item ids uniformly among those the user never interacted with (P2 sampled).

    Candidates are the ids in `[reserved, num_items)` not in `interacted`. The draw is without
    replacement, unless there are fewer than `n` candidates, in which case it is with replacement.

    Args:
        rng: `np.random.Generator`, e.g. `np.random.default_rng(0)`.
        num_items: int. Size of the id space, reserved ids included.
        interacted: iterable of int. Every item the user interacted with (the target included).
        n: int. How many negatives to draw.
        reserved: int. Ids below it (padding, mask) are never drawn.

    Example:
    >>> negatives = sampled_negatives(np.random.default_rng(0), 10, [2, 3, 9], n=5)
    >>> sorted(negatives.tolist())
    [4, 5, 6, 7, 8]
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"`rng` must be a np.random.Generator. Received: {type(rng).__name__}.")
    num_items, n = _positive_int(num_items, "num_items"), _positive_int(n, "n")
    if not 0 <= reserved < num_items:
        raise ValueError(f"`reserved` must lie in [0, num_items). Received: reserved={reserved}.")
    seen = np.fromiter(interacted, dtype=np.int64)
    if ((seen < 0) | (seen >= num_items)).any():
        raise ValueError(f"`interacted` must hold ids in [0, {num_items}). Received: {seen}.")
    allowed = np.ones(num_items, dtype=bool)
    allowed[:reserved] = False
    allowed[seen] = False
    candidates = np.flatnonzero(allowed)
    if candidates.size == 0:
        raise ValueError("The user interacted with every item; no negative can be drawn.")
    return rng.choice(candidates, size=n, replace=candidates.size < n)


def sampled_rank(target_score, negative_scores):
    """0-based rank of a target among sampled negatives: the number of strictly greater scores.

    Takes a scalar and `[n]` negatives (returns an int), or `[batch]` and `[batch, n]`.

    >>> sampled_rank(0.5, [0.9, 0.5, 0.1])
    1
    >>> sampled_rank([0.5, 0.95], [[0.9, 0.5, 0.1], [0.9, 0.5, 0.1]]).tolist()
    [1, 0]
    """
    target = np.asarray(target_score, dtype=np.float64)
    negatives = np.asarray(negative_scores, dtype=np.float64)
    if target.ndim > 1 or negatives.ndim != target.ndim + 1 or negatives.shape[:-1] != target.shape:
        raise ValueError(
            "Expected a scalar `target_score` and [n] `negative_scores`, or [batch] and [batch, n]. "
            f"Received: {target.shape} and {negatives.shape}."
        )
    rank = (negatives > target[..., None]).sum(axis=-1)
    return int(rank) if target.ndim == 0 else rank


def _class_pair(labels, predictions):
    arrays = []
    for name, values in (("labels", labels), ("predictions", predictions)):
        a = _vector(values, name, dtype=None)
        if a.dtype.kind == "f" and (a == np.round(a)).all():
            a = a.astype(np.int64)
        if a.dtype.kind not in "iub" or (a < 0).any():
            raise ValueError(f"`{name}` must hold non-negative integer class ids.")
        arrays.append(a.astype(np.int64))
    _same_length(*arrays, "labels", "predictions")
    return arrays


def accuracy(labels, predictions):
    """Fraction of predictions equal to the labels.

    >>> accuracy([0, 1, 2, 2], [0, 2, 2, 2])
    0.75
    """
    y, p = _class_pair(labels, predictions)
    return float(np.mean(y == p))


def confusion_matrix(labels, predictions, num_classes):
    """Counts `[num_classes, num_classes]`: row = true class, column = predicted class.

    >>> confusion_matrix([0, 1, 1], [0, 0, 1], 2).tolist()
    [[1, 0], [1, 1]]
    """
    y, p = _class_pair(labels, predictions)
    num_classes = _positive_int(num_classes, "num_classes")
    if (largest := max(y.max(), p.max())) >= num_classes:
        raise ValueError(f"Class ids must be < num_classes={num_classes}. Received: {largest}.")
    counts = np.bincount(y * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def precision_recall_per_class(labels, predictions, num_classes=None):
    """Precision, recall, F1 and support of each class (0 where a ratio is 0/0).

    Args:
        labels: array-like of int class ids, shape `[n]`.
        predictions: array-like of int class ids, shape `[n]`.
        num_classes: optional int. When given, reports every class in `range(num_classes)`;
            otherwise the classes present in `labels` or `predictions`, as scikit-learn does.

    Returns:
        dict `{class_id: {"precision": float, "recall": float, "f1": float, "support": int}}`.

    Example:
    >>> precision_recall_per_class([0, 1, 1], [0, 0, 1])[0]
    {'precision': 0.5, 'recall': 1.0, 'f1': 0.6666666666666666, 'support': 1}
    """
    y, p = _class_pair(labels, predictions)
    if num_classes is None:
        classes = np.union1d(y, p)
        num_classes = int(classes.max()) + 1
    else:
        classes = np.arange(_positive_int(num_classes, "num_classes"))
    matrix = confusion_matrix(y, p, num_classes)
    tp, predicted, support = np.diag(matrix), matrix.sum(axis=0), matrix.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 -> nan -> 0, as scikit-learn
        table = np.stack([tp / predicted, tp / support, 2 * tp / (predicted + support)], axis=1)
    table = np.nan_to_num(table).tolist()
    return {
        int(c): {
            **dict(zip(("precision", "recall", "f1"), table[c], strict=True)),
            "support": int(support[c]),
        }
        for c in classes
    }


def macro_f1(labels, predictions, num_classes=None):
    """Unweighted mean of per-class F1 (classes chosen as in `precision_recall_per_class`).

    >>> round(macro_f1([0, 1, 1, 2], [0, 1, 2, 2]), 4)
    0.7778
    """
    per_class = precision_recall_per_class(labels, predictions, num_classes)
    return float(np.mean([stats["f1"] for stats in per_class.values()]))


def f1_for_class(labels, predictions, cls):
    """F1 of one class, e.g. the minority class of P3 (0 when it is neither true nor predicted).

    >>> f1_for_class([0, 1, 1, 1], [0, 0, 1, 1], cls=0)
    0.6666666666666666
    """
    y, p = _class_pair(labels, predictions)
    denominator = np.sum(y == cls) + np.sum(p == cls)
    return float(2 * np.sum((y == cls) & (p == cls)) / denominator) if denominator else 0.0


def binary_report(labels, probabilities, user_ids=None):
    """The P1 figures of predicted probabilities: ROC-AUC, PR-AUC, log loss, ECE (10 bins).

    Args:
        labels: array-like of 0/1, shape `[n]`.
        probabilities: array-like of float in [0, 1], shape `[n]`.
        user_ids: optional array-like, shape `[n]`. Adds `"per_user_auc"` and
            `"per_user_auc_users"` (the number of users with both classes).

    Returns:
        dict with `"roc_auc"`, `"pr_auc"`, `"log_loss"`, `"ece"`, `"positives"`, `"pairs"`.

    Example:
    >>> report = binary_report([0, 1, 1, 0], [0.2, 0.7, 0.6, 0.4], user_ids=[1, 1, 2, 2])
    >>> report["roc_auc"], report["per_user_auc"], report["positives"], report["pairs"]
    (1.0, 1.0, 2, 4)
    """
    y, p = _binary_pair(labels, probabilities, "probabilities")
    report = {"roc_auc": roc_auc(y, p)}
    if user_ids is not None:
        report["per_user_auc"], report["per_user_auc_users"] = per_user_auc(user_ids, y, p)
    return {
        **report,
        "pr_auc": pr_auc(y, p),
        "log_loss": log_loss(y, p),
        "ece": expected_calibration_error(y, p),
        "positives": int(y.sum()),
        "pairs": len(y),
    }
