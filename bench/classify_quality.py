"""Text-classification quality: our BERT classifier beside a TF-IDF baseline on the same split.

    python bench/classify_quality.py --protocol p4|p3|sentiment [--run-dir DIR] [--skip-model]
        [--from-run DIR] [--set key.path=value ...]

Protocols (docs/PROTOCOLS.md):

- `p4`: PriceRunner titles -> 10 categories. Split with scikit-learn
  `GroupShuffleSplit(test_size=0.2, random_state=0)` on `Cluster ID`; validation is taken from
  the train part the same way (`test_size=0.125`, so 70/10/20). Baseline: TF-IDF word 1-2 grams
  + char_wb 2-5 grams (sublinear tf) + LinearSVC (C=0.5). Metrics: accuracy, macro-F1.
- `p3`: women's clothing reviews, "title. text" -> `Recommended IND`. Split:
  `train_test_split(test_size=0.2, stratify, random_state=0)`, then 1/8 of the train part as
  validation the same way. Baseline: TF-IDF word 1-2 grams (sublinear tf, min_df 2) + logistic
  regression (C=4). Metrics: ROC-AUC, accuracy at 0.5, F1 of the minority class.
- `sentiment`: the same reviews, rating -> negative (<= 2) / neutral (3) / positive (>= 4);
  the pipeline's own seeded stratified 80/10/10 split (`recsys.data.splits`). Baselines: word
  1-2 + char_wb 2-5 grams with LinearSVC (C=0.5) and with logistic regression (C=4), each
  plain and with "balanced" class weights; the best macro-F1 counts. Metrics: accuracy,
  macro-F1.

Baselines train on the train and validation parts together (the protocol's train part) and
are scored on the test part. The model is trained by the regular pipeline (`training.train`)
with the protocol's config (`training/configs/classify_*.yaml`) on a table holding the same
split (`data.split_column`), and scored from its `test_predictions.npz`. Prints JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import pathlib
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIGS = {
    "p4": "training/configs/classify_products.yaml",
    "p3": "training/configs/classify_reviews.yaml",
    "sentiment": "training/configs/classify_sentiment.yaml",
}
TARGETS = {
    "p4": {"accuracy": 0.990, "accuracy_over_baseline": 0.005},
    "p3": {"roc_auc": 0.975, "accuracy": 0.93, "minority_f1": 0.78},
    "sentiment": {"macro_f1_over_baseline": 0.03},
}


def load_examples(protocol):
    """`text`, `label` (and `group` for P4) per example, read as the pipeline reads them."""
    from recsys.data import formats, labelled_text

    root = formats.shared_data_dir()
    if protocol == "p4":
        path = root / "pricerunner-product-classification" / "pricerunner_aggregate.csv.gz"
        raw = formats.load_pricerunner(path)
        return labelled_text.examples(raw, ["title"], "category", group="cluster_id"), path
    path = root / "womens-clothing-reviews" / "womens_clothing_ecommerce_reviews.csv.gz"
    raw = formats.load_clothing_reviews(path)
    label = "recommended" if protocol == "p3" else "sentiment"
    return labelled_text.examples(raw, ["title", "text"], label), path


def split(protocol, frame):
    """The protocol's parts as a column `part` (train / validation / test)."""
    from sklearn.model_selection import GroupShuffleSplit, train_test_split

    part = np.full(len(frame), "train", dtype=object)
    rows = np.arange(len(frame))
    if protocol == "p4":
        groups = frame["group"].to_numpy()
        train, test = next(
            GroupShuffleSplit(test_size=0.2, random_state=0).split(rows, groups=groups)
        )
        inner = GroupShuffleSplit(test_size=0.125, random_state=0)
        fit, validation = next(inner.split(train, groups=groups[train]))
        part[test], part[train[validation]] = "test", "validation"
    elif protocol == "p3":
        labels = frame["label"].to_numpy()
        train, test = train_test_split(rows, test_size=0.2, stratify=labels, random_state=0)
        fit, validation = train_test_split(
            train, test_size=0.125, stratify=labels[train], random_state=0
        )
        part[test], part[validation] = "test", "validation"
    else:
        from recsys.data.splits import stratified_split

        indexed = frame.reset_index(drop=True)
        _, validation, test = stratified_split(indexed, "label", (0.8, 0.1, 0.1), seed=0)
        part[validation.index], part[test.index] = "validation", "test"
    return frame.assign(part=part)


def _features(protocol):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion

    word = TfidfVectorizer(
        ngram_range=(1, 2), sublinear_tf=True, min_df=2 if protocol == "p3" else 1
    )
    if protocol == "p3":
        return word
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True)
    return FeatureUnion([("word", word), ("char", char)])


def baselines(protocol, frame, labels):
    """Fits the TF-IDF baseline(s) on train + validation; scores on test."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    fit = frame[frame["part"] != "test"]
    test = frame[frame["part"] == "test"]
    index = {label: i for i, label in enumerate(labels)}
    truth = test["label"].map(index).to_numpy()
    models = {
        "p4": {"tfidf_word_char_linear_svc": LinearSVC(C=0.5)},
        "p3": {"tfidf_word_logistic_regression": LogisticRegression(C=4, max_iter=2000)},
        "sentiment": {
            "tfidf_word_char_linear_svc": LinearSVC(C=0.5),
            "tfidf_word_char_logistic_regression": LogisticRegression(C=4, max_iter=2000),
            "tfidf_word_char_linear_svc_balanced": LinearSVC(C=0.5, class_weight="balanced"),
            "tfidf_word_char_logistic_regression_balanced": LogisticRegression(
                C=4, max_iter=2000, class_weight="balanced"
            ),
        },
    }[protocol]
    out = {}
    for name, classifier in models.items():
        started = time.perf_counter()
        pipeline = make_pipeline(_features(protocol), classifier)
        pipeline.fit(fit["text"].tolist(), fit["label"].map(index).to_numpy())
        if hasattr(classifier, "predict_proba"):
            scores = pipeline.predict_proba(test["text"].tolist())
        else:
            scores = pipeline.decision_function(test["text"].tolist())
            scores = scores if scores.ndim == 2 else np.stack([-scores, scores], axis=1)
        out[name] = {
            **score(protocol, truth, scores, labels, fit),
            "seconds": round(time.perf_counter() - started, 1),
        }
    return out


def score(protocol, truth, scores, labels, fit):
    """The protocol's metrics of `[N, C]` scores (probabilities or decision values)."""
    from recsys import metrics

    predicted = np.asarray(scores).argmax(axis=1)
    out = {
        "accuracy": metrics.accuracy(truth, predicted),
        "macro_f1": metrics.macro_f1(truth, predicted, len(labels)),
    }
    if protocol == "p3":
        minority = fit["label"].value_counts().idxmin()
        out["roc_auc"] = metrics.roc_auc(truth, np.asarray(scores)[:, 1])
        out["minority_class"] = minority
        out["minority_f1"] = metrics.f1_for_class(truth, predicted, labels.index(minority))
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}


def train_model(protocol, table_path, run_dir, overrides, export):
    from training import train

    config = str(ROOT / CONFIGS[protocol])
    sets = [
        "data.source=table",
        f"data.path={table_path}",
        "data.text_columns=[text]",
        "data.label=label",
        "data.split_column=part",
        "data.max_examples=null",
        *overrides,
    ]
    store = run_dir / "store"
    with contextlib.redirect_stdout(sys.stderr):  # Keras' progress; stdout is for the JSON
        code = train.run(config, sets, store=str(store), run_dir=str(run_dir), export=export)
    if code:
        raise SystemExit(f"training failed with exit code {code}")
    return config, sets


def model_scores(protocol, frame, labels, run_dir):
    saved = np.load(pathlib.Path(run_dir) / "test_predictions.npz", allow_pickle=False)
    if list(saved["labels"]) != list(labels):
        raise SystemExit(f"label order differs: {list(saved['labels'])} vs {labels}")
    test = frame[frame["part"] == "test"]
    if saved["row"].tolist() != test.index.tolist():
        raise SystemExit("the run's test rows differ from this protocol's test part")
    truth = test["label"].map({label: i for i, label in enumerate(labels)}).to_numpy()
    out = score(protocol, truth, saved["probabilities"], labels, frame[frame["part"] != "test"])
    report = json.loads((pathlib.Path(run_dir) / "report.json").read_text())
    out["fit_seconds"] = report.get("training", {}).get("fit_seconds")
    out["epochs_run"] = report.get("training", {}).get("epochs_run")
    return out


def compare(protocol, baseline, model):
    best = max(
        baseline.values(), key=lambda b: b["macro_f1"] if protocol == "sentiment" else b["accuracy"]
    )
    delta = {
        k: round(model[k] - best[k], 4)
        for k in ("accuracy", "macro_f1", "roc_auc", "minority_f1")
        if k in model and k in best
    }
    targets = TARGETS[protocol]
    met = {}
    for key, value in targets.items():
        if key.endswith("_over_baseline"):
            met[key] = delta[key.removesuffix("_over_baseline")] >= value
        else:
            met[key] = model[key] >= value
    return delta, met


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--protocol", required=True, choices=sorted(CONFIGS))
    parser.add_argument("--run-dir", default=None, help="where the model's run goes")
    parser.add_argument("--from-run", default=None, help="score a finished run instead of training")
    parser.add_argument("--skip-model", action="store_true", help="baseline only")
    parser.add_argument("--export", action="store_true", help="also export the model")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    frame, path = load_examples(args.protocol)
    frame = split(args.protocol, frame)
    labels = sorted(frame["label"].unique())
    sizes = frame["part"].value_counts().to_dict()
    result = {
        "protocol": args.protocol,
        "data": str(path),
        "examples": len(frame),
        "parts": {k: int(sizes.get(k, 0)) for k in ("train", "validation", "test")},
        "labels": labels,
        "date": datetime.date.today().isoformat(),
        "command": " ".join(["python", "bench/classify_quality.py", *(argv or sys.argv[1:])]),
    }
    result["baseline"] = baselines(args.protocol, frame, labels)
    print(json.dumps({"baseline": result["baseline"]}), file=sys.stderr, flush=True)
    if not args.skip_model:
        run_dir = pathlib.Path(
            args.from_run or args.run_dir or tempfile.mkdtemp(prefix="classify-")
        )
        if not args.from_run:
            run_dir.mkdir(parents=True, exist_ok=True)
            table = run_dir / "split.parquet"
            frame[["text", "label", "part"]].to_parquet(table)
            config, sets = train_model(args.protocol, table, run_dir, args.overrides, args.export)
            result["config"], result["overrides"] = (
                str(pathlib.Path(config).relative_to(ROOT)),
                sets,
            )
        result["run_dir"] = str(run_dir)
        result["model"] = model_scores(args.protocol, frame, labels, run_dir)
        result["delta_vs_best_baseline"], result["targets_met"] = compare(
            args.protocol, result["baseline"], result["model"]
        )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
