import numpy as np
import pytest
import scipy.sparse

from recsys.config import ConfigError, ModelConfig
from recsys.tasks import ngram_linear as nl

VOCABULARY = 50
BUCKETS = 512


def _inputs(rows, length=None):
    """Token ids and padding masks of id lists, right-padded with 0 to `length`."""
    length = length or max(len(r) for r in rows)
    ids = np.zeros((len(rows), length), dtype=np.int32)
    mask = np.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = row, 1
    return ids, mask


def test_features_are_binary_l2_normalised_and_ignore_padding():
    ids, mask = _inputs([[2, 7, 7, 3], [2, 5, 3], []])
    features = nl.ngram_features(ids, mask, VOCABULARY, BUCKETS).toarray()
    # Row 0: unigrams {2, 7, 3} and bigrams {2-7, 7-7, 7-3}: six distinct features.
    assert np.count_nonzero(features[0]) == 6
    np.testing.assert_allclose(features[0][features[0] > 0], 1 / np.sqrt(6), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(features[:2], axis=1), 1.0, rtol=1e-6)
    assert np.nonzero(features[0][:VOCABULARY])[0].tolist() == [2, 3, 7]  # unigrams keep ids
    assert not features[2].any()  # a text without tokens has no features
    longer = nl.ngram_features(
        *_inputs([[2, 7, 7, 3], [2, 5, 3], []], length=9), VOCABULARY, BUCKETS
    )
    np.testing.assert_allclose(longer.toarray(), features)


def test_bigram_order_matters_and_buckets_must_exceed_the_vocabulary():
    forward = nl.ngram_features(*_inputs([[4, 9]]), VOCABULARY, BUCKETS).toarray()
    backward = nl.ngram_features(*_inputs([[9, 4]]), VOCABULARY, BUCKETS).toarray()
    assert (forward[0, VOCABULARY:] > 0).sum() == 1 and (backward[0, VOCABULARY:] > 0).sum() == 1
    assert not np.array_equal(forward[0, VOCABULARY:], backward[0, VOCABULARY:])
    with pytest.raises(ValueError, match="must exceed the vocabulary size"):
        nl.ngram_features(*_inputs([[1]]), VOCABULARY, VOCABULARY)


def test_layer_computes_features_times_kernel_plus_bias():
    rng = np.random.default_rng(0)
    layer = nl.NgramLinear(VOCABULARY, 3, buckets=BUCKETS)
    kernel, bias = rng.normal(size=(BUCKETS, 3)), rng.normal(size=3)
    layer.set_linear_model(kernel, bias)
    ids, mask = _inputs([[2, 11, 12, 3], [2, 40, 3]])
    out = layer({"token_ids": ids, "padding_mask": mask}).numpy()
    expected = nl.ngram_features(ids, mask, VOCABULARY, BUCKETS) @ kernel + bias
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert out.dtype == np.float32
    again = nl.NgramLinear.from_config(layer.get_config())
    assert again.get_config() == layer.get_config()


def _separable(n, seed):
    """Texts whose token 10 + class marks the class (3 classes), plus noise tokens."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 3, size=n)
    rows = [[2, 10 + c, *rng.integers(20, 50, size=4).tolist(), 3] for c in classes]
    return nl.ngram_features(*_inputs(rows), VOCABULARY, BUCKETS), classes


def test_blend_adds_informative_ngrams_to_an_uninformed_model():
    train, validation = _separable(300, 0), _separable(200, 1)
    uninformed = np.zeros((200, 3))
    kernel, bias, summary = nl.fit_blend(train, (*validation, uninformed), 3)
    assert summary["ngram_weight"] > 0
    assert summary["validation_log_loss_blend"] < summary["validation_log_loss_model"] - 0.5
    logits = validation[0] @ kernel + bias
    assert (logits.argmax(axis=1) == validation[1]).mean() > 0.95


def test_blend_leaves_a_confident_correct_model_alone():
    train = (
        scipy.sparse.csr_matrix(np.random.default_rng(0).random((60, BUCKETS))),
        np.arange(60) % 3,
    )
    features, classes = _separable(90, 1)
    perfect = 20.0 * np.eye(3)[classes]  # already right; noise features can only hurt
    kernel, bias, summary = nl.fit_blend(train, (features, classes, perfect), 3)
    assert summary["ngram_weight"] == 0.0
    assert not kernel.any() and not bias.any()


def test_binary_blend_logits_match_the_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    features, classes = _separable(200, 2)
    binary = (classes == 0).astype(int)
    kernel, bias, summary = nl.fit_blend(
        (features, binary), (features, binary, np.zeros((200, 2))), 2, weight_grid=(1.0,)
    )
    reference = LogisticRegression(C=summary["ngram_c"], max_iter=3000).fit(features, binary)
    logits = features @ kernel + bias
    np.testing.assert_allclose(
        logits[:, 1] - logits[:, 0], reference.decision_function(features), rtol=1e-4, atol=1e-4
    )


def test_config_refuses_the_blend_for_multi_label():
    assert ModelConfig(ngram_blend=True).ngram_blend
    with pytest.raises(ConfigError, match="ngram_blend"):
        ModelConfig(ngram_blend=True, multi_label=True)
