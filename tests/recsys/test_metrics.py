import subprocess
import sys

import numpy as np
import pytest

from recsys import metrics


@pytest.fixture
def sk():
    return pytest.importorskip("sklearn.metrics")


def random_binary(seed, n=400, tied=True):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    # Coarse scores create many ties, which is where rank-based AUC and AP differ most.
    scores = rng.integers(0, 20, n) / 20 if tied else rng.uniform(0.01, 0.99, n)
    return labels, scores


def test_import_needs_neither_tensorflow_nor_sklearn():
    code = (
        "import sys, recsys.metrics; "
        "assert not {'tensorflow', 'sklearn', 'keras'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- Binary scores against scikit-learn --------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("tied", [True, False])
def test_roc_auc_matches_sklearn(sk, seed, tied):
    labels, scores = random_binary(seed, tied=tied)
    assert metrics.roc_auc(labels, scores) == pytest.approx(sk.roc_auc_score(labels, scores))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pr_auc_matches_sklearn(sk, seed):
    labels, scores = random_binary(seed)
    expected = sk.average_precision_score(labels, scores)
    assert metrics.pr_auc(labels.tolist(), scores.tolist()) == pytest.approx(expected)


def test_roc_curve_matches_sklearn(sk):
    labels, scores = random_binary(3)
    fpr, tpr, thresholds = metrics.roc_curve(labels, scores)
    expected = sk.roc_curve(labels, scores, drop_intermediate=False)
    for got, want in zip((fpr, tpr, thresholds), expected, strict=True):
        np.testing.assert_allclose(got, want)


@pytest.mark.parametrize("seed", [0, 1])
def test_log_loss_matches_sklearn(sk, seed):
    labels, probabilities = random_binary(seed, tied=False)
    expected = sk.log_loss(labels, probabilities)
    assert metrics.log_loss(labels, probabilities) == pytest.approx(expected)


def test_log_loss_clips_certain_mistakes():
    assert metrics.log_loss([1, 0], [0.0, 1.0], eps=1e-7) == pytest.approx(-np.log(1e-7))


def test_per_user_auc_matches_a_loop_of_sklearn(sk):
    users = np.random.default_rng(40).integers(0, 30, 600)
    labels, scores = random_binary(4, n=600)
    expected = [
        sk.roc_auc_score(labels[users == u], scores[users == u])
        for u in np.unique(users)
        if 0 < labels[users == u].sum() < (users == u).sum()
    ]
    mean_auc, counted = metrics.per_user_auc(users, labels, scores)
    assert mean_auc == pytest.approx(np.mean(expected))
    assert counted == len(expected)


def test_per_user_auc_skips_single_class_users_and_takes_string_ids():
    users = ["u1", "u1", "u1", "u2", "u2", "u3"]
    labels = [1, 0, 0, 1, 1, 0]
    scores = [0.9, 0.5, 0.95, 0.1, 0.2, 0.3]
    assert metrics.per_user_auc(users, labels, scores) == (0.5, 1)


def test_roc_auc_edge_values():
    assert metrics.roc_auc([0, 0, 1, 1], [1, 2, 3, 4]) == 1.0
    assert metrics.roc_auc([1, 1, 0, 0], [1, 2, 3, 4]) == 0.0
    assert metrics.roc_auc([0, 1, 0, 1], [7, 7, 7, 7]) == 0.5
    assert metrics.roc_auc(np.array([False, True]), np.array([0.2, 0.1], np.float32)) == 0.0


# --- Calibration -------------------------------------------------------------------------------


def test_calibration_curve_matches_sklearn():
    calibration = pytest.importorskip("sklearn.calibration")
    labels, probabilities = random_binary(5, n=1000, tied=False)
    mean_p, observed, counts = metrics.calibration_curve(labels, probabilities, bins=10)
    prob_true, prob_pred = calibration.calibration_curve(labels, probabilities, n_bins=10)
    np.testing.assert_allclose(mean_p, prob_pred)
    np.testing.assert_allclose(observed, prob_true)
    assert counts.sum() == 1000 and (counts > 0).all()


def test_calibration_curve_leaves_out_empty_bins():
    mean_p, observed, counts = metrics.calibration_curve([0, 1, 1], [0.05, 0.95, 1.0], bins=10)
    assert mean_p.tolist() == pytest.approx([0.05, 0.975])
    assert observed.tolist() == [0.0, 1.0] and counts.tolist() == [1, 2]


def test_ece_is_small_when_calibrated_and_large_when_not():
    rng = np.random.default_rng(6)
    truth = rng.uniform(0, 1, 20_000)
    labels = rng.uniform(0, 1, truth.size) < truth
    assert metrics.expected_calibration_error(labels, truth) < 0.02
    overconfident = np.where(truth > 0.5, 1.0, 0.0) * 0.98 + 0.01
    assert metrics.expected_calibration_error(labels, overconfident) > 0.2
    assert metrics.expected_calibration_error(labels, truth**4) > 0.2


def test_ece_by_hand():
    # Bin (0.0, 0.1]: p=0.1, y=0 -> gap 0.1; bin (0.7, 0.8]: p=0.8, 0.8, y=1, 0 -> gap 0.3.
    ece = metrics.expected_calibration_error([0, 1, 0], [0.1, 0.8, 0.8], bins=10)
    assert ece == pytest.approx((1 * 0.1 + 2 * 0.3) / 3)


def test_binary_report_keys_and_values():
    labels, probabilities = random_binary(7, tied=False)
    report = metrics.binary_report(labels, probabilities)
    assert set(report) == {"roc_auc", "pr_auc", "log_loss", "ece", "positives", "pairs"}
    assert report["roc_auc"] == metrics.roc_auc(labels, probabilities)
    assert report["pairs"] == 400 and report["positives"] == int(labels.sum())
    users = np.arange(400) % 7
    with_users = metrics.binary_report(labels, probabilities, user_ids=users)
    assert with_users["per_user_auc_users"] == 7
    assert with_users["per_user_auc"] == metrics.per_user_auc(users, labels, probabilities)[0]


# --- Ranking -----------------------------------------------------------------------------------


def test_rank_of_target_counts_strictly_greater_non_excluded_scores():
    scores = np.array(
        [
            [0.0, 0.9, 0.5, 0.5, 0.7],  # target 2: 0.9 and 0.7 above, the tie at 3 is not
            [5.0, 4.0, 3.0, 2.0, 1.0],  # target 4: everything is above
            [5.0, 4.0, 3.0, 2.0, 1.0],  # target 4 again, with items 0..2 excluded
        ]
    )
    exclude = np.zeros_like(scores, dtype=bool)
    exclude[2, :3] = True
    assert metrics.rank_of_target(scores, [2, 4, 4]).tolist() == [2, 4, 4]
    assert metrics.rank_of_target(scores, [2, 4, 4], exclude).tolist() == [2, 4, 1]


def test_rank_of_target_ranks_an_excluded_target_and_ignores_masked_items():
    scores = [[0.2, 0.8, 0.6, 0.4]]
    assert metrics.rank_of_target(scores, [2], [[True, True, True, False]]).tolist() == [0]


def test_rank_of_target_matches_brute_force():
    rng = np.random.default_rng(8)
    scores = rng.normal(size=(50, 30)).astype(np.float32)
    target = rng.integers(0, 30, 50)
    exclude = rng.uniform(size=(50, 30)) < 0.3
    expected = [
        sum(scores[i, j] > scores[i, target[i]] for j in range(30) if not exclude[i, j])
        for i in range(50)
    ]
    assert metrics.rank_of_target(scores, target, exclude).tolist() == expected


def test_hit_rate_ndcg_mrr_by_hand():
    ranks = [0, 1, 4, 9, 10]
    assert metrics.hit_rate_at_k(ranks, 1) == pytest.approx(1 / 5)
    assert metrics.hit_rate_at_k(ranks, 5) == pytest.approx(3 / 5)
    assert metrics.hit_rate_at_k(ranks, 10) == pytest.approx(4 / 5)
    ndcg_at_5 = (1 + 1 / np.log2(3) + 1 / np.log2(6)) / 5
    assert metrics.ndcg_at_k(ranks, 5) == pytest.approx(ndcg_at_5)
    assert metrics.ndcg_at_k(ranks, 10) == pytest.approx(ndcg_at_5 + 1 / np.log2(11) / 5)
    assert metrics.mrr(ranks) == pytest.approx((1 + 1 / 2 + 1 / 5 + 1 / 10 + 1 / 11) / 5)


def test_ranking_report():
    report = metrics.ranking_report(np.array([0, 1, 4, 9, 10]))
    assert list(report) == [
        "hr_at_1",
        "hr_at_5",
        "hr_at_10",
        "ndcg_at_5",
        "ndcg_at_10",
        "mrr",
        "users",
    ]
    assert report["users"] == 5 and report["hr_at_10"] == pytest.approx(0.8)
    assert report["ndcg_at_10"] == metrics.ndcg_at_k([0, 1, 4, 9, 10], 10)


def test_sampled_negatives_avoid_history_and_reserved_ids():
    rng = np.random.default_rng(0)
    interacted = {2, 5, 7, 50, 99}
    negatives = metrics.sampled_negatives(rng, 100, interacted, n=90)
    assert len(negatives) == 90 and len(set(negatives.tolist())) == 90
    assert not set(negatives.tolist()) & interacted
    assert negatives.min() >= 2 and negatives.max() < 100


def test_sampled_negatives_is_seeded_and_falls_back_to_replacement():
    first = metrics.sampled_negatives(np.random.default_rng(1), 1000, [3, 4], n=100)
    again = metrics.sampled_negatives(np.random.default_rng(1), 1000, [3, 4], n=100)
    assert first.tolist() == again.tolist()
    few = metrics.sampled_negatives(np.random.default_rng(1), 6, np.array([2, 3]), n=10)
    assert len(few) == 10 and set(few.tolist()) == {4, 5}


def test_sampled_negatives_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="every item"):
        metrics.sampled_negatives(rng, 4, [2, 3])
    with pytest.raises(ValueError, match="interacted"):
        metrics.sampled_negatives(rng, 4, [4])
    with pytest.raises(TypeError, match="Generator"):
        metrics.sampled_negatives(0, 10, [2])


def test_sampled_rank_agrees_with_rank_of_target():
    rng = np.random.default_rng(9)
    target, negatives = rng.normal(size=20), rng.normal(size=(20, 100))
    expected = metrics.rank_of_target(np.c_[target, negatives], np.zeros(20, np.int64))
    assert metrics.sampled_rank(target, negatives).tolist() == expected.tolist()
    assert metrics.sampled_rank(0.5, [0.5, 0.6, 0.1]) == 1


# --- Classification against scikit-learn -------------------------------------------------------


def random_classes(seed, n=300, num_classes=5):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    predictions = np.where(rng.uniform(size=n) < 0.6, labels, rng.integers(0, num_classes, n))
    return labels, predictions


@pytest.mark.parametrize("seed", [0, 1])
def test_classification_matches_sklearn(sk, seed):
    labels, predictions = random_classes(seed)
    assert metrics.accuracy(labels, predictions) == sk.accuracy_score(labels, predictions)
    expected_f1 = sk.f1_score(labels, predictions, average="macro")
    assert metrics.macro_f1(labels, predictions) == pytest.approx(expected_f1)
    np.testing.assert_array_equal(
        metrics.confusion_matrix(labels, predictions, 6),
        sk.confusion_matrix(labels, predictions, labels=range(6)),
    )
    precision, recall, f1, support = sk.precision_recall_fscore_support(labels, predictions)
    per_class = metrics.precision_recall_per_class(labels, predictions)
    assert list(per_class) == [0, 1, 2, 3, 4]
    for c, stats in per_class.items():
        assert stats["precision"] == pytest.approx(precision[c])
        assert stats["recall"] == pytest.approx(recall[c])
        assert stats["f1"] == pytest.approx(f1[c])
        assert stats["support"] == support[c]
        assert metrics.f1_for_class(labels, predictions, c) == pytest.approx(f1[c])


def test_macro_f1_class_sets(sk):
    labels, predictions = [0, 0, 2, 2], [0, 2, 2, 2]  # class 1 is absent from both
    present = sk.f1_score(labels, predictions, average="macro")
    assert metrics.macro_f1(labels, predictions) == pytest.approx(present)
    everything = sk.f1_score(
        labels, predictions, labels=[0, 1, 2, 3], average="macro", zero_division=0
    )
    assert metrics.macro_f1(labels, predictions, num_classes=4) == pytest.approx(everything)
    assert metrics.f1_for_class(labels, predictions, 1) == 0.0


# --- Errors ------------------------------------------------------------------------------------


def test_length_mismatch_message():
    with pytest.raises(
        ValueError,
        match=r"`labels` and `scores` must have the same length. Received: 3 and 4.",
    ):
        metrics.roc_auc([0, 1, 1], [0.1, 0.2, 0.3, 0.4])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: metrics.roc_auc([1, 1, 1], [0.1, 0.2, 0.3]), "both classes"),
        (lambda: metrics.roc_auc([0, 2], [0.1, 0.2]), "only 0 and 1"),
        (lambda: metrics.roc_auc([], []), "must not be empty"),
        (lambda: metrics.roc_auc([0, 1], [0.1, np.nan]), "NaN"),
        (lambda: metrics.roc_auc([[0, 1]], [[0.1, 0.2]]), "1-D"),
        (lambda: metrics.roc_curve([0, 0], [0.1, 0.2]), "both classes"),
        (lambda: metrics.pr_auc([0, 0], [0.1, 0.2]), "at least one positive"),
        (lambda: metrics.per_user_auc([1, 2], [0, 1], [0.1, 0.2]), "No user"),
        (lambda: metrics.per_user_auc([1, 2, 3], [0, 1], [0.1, 0.2]), "`user_ids` and"),
        (lambda: metrics.log_loss([0, 1], [0.1, 1.2]), r"\[0, 1\]"),
        (lambda: metrics.expected_calibration_error([0, 1], [0.1, 0.2], bins=0), "bins"),
        (lambda: metrics.rank_of_target([0.1, 0.2], [0]), "batch, num_items"),
        (lambda: metrics.rank_of_target([[0.1, 0.2]], [2]), "target_index"),
        (lambda: metrics.rank_of_target([[0.1, 0.2]], [0.0]), "target_index"),
        (lambda: metrics.rank_of_target([[0.1, 0.2]], [0], [[True]]), "exclude_mask"),
        (lambda: metrics.rank_of_target([[np.nan, 0.2]], [0]), "NaN"),
        (lambda: metrics.hit_rate_at_k([0, 1], 0), "`k`"),
        (lambda: metrics.ndcg_at_k([0, -1], 5), "non-negative"),
        (lambda: metrics.mrr([0.5]), "integers"),
        (lambda: metrics.sampled_rank([0.1, 0.2], [0.3, 0.4]), "negative_scores"),
        (lambda: metrics.confusion_matrix([0, 3], [0, 1], 3), "num_classes=3"),
        (lambda: metrics.accuracy([0, 1], [0]), "`labels` and `predictions`"),
        (lambda: metrics.macro_f1(["a", "b"], ["a", "b"]), "class ids"),
    ],
)
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
