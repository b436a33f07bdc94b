"""The next-item model: head, causal masking, the fast last-position pass and the losses."""

import numpy as np
import pytest
import tensorflow as tf

from recsys.heads import RankingHead
from recsys.tasks import ranking


@pytest.fixture(scope="module")
def tiny_model():
    import keras

    keras.utils.set_random_seed(1)
    return ranking.build_model(
        num_items=14, sequence_length=8, num_layers=2, num_heads=1, hidden_dim=4, dropout=0.0
    )


def test_head_config_round_trip():
    head = RankingHead(hidden_dim=4, text_fusion=True, name="ranking_head")
    assert RankingHead.from_config(head.get_config()).get_config() == head.get_config()


def test_model_config_round_trip(tiny_model):
    config = tiny_model.get_config()
    rebuilt = ranking.NextItemModel.from_config(config)
    assert rebuilt.vocabulary_size == 14 and rebuilt.hidden_dim == 4
    assert rebuilt.get_config()["num_negatives"] is None


def test_prediction_at_t_ignores_later_items(tiny_model):
    ids = np.array([[2, 3, 4, 5, 6, 7, 0, 0]], "int32")
    changed = ids.copy()
    changed[0, 3:6] = [11, 12, 13]
    before = tiny_model({"item_ids": ids})[ranking.OUTPUT].numpy()
    after = tiny_model({"item_ids": changed})[ranking.OUTPUT].numpy()
    np.testing.assert_allclose(before[0, :3], after[0, :3], atol=1e-6)
    assert not np.allclose(before[0, 3], after[0, 3])


def test_last_hidden_equals_the_full_pass_at_each_rows_last_item(tiny_model):
    ids = ranking.pad_right([[2, 3, 4, 5, 6], [7], [8, 9, 10, 11, 12, 13, 2, 3]], 8)
    full = tiny_model({"item_ids": ids})[ranking.OUTPUT].numpy()
    expected = full[np.arange(3), [4, 0, 7]]
    np.testing.assert_allclose(tiny_model.last_hidden(ids).numpy(), expected, atol=1e-5)


def test_scores_never_favour_reserved_ids(tiny_model):
    scores = tiny_model.scores(tiny_model.last_hidden(np.array([[2, 3]], "int32"))).numpy()
    assert scores.shape == (1, 14) and np.all(scores[:, :2] < -1e8)


def test_full_softmax_loss_matches_a_manual_softmax(tiny_model):
    hidden = tf.random.normal([2, 3, 4], seed=0)
    targets = tf.constant([[3, 4, 0], [5, 0, 0]])
    losses = ranking.next_item_loss(tiny_model, targets, hidden).numpy()
    logits = tiny_model.scores(tf.reshape(hidden, [-1, 4])).numpy()
    logits = logits[[0, 1, 3]].astype(np.float64)  # the positions with a target
    shifted = logits - logits.max(1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    np.testing.assert_allclose(losses, -logp[np.arange(3), [3, 4, 5]], rtol=1e-5)


def _fit(model, batches, steps, learning_rate=1e-2):
    import keras

    model.compile(optimizer=keras.optimizers.Adam(learning_rate))
    inputs = np.concatenate([b[:, :-1] for b in batches])
    targets = np.concatenate([b[:, 1:] for b in batches])
    ds = tf.data.Dataset.from_tensor_slices(
        ({ranking.INPUT: inputs}, {ranking.OUTPUT: targets})
    ).batch(4)
    return model.fit(ds.repeat(), epochs=steps, steps_per_epoch=1, verbose=0).history["loss"]


def test_loss_goes_down_in_a_few_steps():
    import keras

    keras.utils.set_random_seed(2)
    model = ranking.build_model(12, 6, num_layers=1, num_heads=1, hidden_dim=8, dropout=0.0)
    sequences = np.array([[2, 3, 4, 5, 6, 7, 8], [9, 10, 11, 2, 3, 4, 5]] * 2, "int32")
    losses = _fit(model, [sequences], steps=25)
    assert losses[-1] < 0.7 * losses[0]


def test_text_fusion_places_cold_items_by_their_text_alone():
    import keras

    keras.utils.set_random_seed(3)
    model = ranking.build_model(6, 4, num_layers=1, num_heads=1, hidden_dim=4, text_dim=3)
    text = np.random.default_rng(0).normal(size=(6, 3)).astype("float32")
    warm = np.array([1, 1, 1, 1, 0, 1], "float32")
    model.set_item_text(text, warm)
    vectors = model.item_vectors().numpy()
    projection = model.head.item_vectors(np.zeros((6, 4), "float32"), text).numpy()
    np.testing.assert_allclose(vectors[4], projection[4], atol=1e-6)
    ids = model.backbone.token_embedding.embeddings.numpy()
    np.testing.assert_allclose(vectors[5], ids[5] + projection[5], atol=1e-6)
    np.testing.assert_allclose(model.item_vectors(np.array([4, 5])).numpy(), vectors[4:], atol=1e-6)


def test_sampled_softmax_trains_on_a_200k_catalog_without_scoring_every_item(monkeypatch):
    import resource

    import keras

    keras.utils.set_random_seed(4)
    num_items = 200_002
    model = ranking.build_model(
        num_items, 8, num_layers=1, num_heads=1, hidden_dim=4, num_negatives=256
    )

    def no_full_scoring(hidden):
        raise AssertionError("sampled softmax must not score the whole catalog")

    monkeypatch.setattr(model, "scores", no_full_scoring)
    rng = np.random.default_rng(0)
    sequences = rng.integers(2, num_items, size=(8, 9)).astype("int32")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    losses = _fit(model, [sequences], steps=2, learning_rate=1e-3)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert np.isfinite(losses).all()
    # The embedding table and its optimizer slots are ~10 MB; a full softmax's logits and
    # gradients over 64 positions would be hundreds of MB more.
    assert grown_mb < 300, f"resident memory grew by {grown_mb:.0f} MB"


def test_sampled_loss_masks_a_negative_equal_to_the_target(tiny_model, monkeypatch):
    monkeypatch.setattr(
        tf.random, "uniform", lambda shape, *a, **k: tf.constant([3, 3, 4], tf.int32)
    )
    hidden = tf.random.normal([1, 1, 4], seed=1)
    loss = ranking.next_item_loss(tiny_model, tf.constant([[3]]), hidden, num_negatives=3)
    h = hidden.numpy().reshape(-1)
    vectors = tiny_model.item_vectors().numpy()
    logits = np.array([h @ vectors[3], h @ vectors[4]])
    expected = -(logits[0] - np.log(np.exp(logits).sum()))
    np.testing.assert_allclose(loss.numpy(), [expected], rtol=1e-5)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="num_items"):
        ranking.build_model(2, 8)
    with pytest.raises(ValueError, match="num_negatives"):
        ranking.build_model(10, 8, num_layers=1, num_heads=1, hidden_dim=4, num_negatives=0)


def test_id_dropout_drops_id_embeddings_in_training_only():
    import keras

    keras.utils.set_random_seed(6)
    model = ranking.build_model(
        400, 4, num_layers=1, num_heads=1, hidden_dim=4, text_dim=3, id_dropout=0.5
    )
    model.set_item_text(np.ones((400, 3), "float32"), np.ones(400, "float32"))
    assert np.array_equal(model.id_mask(training=False).numpy(), np.ones(400))
    kept = model.id_mask(training=True).numpy()
    assert set(np.unique(kept)) == {0.0, 1.0} and 0.3 < kept.mean() < 0.7
    assert ranking.build_model(10, 4, num_layers=1, num_heads=1, hidden_dim=4).id_mask() is None


def test_seen_items_cover_each_prefix_and_never_reserved_ids():
    seen = ranking.seen_items(tf.constant([[2, 5, 2, 0], [1, 3, 0, 0]]), 6).numpy()
    assert seen[0, 0].tolist() == [False, False, True, False, False, False]
    assert seen[0, 1].tolist() == seen[0, 3].tolist() == [False, False, True, False, False, True]
    assert not seen[1, 0].any() and seen[1, 1].tolist() == [False] * 3 + [True] + [False] * 2


def test_exclude_seen_leaves_earlier_items_out_of_the_softmax(tiny_model):
    hidden = tf.random.normal([1, 3, 4], seed=2)
    inputs = tf.constant([[2, 3, 4]])
    targets = tf.constant([[3, 4, 3]])  # the last target repeats an earlier item
    plain = ranking.next_item_loss(tiny_model, targets, hidden).numpy()
    masked = ranking.next_item_loss(tiny_model, targets, hidden, seen=inputs).numpy()
    logits = tiny_model.scores(tf.reshape(hidden, [3, 4])).numpy()
    for t, seen_before in enumerate([{2}, {2, 3}, {2, 3, 4}]):
        target = int(targets[0, t])
        keep = [v for v in range(2, 14) if v not in seen_before or v == target]
        expected = np.log(np.exp(logits[t, keep]).sum()) - logits[t, target]
        np.testing.assert_allclose(masked[t], expected, rtol=1e-5)
    assert (masked <= plain + 1e-6).all() and (masked < plain).any()


def test_exclude_seen_trains_and_refuses_sampled_softmax():
    import keras

    keras.utils.set_random_seed(5)
    model = ranking.build_model(
        30, 8, num_layers=1, num_heads=1, hidden_dim=8, dropout=0.0, exclude_seen=True
    )
    sequences = np.tile(np.arange(2, 11, dtype="int32"), (16, 1))
    losses = _fit(model, [sequences], steps=12, learning_rate=1e-2)
    assert losses[-1] < losses[0]
    assert ranking.NextItemModel.from_config(model.get_config()).exclude_seen
    with pytest.raises(ValueError, match="exclude_seen"):
        ranking.build_model(
            30, 8, num_layers=1, num_heads=1, hidden_dim=8, num_negatives=4, exclude_seen=True
        )
