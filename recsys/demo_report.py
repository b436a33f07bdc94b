"""The demo's report: one self-contained HTML file (plots inlined as base64 PNG).

It gathers what the training runs wrote into their run directories (`report.json`,
`training_curves.png`, `roc.png`, `calibration.png`, `confusion.png`) and adds a chart of the
ranker against the most-popular baseline.

Example:
>>> html = page("t", [section("Models", table(["model", "AUC"], [["buy", 0.8123]]))])
>>> "<td>0.812</td>" in html and html.startswith("<!doctype html>")
True
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import pathlib

RANKING_KEYS = ("hr_at_1", "hr_at_5", "hr_at_10", "ndcg_at_5", "ndcg_at_10", "mrr")
RANKING_NAMES = ("HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR")

STYLE = """
body { font-family: system-ui, sans-serif; color: #1d2330; max-width: 1100px; margin: 1rem auto;
       padding: 0 1.5rem; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.9rem; }
th, td { border-bottom: 1px solid #e3e6ec; padding: 0.25rem 0.7rem; text-align: left; }
th { color: #6b7385; }
.figures { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }
figure { margin: 0; } figcaption { font-size: 0.8rem; color: #6b7385; }
img { max-width: 100%; border: 1px solid #eee; }
.ok { color: #1e7b34; font-weight: 600; } .bad { color: #b3261e; font-weight: 600; }
.muted { color: #6b7385; }
"""


def _cell(value):
    if isinstance(value, bool) or value is None:
        return html.escape(str(value))
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape(str(value))


def table(header, rows) -> str:
    """An HTML table; floats get three decimals, everything is escaped."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def image(png: bytes | None, caption: str) -> str:
    """A figure with the PNG inlined as a data URI (or a note when there is none)."""
    if not png:
        return f'<p class="muted">{html.escape(caption)}: not produced by this run.</p>'
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _png(path):
    path = pathlib.Path(path)
    return path.read_bytes() if path.is_file() else None


def section(title, *parts) -> str:
    return f"<section><h2>{html.escape(title)}</h2>{''.join(parts)}</section>"


def page(title, sections) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{''.join(sections)}</body></html>\n"
    )


def ranking_chart(model, baseline) -> bytes:
    """A grouped bar chart of the ranker against the most-popular baseline (PNG bytes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.arange(len(RANKING_KEYS))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    bars = ((-0.2, "ranker", model), (0.2, "most popular", baseline))
    for offset, name, values in bars:
        ax.bar(x + offset, [values[k] for k in RANKING_KEYS], width=0.4, label=name)
    ax.set_xticks(x, RANKING_NAMES)
    ax.set(ylabel="test, full ranking", title="Next-item ranking vs. the most-popular baseline")
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def _checks_section(checks):
    rows = [
        [
            c.model,
            c.metric,
            c.value,
            f"{c.reference}: {'n/a' if c.reference_value is None else f'{c.reference_value:.3f}'}",
            c.target,
            {True: "met", False: "below target", None: "not judged"}[c.met],
        ]
        for c in checks
    ]
    return section(
        "Model quality", table(["model", "metric", "value", "compared with", "target", ""], rows)
    )


def _buy_section(report, run_dir):
    test = report.get("test", {})
    rows = [
        [k, test[k]] for k in ("roc_auc", "per_user_auc", "pr_auc", "log_loss", "ece") if k in test
    ]
    truth = report.get("synthetic_truth")
    if truth:
        rows += [
            ["truth-pair ROC-AUC", truth["roc_auc"]],
            ["Bayes-optimal ROC-AUC", truth["bayes_optimal_auc"]],
            ["ratio to optimal", truth["ratio_to_optimal"]],
        ]
    return section(
        "Buy probability",
        table(["metric (test pairs)", "value"], rows),
        '<div class="figures">',
        image(_png(run_dir / "roc.png"), "ROC curve (test pairs)"),
        image(_png(run_dir / "calibration.png"), "Calibration (test pairs)"),
        image(_png(run_dir / "training_curves.png"), "Training curves"),
        "</div>",
    )


def _ranker_section(report, baseline, run_dir):
    model = report["test"]["full"]
    sampled = report["test"].get("sampled_100", {})
    rows = [
        [
            name,
            model[key],
            baseline[key],
            model[key] / baseline[key] if baseline[key] else None,
            sampled.get(key),
        ]
        for key, name in zip(RANKING_KEYS, RANKING_NAMES, strict=True)
    ]
    header = ["metric (test)", "ranker", "most popular", "ratio", "ranker, sampled-100"]
    return section(
        "Next-item ranking",
        f'<p class="muted">{html.escape(report.get("protocol", ""))}; '
        f"{model['users']:,} test users.</p>",
        table(header, rows),
        '<div class="figures">',
        image(ranking_chart(model, baseline), "Ranker vs. most popular (test)"),
        image(_png(run_dir / "training_curves.png"), "Training curves"),
        "</div>",
    )


def _classifier_section(report, run_dir):
    test = report["test"]
    per_class = [
        [label, s["precision"], s["recall"], s["f1"], s["support"]]
        for label, s in test.get("per_class", {}).items()
    ]
    return section(
        "Review classification",
        table(
            ["metric (test reviews)", "value"],
            [["accuracy", test["accuracy"]], ["macro-F1", test["macro_f1"]]],
        ),
        table(["class", "precision", "recall", "F1", "support"], per_class),
        '<div class="figures">',
        image(_png(run_dir / "confusion.png"), "Confusion matrix (test)"),
        image(_png(run_dir / "training_curves.png"), "Training curves"),
        "</div>",
    )


def write_report(path, summary, checks, reports, run_dirs, baseline, stage_times):
    """Writes the demo report; returns its path.

    Args:
        path: str or Path. The HTML file to write.
        summary: dict. The synthetic store's summary.
        checks: list of `recsys.demo_quality.Check`.
        reports: dict. "buy", "ranker", "classifier" -> the run's `report.json` content.
        run_dirs: dict. The same keys -> the run directory (for its PNG plots).
        baseline: dict. The most-popular baseline's ranking report.
        stage_times: dict. Stage name -> seconds.
    """
    path = pathlib.Path(path)
    store_rows = [
        [k, summary[k]]
        for k in ("products", "users", "events", "reviews", "truth_pairs", "bayes_optimal_auc")
        if k in summary
    ]
    generated = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    sections = [
        f'<p class="muted">Generated by <code>recsys demo</code> on {generated}.</p>',
        _checks_section(checks),
        _buy_section(reports["buy"], pathlib.Path(run_dirs["buy"])),
        _ranker_section(reports["ranker"], baseline, pathlib.Path(run_dirs["ranker"])),
        _classifier_section(reports["classifier"], pathlib.Path(run_dirs["classifier"])),
        section("The synthetic store", table(["", "value"], store_rows)),
        section(
            "Stage times",
            table(["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in stage_times.items()]),
        ),
    ]
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page("recsys demo report", sections), encoding="utf-8")
    tmp.replace(path)
    return path
