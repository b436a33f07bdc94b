"""Evaluation plots (matplotlib, written as PNG files) and the JSON report."""

from __future__ import annotations

import json
import pathlib

import numpy as np

from recsys import metrics


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_json(path, data):
    """Writes JSON atomically (temporary file, then rename)."""
    path = pathlib.Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=float))
    tmp.replace(path)


def plot_roc(labels, scores, path, title="ROC curve"):
    plt = _pyplot()
    fpr, tpr, _ = metrics.roc_curve(labels, scores)
    auc = metrics.roc_auc(labels, scores)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, label=f"model (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_calibration(labels, probabilities, path, bins=10):
    plt = _pyplot()
    predicted, observed, counts = metrics.calibration_curve(labels, probabilities, bins=bins)
    ece = metrics.expected_calibration_error(labels, probabilities, bins=bins)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    ax.plot(predicted, observed, "o-", label=f"model (ECE {ece:.3f})")
    ax.set(xlabel="predicted probability", ylabel="observed frequency", title="Calibration")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_training_curves(history: dict, path):
    """One panel per metric (train and validation) from a Keras `History.history` dict."""
    plt = _pyplot()
    names = sorted({k.removeprefix("val_") for k in history if not k.startswith("learning_rate")})
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(4 * max(len(names), 1), 3.5))
    axes = np.atleast_1d(axes)
    for ax, name in zip(axes, names, strict=False):
        for key, style in ((name, "-"), (f"val_{name}", "--")):
            if key in history:
                ax.plot(np.arange(1, len(history[key]) + 1), history[key], style, label=key)
        ax.set(xlabel="epoch", title=name)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(matrix, labels, path):
    plt = _pyplot()
    matrix = np.asarray(matrix)
    size = max(4.0, 0.5 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
