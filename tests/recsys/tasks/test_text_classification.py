import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from recsys.backbones import tiny_bert
from recsys.heads import ClassificationHead
from recsys.objectives import compile_kwargs
from recsys.tasks import text_classification as tc
from recsys.tasks import text_classification_export as tce

TEXTS = ["great fit love it", "awful fabric tore", "ok nothing special", "love the colour"]
LABELS = ["negative", "neutral", "positive"]


def _model(num_classes=3, multi_label=False, seed=0, hidden_dim=8):
    keras.utils.set_random_seed(seed)
    backbone, text_pre = tiny_bert(sequence_length=16, hidden_dim=8)
    pre = tc.TextClassificationPreprocessor(text_pre.tokenizer, 16)
    model = tc.build_model(backbone, num_classes, multi_label=multi_label, hidden_dim=hidden_dim)
    return model, pre


def test_head_config_round_trip():
    head = ClassificationHead(num_classes=4, hidden_dim=8, dropout=0.3, name="cls")
    assert ClassificationHead.from_config(head.get_config()).get_config() == head.get_config()


def test_preprocessor_config_round_trip_and_int32_mask():
    _, text_pre = tiny_bert(sequence_length=16)
    pre = tc.TextClassificationPreprocessor(text_pre.tokenizer, 16, pad_to_multiple_of=4)
    again = tc.TextClassificationPreprocessor.from_config(pre.get_config())
    assert again.get_config() == pre.get_config()
    x = pre(["red", "a very long text that does not fit in sixteen tokens"])
    assert x["padding_mask"].dtype == tf.int32 and x["token_ids"].shape == (2, 16)


def test_padding_length_does_not_change_the_logits():
    model, pre = _model()
    alone = model(pre(["ok"]))[tc.OUTPUT].numpy()
    beside_a_long_text = model(pre(["ok", "a much longer review text here"]))[tc.OUTPUT].numpy()
    np.testing.assert_allclose(alone[0], beside_a_long_text[0], atol=1e-5)


@pytest.mark.parametrize("multi_label", [False, True])
def test_a_few_steps_reduce_the_loss(multi_label):
    model, pre = _model(multi_label=multi_label)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        **compile_kwargs(tc.objectives(3, multi_label=multi_label)),
    )
    x = pre(TEXTS * 8)
    if multi_label:
        y = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 1, 1]] * 8, dtype="float32")
    else:
        y = np.array([2, 0, 1, 2] * 8)
    history = model.fit(x, {tc.OUTPUT: y}, epochs=8, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0] * 0.9


def test_one_class_is_refused():
    with pytest.raises(ValueError, match="at least two classes"):
        tc.check_labels(["positive"])
    with pytest.raises(ValueError, match="at least two classes"):
        _model(num_classes=1)
    with pytest.raises(ValueError, match="num_classes"):
        ClassificationHead(num_classes=1)


def test_balanced_class_weights():
    weights = tc.balanced_class_weights([0, 0, 0, 1], 3)
    np.testing.assert_allclose(weights, [4 / 9, 4 / 3, 0.0])


def test_thresholds_maximise_each_labels_f1():
    targets = np.array([[1, 0], [1, 0], [0, 1], [0, 0]])
    probabilities = np.array([[0.3, 0.9], [0.25, 0.1], [0.1, 0.6], [0.2, 0.55]])
    thresholds = tc.tune_thresholds(targets, probabilities)
    np.testing.assert_allclose(thresholds, [0.25, 0.6], rtol=1e-6)
    predicted = probabilities >= thresholds
    assert predicted[:, 0].tolist() == [True, True, False, False]


def test_weighted_binary_crossentropy_weights_positives():
    y, logits = np.array([[1.0, 0.0]]), np.array([[0.0, 0.0]])
    plain = float(tc.WeightedBinaryCrossentropy([1.0, 1.0])(y, logits))
    heavier = float(tc.WeightedBinaryCrossentropy([3.0, 1.0])(y, logits))
    np.testing.assert_allclose(plain, np.log(2), rtol=1e-5)
    np.testing.assert_allclose(heavier, 2 * np.log(2), rtol=1e-5)


def test_export_multi_label_thresholds_and_label_names(tmp_path):
    model, pre = _model(multi_label=True)
    expected = tc.probabilities_from_logits(model(pre(TEXTS))[tc.OUTPUT], multi_label=True)
    thresholds = [0.0, 1.0, float(np.median(expected[:, 2]))]
    tce.export(model, pre, LABELS, tmp_path / "m", multi_label=True, thresholds=thresholds)
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    out = loaded.signatures["classify"](text=tf.constant(TEXTS))
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)
    predicted = out["predicted"].numpy()
    assert predicted[:, 0].all() and not predicted[:, 1].any()
    np.testing.assert_array_equal(predicted[:, 2], expected[:, 2] >= thresholds[2])
    assert [n.decode() for n in loaded.label_names.numpy()] == LABELS
    np.testing.assert_allclose(loaded.thresholds.numpy(), thresholds, rtol=1e-6)
    best = [LABELS[i] for i in expected.argmax(axis=1)]
    assert [n.decode() for n in out["label"].numpy()] == best


def test_export_refuses_a_threshold_count_that_does_not_match(tmp_path):
    model, pre = _model()
    with pytest.raises(ValueError, match="threshold"):
        tce.export(model, pre, LABELS, tmp_path / "m", multi_label=True, thresholds=[0.5])


def test_lora_trains_only_the_adapters_and_the_head(tmp_path):
    keras.utils.set_random_seed(0)
    backbone, text_pre = tiny_bert(sequence_length=16, hidden_dim=8)
    backbone.enable_lora(2)
    pre = tc.TextClassificationPreprocessor(text_pre.tokenizer, 16)
    model = tc.build_model(backbone, 3)
    paths = [v.path for v in model.trainable_weights]
    assert any("lora" in p for p in paths)
    others = [p for p in paths if not ("lora" in p or "classification_head" in p)]
    assert all(p.endswith("bias") for p in others)  # KerasHub keeps biases trainable
    expected = tc.probabilities_from_logits(model(pre(TEXTS))[tc.OUTPUT])
    tce.export(model, pre, LABELS, tmp_path / "m")
    out = tf.saved_model.load(str(tmp_path / "m")).signatures["classify"](text=tf.constant(TEXTS))
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)


_FRESH = """
import json, sys
import tensorflow as tf
import tensorflow_text  # registers the tokenizer ops
model = tf.saved_model.load(sys.argv[1])
out = model.signatures["classify"](text=tf.constant(json.loads(sys.argv[2])))
default = model.signatures["serving_default"](text=tf.constant(json.loads(sys.argv[2])))
print(json.dumps({
    "probabilities": out["probabilities"].numpy().tolist(),
    "default": default["probabilities"].numpy().tolist(),
    "dtype": out["probabilities"].dtype.name, "label_dtype": out["label"].dtype.name,
    "label": [b.decode() for b in out["label"].numpy()],
    "label_names": [b.decode() for b in model.label_names.numpy()],
    "modules": sorted(m for m in sys.modules if m.startswith(("keras", "recsys")))}))
"""


def test_saved_model_in_a_fresh_process_matches_keras(tmp_path):
    model, pre = _model(seed=3)
    texts = TEXTS + ["", "UPPER case and punctuation!?"]
    expected = tc.probabilities_from_logits(model(pre(texts))[tc.OUTPUT])
    signatures = tce.export(model, pre, LABELS, tmp_path / "m")
    assert signatures["classify"]["outputs"]["probabilities"] == "float32[N, 3]"
    out = subprocess.run(
        [sys.executable, "-c", _FRESH, str(tmp_path / "m"), json.dumps(texts)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(result["probabilities"], expected, atol=1e-5)
    np.testing.assert_allclose(result["default"], expected, atol=1e-5)
    assert (result["dtype"], result["label_dtype"]) == ("float32", "string")
    assert result["label"] == [LABELS[i] for i in expected.argmax(axis=1)]
    assert result["label_names"] == LABELS
    assert not [m for m in result["modules"] if m.startswith(("keras_hub", "recsys"))]
