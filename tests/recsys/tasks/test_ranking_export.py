"""The ranking SavedModel: `recommend` against the Keras model, exclusions, unknown ids, k."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from recsys.tasks import ranking, ranking_export

ITEMS = [f"P{i:02d}" for i in range(12)]
SEQUENCE_LENGTH = 6


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(5)
    model = ranking.build_model(
        len(ITEMS) + 2, SEQUENCE_LENGTH, num_layers=2, num_heads=1, hidden_dim=4, dropout=0.0
    )
    popularity = np.r_[0, 0, np.arange(len(ITEMS))[::-1] + 1]  # P00 the most popular
    catalog = pd.DataFrame(
        {"product_id": ITEMS, "title": [f"item {i}" for i in ITEMS], "category": "toys"}
    )
    path = tmp_path_factory.mktemp("ranker") / "1"
    signatures = ranking_export.export(
        model, ITEMS, popularity, SEQUENCE_LENGTH, path, catalog=catalog
    )
    return model, path, signatures, tf.saved_model.load(str(path))


def _keras_top_k(model, histories, k, exclude=()):
    index = {item: i + 2 for i, item in enumerate(ITEMS)}
    rows = [[index[i] for i in h if i in index] for h in histories]
    scores = model.scores(model.last_hidden(ranking.pad_right(rows, SEQUENCE_LENGTH))).numpy()
    for row, (items, extra) in enumerate(zip(rows, exclude or [[]] * len(rows), strict=True)):
        scores[row, items + [index[i] for i in extra if i in index]] = -np.inf
    scores[:, :2] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[ITEMS[i - 2] for i in row] for row in top], np.take_along_axis(scores, top, 1)


def _pad(histories):
    width = max(len(h) for h in histories)
    return tf.constant([list(h) + [""] * (width - len(h)) for h in histories])


def _recommend(module, histories, k, exclude=None):
    if exclude is None:
        out = module.signatures["recommend_simple"](history=_pad(histories), k=tf.constant(k))
    else:
        out = module.signatures["recommend"](
            history=_pad(histories), k=tf.constant(k), exclude=_pad(exclude)
        )
    ids = [[p.decode() for p in row] for row in out["product_ids"].numpy()]
    return ids, out["scores"].numpy()


def test_signatures_and_catalog(exported):
    _, path, signatures, module = exported
    assert set(signatures) == {"recommend", "recommend_simple"}
    assert {"serving_default", "recommend", "recommend_simple"} <= set(module.signatures)
    catalog = pd.read_parquet(path / "catalog.parquet")
    assert catalog["product_id"].tolist() == ITEMS
    assert catalog["popularity"].tolist()[:2] == [12, 11] and "title" in catalog


def test_top_k_matches_the_keras_model_and_excludes_the_history(exported):
    model, _, _, module = exported
    histories = [["P01", "P02", "P03"], ["P04"], ["P05", "P06", "P07", "P08", "P09"]]
    ids, scores = _recommend(module, histories, 4)
    expected_ids, expected_scores = _keras_top_k(model, histories, 4)
    assert ids == expected_ids
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-4, atol=1e-5)
    for history, row in zip(histories, ids, strict=True):
        assert not set(history) & set(row)


def test_a_large_call_of_mixed_lengths_is_scored_by_length_groups_alike(exported):
    model, _, _, module = exported
    rng = np.random.default_rng(3)
    rows = ranking_export._GROUPED_ROWS + 37  # enough rows for the grouped path
    histories = [
        list(rng.choice(ITEMS, size=rng.integers(1, SEQUENCE_LENGTH + 3), replace=False))
        for _ in range(rows)
    ]
    ids, scores = _recommend(module, histories, 3)
    expected_ids, expected_scores = _keras_top_k(model, histories, 3)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-4, atol=1e-5)
    same = sum(a == b for a, b in zip(ids, expected_ids, strict=True))
    assert same >= rows - 2  # near-ties may swap under float noise


def test_unknown_ids_in_the_history_are_ignored(exported):
    _, _, _, module = exported
    clean = _recommend(module, [["P01", "P02", "P03"]], 5)
    noisy = _recommend(module, [["nope", "P01", "???", "P02", "P03", "gone"]], 5)
    assert clean[0] == noisy[0]
    np.testing.assert_allclose(clean[1], noisy[1], rtol=1e-5)


def test_exclude_is_honoured(exported):
    model, _, _, module = exported
    history = [["P01", "P02"], ["P03"]]
    first, _ = _recommend(module, history, 3)
    exclude = [[first[0][0], "unknown"], [first[1][0], first[1][1]]]
    ids, _ = _recommend(module, history, 3, exclude=exclude)
    assert ids == _keras_top_k(model, history, 3, exclude)[0]
    assert first[0][0] not in ids[0] and not {first[1][0], first[1][1]} & set(ids[1])
    empty = module.signatures["recommend"](
        history=_pad(history), k=tf.constant(3), exclude=tf.zeros([2, 0], tf.string)
    )
    assert [[p.decode() for p in r] for r in empty["product_ids"].numpy()] == first


def test_long_histories_use_the_most_recent_items(exported):
    model, _, _, module = exported
    long = [ITEMS[i % 12] for i in range(3, 3 + 9)]  # 9 items > SEQUENCE_LENGTH
    ids, scores = _recommend(module, [long], 2)
    index = {item: i + 2 for i, item in enumerate(ITEMS)}
    recent = ranking.pad_right([[index[i] for i in long]], SEQUENCE_LENGTH)
    expected = model.scores(model.last_hidden(recent)).numpy()[0]
    expected[[index[i] for i in long] + [0, 1]] = -np.inf
    assert ids[0] == [ITEMS[i - 2] for i in np.argsort(-expected, kind="stable")[:2]]


def test_empty_history_gets_the_most_popular_and_k_is_clipped(exported):
    _, _, _, module = exported
    ids, scores = _recommend(module, [["unknown"], ["P00"]], 3)
    assert ids[0] == ["P00", "P01", "P02"]
    assert ids[1][0] != "P00"
    ids, scores = _recommend(module, [["P00", "P01"]], 50)
    assert len(ids[0]) == len(ITEMS)
    assert ids[0][-2:] == ["", ""] and np.isneginf(scores[0][-2:]).all()
    assert _recommend(module, [["P00"]], 0)[0] == [[]]


_FRESH = """
import json, sys
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
history = tf.constant(json.loads(sys.argv[2]))
out = model.signatures["serving_default"](history=history, k=tf.constant(3))
print(json.dumps({"ids": [[p.decode() for p in r] for r in out["product_ids"].numpy()],
                  "scores": out["scores"].numpy().tolist(),
                  "modules": sorted(m for m in sys.modules if m.startswith(("keras", "recsys")))}))
"""


def test_saved_model_in_a_fresh_process_matches_keras(exported):
    model, path, _, _ = exported
    histories = [["P01", "P02", "P03"], ["P07", "P11", ""]]
    out = subprocess.run(
        [sys.executable, "-c", _FRESH, str(path), json.dumps(histories)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    expected_ids, expected_scores = _keras_top_k(model, histories, 3)
    assert result["ids"] == expected_ids
    np.testing.assert_allclose(result["scores"], expected_scores, rtol=1e-4, atol=1e-5)
    assert not [m for m in result["modules"] if m.startswith(("keras_hub", "recsys"))]


@pytest.mark.parametrize(
    "shape, sequence_length, padded",
    [
        ((3, 5), 200, (4, 8)),
        ((300, 150), 200, (512, 200)),
        ((1, 1), 6, (1, 6)),
        ((2, 40), 50, (2, 50)),
    ],
)
def test_inputs_are_padded_to_few_shapes_for_xla(shape, sequence_length, padded):
    ids = tf.ones(shape, tf.int32)
    out = ranking_export._pad_to_bucket(ids, sequence_length)
    assert tuple(out.shape) == padded
    assert int(tf.reduce_sum(out)) == shape[0] * shape[1]
