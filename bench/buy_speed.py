"""Buy-probability speed: scoring latency through the SavedModel, and training throughput.

    python bench/buy_speed.py --model saved_models/buy [--steps 20] [--rounds 3]

1. Scoring: one user's history (8 products) against 20 catalog products through the
   `score_catalog` signature, in one process; p50/p90/p99 over 200 calls after warm-up.
2. Training: examples/s at batch 32 of the two-tower model against a bare
   `keras_hub.models.BertTextClassifier.fit` (a cross-encoder over the joined context and product
   text) on the same texts, same backbone (MiniLM), in the same run. The two fits alternate for
   `--rounds` rounds (default 3) so that a busy spell on the machine falls on both. Each model's
   figure is its best round (as `timeit` takes the fastest run: interference only slows a run
   down); the ratio is that of the two best rounds, with the ratio of the medians and each
   round's ratio beside it. Both input pipelines are preprocessed and cached before the first
   fit, so the timings are of the training steps.
Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def scoring_latency(model_dir, calls=200, candidates=20, seed=0):
    import pandas as pd
    import tensorflow as tf
    import tensorflow_text  # noqa: F401

    from recsys import store

    path = store.resolve_path(model_dir)
    model = tf.saved_model.load(str(path))
    catalog = pd.read_parquet(path / "catalog.parquet")
    rng = np.random.default_rng(seed)
    ids = catalog["product_id"].to_numpy()
    fn = model.signatures["score_catalog"]
    timings = []
    for i in range(calls + 10):
        history = tf.constant(rng.choice(ids, 8, replace=False))
        cands = tf.constant(rng.choice(ids, candidates, replace=False))
        started = time.perf_counter()
        events = tf.constant(["purchase"] * 2 + ["view"] * 6)
        fn(history=history, history_events=events, candidates=cands, query=tf.constant(""))[
            "probability"
        ].numpy()
        if i >= 10:
            timings.append((time.perf_counter() - started) * 1000)
    timings = np.array(timings)
    return {
        "model": str(path),
        "candidates": candidates,
        "calls": calls,
        "p50_ms": round(float(np.percentile(timings, 50)), 2),
        "p90_ms": round(float(np.percentile(timings, 90)), 2),
        "p99_ms": round(float(np.percentile(timings, 99)), 2),
    }


def training_throughput(steps=20, batch=32, context_length=64, product_length=24, seed=0, rounds=3):
    import keras
    import keras_hub
    import tensorflow as tf

    from recsys import backbones
    from recsys.data import synthetic
    from recsys.data.buy_pairs import build_pairs
    from recsys.objectives import compile_kwargs
    from recsys.tasks import buy_probability as bp

    synth = synthetic.generate(seed=seed)
    pairs = build_pairs(
        synth.events,
        synth.catalog,
        negatives=4,
        history_length=8,
        seed=seed,
        max_pairs=batch * (steps + 3),
    )
    labels = pairs["label"].to_numpy("float32")
    n = batch * (steps + 3)
    results = {}

    keras.utils.set_random_seed(seed)
    backbone, text_pre = backbones.resolve("minilm", context_length)
    pre = bp.BuyProbabilityPreprocessor(text_pre.tokenizer, context_length, product_length)
    model = bp.build_model(backbone, hidden_dim=128)
    model.compile(optimizer=keras.optimizers.AdamW(5e-5), **compile_kwargs(bp.objectives()))
    ds = (
        tf.data.Dataset.from_tensor_slices(
            (
                {
                    "context": pairs["context"].to_numpy(str)[:n],
                    "product": pairs["product"].to_numpy(str)[:n],
                },
                {"buy_logit": labels[:n, None]},
            )
        )
        .batch(batch)
        .map(lambda x, y: (pre(x), y))
        .take(steps + 3)
        .cache()
    )
    two_tower = (model, ds)

    keras.utils.set_random_seed(seed)
    backbone, text_pre = backbones.resolve("minilm", context_length + product_length)
    classifier = keras_hub.models.BertTextClassifier(backbone, num_classes=2, preprocessor=None)
    classifier.compile(
        optimizer=keras.optimizers.AdamW(5e-5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    tokenizer = text_pre.tokenizer
    packer = keras_hub.layers.MultiSegmentPacker(
        sequence_length=context_length + product_length,
        start_value=tokenizer.cls_token_id,
        end_value=tokenizer.sep_token_id,
        pad_value=tokenizer.pad_token_id,
    )

    def cross_inputs(context, product):
        token_ids, segment_ids = packer((tokenizer(context), tokenizer(product)))
        mask = tf.not_equal(token_ids, tokenizer.pad_token_id)
        return {"token_ids": token_ids, "segment_ids": segment_ids, "padding_mask": mask}

    cross = (
        tf.data.Dataset.from_tensor_slices(
            (
                pairs["context"].to_numpy(str)[:n],
                pairs["product"].to_numpy(str)[:n],
                labels[:n].astype("int32"),
            )
        )
        .batch(batch)
        .map(lambda c, p, y: (cross_inputs(c, p), y))
        .take(steps + 3)
        .cache()
    )
    fits = {"two_tower": two_tower, "bert_text_classifier": (classifier, cross)}
    for _, fit_ds in fits.values():  # fill the caches: the timed fits do not preprocess
        for _ in fit_ds:
            pass
    for fit_model, fit_ds in fits.values():
        fit_model.fit(fit_ds.take(3), epochs=1, verbose=0)  # build and trace
    timings = {name: [] for name in fits}
    for _ in range(rounds):
        for name, (fit_model, fit_ds) in fits.items():
            timings[name].append(_time_fit(fit_model, fit_ds, steps, batch))
    for name, rates in timings.items():
        results[name] = {
            "steps": steps,
            "rounds": rounds,
            "examples_per_s": round(max(rates), 2),
            "median_examples_per_s": round(float(np.median(rates)), 2),
            "each_round": [round(r, 2) for r in rates],
        }
    results["ratio"] = round(
        results["two_tower"]["examples_per_s"] / results["bert_text_classifier"]["examples_per_s"],
        3,
    )
    results["ratio_of_medians"] = round(
        float(np.median(timings["two_tower"]) / np.median(timings["bert_text_classifier"])), 3
    )
    results["ratio_each_round"] = [
        round(a / b, 3)
        for a, b in zip(timings["two_tower"], timings["bert_text_classifier"], strict=True)
    ]
    results.update(
        batch=batch,
        context_length=context_length,
        product_length=product_length,
        cross_encoder_length=context_length + product_length,
    )
    return results


def _time_fit(model, ds, steps, batch):
    """Examples per second of one `fit` over `steps` batches (after the 3 warm-up batches)."""
    started = time.perf_counter()
    model.fit(ds.skip(3).take(steps), epochs=1, verbose=0)
    return steps * batch / (time.perf_counter() - started)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="saved_models/<name>[/<version>] of a buy model")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="alternating training rounds")
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args(argv)
    out = {}
    if args.model:
        out["scoring"] = scoring_latency(args.model)
    if not args.skip_training:
        out["training"] = training_throughput(steps=args.steps, rounds=args.rounds)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
