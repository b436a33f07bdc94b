"""`recsys demo`: the store end to end on synthetic data, with a time for each stage.

What exists today: the synthetic store, and the buy-probability model trained on it (two
towers on MiniLM), exported into the model store and scored through its SavedModel. The
ranker, the classifier, batch scoring and the HTTP service join as they land; the demo says so.
"""

from __future__ import annotations

import json
import pathlib
import time

NOT_YET = (
    "the next-item ranker, the review classifier, batch scoring of the catalog, the HTTP "
    "service and the web page are not part of the demo yet"
)


class Stages:
    """Prints one progress line per stage with its duration."""

    def __init__(self):
        self.times = {}

    def run(self, name, fn):
        print(f"==> {name} ...", flush=True)
        started = time.perf_counter()
        result = fn()
        self.times[name] = time.perf_counter() - started
        print(f"    {name}: done in {self.times[name]:.1f} s", flush=True)
        return result


def run(out="demo_out", serve=True, train=True) -> int:
    from recsys.data import synthetic

    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stages = Stages()
    store = stages.run(
        "generate the synthetic store",
        lambda: synthetic.generate(products=2000, users=3000, seed=0),
    )
    stages.run(
        "write the store", lambda: synthetic.write_store(store, out / "store", overwrite=True)
    )
    summary = store.summary()
    print(json.dumps({k: v for k, v in summary.items() if k != "categories"}, indent=2))
    print(f"Categories: {', '.join(summary['categories'])}")
    if train:
        from training import train as training

        config = (
            pathlib.Path(__file__).resolve().parents[1] / "training" / "configs" / "buy_demo.yaml"
        )
        stages.run(
            "train and export the buy model",
            lambda: training.run(
                config,
                [f"data.path={out / 'store'}"],
                store=str(out / "saved_models"),
                run_dir=out / "runs" / "buy",
            ),
        )
        _show_scores(out, store)
    print(f"\nNot yet: {NOT_YET}.")
    if serve:
        print("(--no-serve is implied: the HTTP service is not available yet)")
    print("\nStage times: " + ", ".join(f"{k} {v:.0f} s" for k, v in stages.times.items()))
    return 0


def _show_scores(out, store):
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the tokenizer ops)

    from recsys import store as model_store

    path = model_store.resolve(out / "saved_models", "buy")
    model = tf.saved_model.load(str(path))
    user = store.events["user_id"].iloc[-1]
    recent = store.events[store.events["user_id"] == user].iloc[::-1].head(8)
    history = recent["product_id"].tolist()
    events = recent["event"].tolist()
    titles = store.catalog.set_index("product_id")["title"]
    candidates = store.catalog["product_id"].sample(8, random_state=0).tolist()
    inputs = {
        "history": tf.constant(history),
        "history_events": tf.constant(events),
        "candidates": tf.constant(candidates),
        "query": tf.constant(""),
    }
    model.signatures["score_catalog"](**inputs)  # the first call traces the graph
    started = time.perf_counter()
    result = model.signatures["score_catalog"](**inputs)
    elapsed = (time.perf_counter() - started) * 1000
    print(f"\nUser {user} recently looked at:")
    for pid in history[:5]:
        print(f"  - {titles[pid]}")
    print(f"Buy probabilities for 8 products ({elapsed:.0f} ms through the SavedModel):")
    probabilities = result["probability"].numpy()
    for pid, p in sorted(zip(candidates, probabilities, strict=True), key=lambda x: -x[1]):
        print(f"  {p:6.1%}  {titles[pid]}")
