import numpy as np
import pytest
import tensorflow as tf

from recsys.config import ConfigError, ModelConfig
from recsys.tasks import char_neighbours as cn
from recsys.tasks import ngram_linear as nl

TRAIN = [
    "Bosch KGN39VL35G fridge freezer",
    "Bosch KGN36VL31G 60/40 fridge freezer",
    "Samsung RB29FSRNDSA fridge",
    "Miele G7100SC dishwasher",
    "Miele G5210SC dishwasher",
    'Sony Bravia KD55XF9005 55" TV',
]
CLASSES = [0, 0, 1, 2, 2, 3]


def test_similarities_are_scikit_learns_char_wb_tfidf_cosines():
    from sklearn.feature_extraction.text import TfidfVectorizer

    queries = ["bosch kgn39vl31g", "MIELE G7310SC", "Sony KD65XF9005 television", "", "zzz"]
    reference = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True)
    reference.fit(TRAIN)
    expected = (reference.transform(queries) @ reference.transform(TRAIN).T).toarray()
    memory = cn.CharNeighbours.fit(TRAIN, CLASSES, num_classes=4)
    np.testing.assert_allclose(memory.similarities(queries).numpy(), expected, atol=1e-5)


def test_votes_come_from_the_nearest_training_texts():
    memory = cn.CharNeighbours.fit(TRAIN, CLASSES, num_classes=4, k=1, weight=3.0)
    out = memory(["Bosch KGN39VL31G", "Miele G7310SC", ""]).numpy()
    assert out.shape == (3, 4) and out.dtype == np.float32
    assert out[:2].argmax(axis=1).tolist() == [0, 2]
    top = memory.similarities(["Bosch KGN39VL31G"]).numpy().max()
    assert out[0, 0] == pytest.approx(3.0 * top, rel=1e-5)  # weight x the nearest similarity
    assert not out[2].any()  # a text without characters has no neighbours' votes
    sims, classes = memory.neighbours(["Miele G7310SC"], k=2)
    assert classes.numpy().tolist() == [[2, 2]]
    widest = cn.candidate_votes(memory, ["Miele G7310SC"], k_grid=(1, 2, 10))
    assert cn.candidate_votes(memory, [], k_grid=(1, 2))[2].shape == (0, 4)
    np.testing.assert_allclose(widest[2][0, 2], sims.numpy().sum() / 2, rtol=1e-5)
    assert widest[10].sum() == pytest.approx(
        sum(memory.similarities(["Miele G7310SC"]).numpy()[0]) / 10, rel=1e-5
    )


def test_memory_survives_a_saved_model_round_trip(tmp_path):
    memory = cn.CharNeighbours.fit(TRAIN, CLASSES, num_classes=4, k=3, weight=2.0)
    module = tf.Module()
    module.memory = memory
    module.votes = tf.function(memory.__call__, input_signature=[tf.TensorSpec([None], tf.string)])
    tf.saved_model.save(module, str(tmp_path / "m"))
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    texts = ["bosch fridge freezer KGN", "Miele dishwasher", ""]
    np.testing.assert_allclose(
        loaded.votes(tf.constant(texts)).numpy(), memory(texts).numpy(), atol=1e-6
    )


def test_an_empty_memory_is_refused():
    with pytest.raises(ValueError, match="at least one training text"):
        cn.CharNeighbours.fit([], [], num_classes=2)


def test_blend_weighs_informative_neighbours_and_ignores_them_for_a_perfect_model():
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 3, size=150)
    features = nl.ngram_features(np.full((150, 2), 5), np.ones((150, 2)), 10, 64)  # uninformative
    train = (features, classes)
    informative = {1: 0.9 * np.eye(3)[classes], 3: 0.3 * np.eye(3)[classes]}
    _, _, chosen = nl.fit_blend(
        train, (features, classes, np.zeros((150, 3))), 3, neighbours=informative
    )
    assert chosen["neighbour_weight"] > 0 and chosen["neighbour_k"] in (1, 3)
    assert chosen["validation_log_loss_blend"] < chosen["validation_log_loss_model"] - 0.5
    noise = {1: rng.random((150, 3))}
    _, _, alone = nl.fit_blend(
        train, (features, classes, 20.0 * np.eye(3)[classes]), 3, neighbours=noise
    )
    assert alone["neighbour_weight"] == 0.0
    _, _, without = nl.fit_blend(train, (features, classes, np.zeros((150, 3))), 3)
    assert "neighbour_k" not in without


def test_config_needs_the_ngram_blend_for_neighbours():
    assert ModelConfig(ngram_blend=True, neighbour_blend=True).neighbour_blend
    with pytest.raises(ConfigError, match="neighbour_blend"):
        ModelConfig(neighbour_blend=True)
