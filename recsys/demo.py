"""`recsys demo`: the whole store on synthetic data, with a progress line and a time per stage.

    recsys demo [--out DIR] [--no-serve]        (make demo)

Stages: generate the synthetic store; train and export the buy model, the next-item ranker
and the review classifier into `DIR/saved_models/`; batch-score the catalog into
`DIR/scores/`; write `DIR/report.html`; then (unless `--no-serve`) start `recsys serve` on
loopback, call `/v1/recommend`, `/v1/score` and `/v1/classify`, print the answers with product
titles and the URLs of the page and the report, and serve until Ctrl-C.

Each model's headline metric is printed next to its target (`recsys.demo_quality`). Training
logs go to `DIR/logs/<model>.log`, gunicorn's to `DIR/logs/serve.log`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pathlib
import shutil
import sys
import time

from recsys.config import ConfigError

DEFAULT_OUT = "demo"
CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "training" / "configs"
MODELS = (  # key, config, stage name
    ("buy", "buy_demo.yaml", "train and export the buy model"),
    ("ranker", "ranker_demo.yaml", "train and export the next-item ranker"),
    ("classifier", "classify_demo.yaml", "train and export the review classifier"),
)
MARKER = ".recsys-demo"
# What a demo folder holds; a rerun replaces these and nothing else.
OWNED = ("store", "saved_models", "runs", "scores", "logs", "report.html", "summary.json", MARKER)


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    """What the demo runs on (the defaults are the real demo; tests shrink them).

    Args:
        products: int. Products in the synthetic store.
        users: int. Shoppers in the synthetic store.
        seed: int. The store's seed.
        overrides: dict. Model key ("buy", "ranker", "classifier") -> `key.path=value` strings
            applied to its config, like `recsys train --set`.
        score_users: int. Shoppers whose buy probability is computed for the whole catalog.
        port: int. The preferred loopback port (another free one is used when it is taken).
        workers: int. gunicorn workers.
        ready_timeout: float. Seconds to wait for the service to load its models.
    """

    products: int = 2000
    users: int = 3000
    seed: int = 0
    overrides: dict = dataclasses.field(default_factory=dict)
    score_users: int = 20
    port: int = 8000
    workers: int = 1
    ready_timeout: float = 300.0


class Stages:
    """Prints a numbered progress line per stage and its duration."""

    def __init__(self, total):
        self.total, self.done, self.times = total, 0, {}

    def run(self, name, fn, *args, **kwargs):
        self.done += 1
        print(f"==> [{self.done}/{self.total}] {name} ...", flush=True)
        started = time.perf_counter()
        result = fn(*args, **kwargs)
        self.times[name] = time.perf_counter() - started
        print(f"    done in {self.times[name]:.1f} s", flush=True)
        return result


def prepare_out(out) -> pathlib.Path:
    """Creates `out`, or empties the demo's own entries of an earlier demo run in it.

    Raises:
        ConfigError: `out` holds anything a demo did not write (nothing is deleted then).
    """
    out = pathlib.Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; expected a folder for the demo.")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in OWNED)
        if foreign:
            raise ConfigError(
                f"--out {out} already holds files the demo did not write ({', '.join(foreign[:5])}"
                f"); choose another folder or empty it."
            )
        for name in OWNED:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(
        "Written by `recsys demo`; a rerun replaces this folder's contents.\n"
    )
    return out


@contextlib.contextmanager
def captured(log_path):
    """Sends a stage's logs, Keras output and TensorFlow's native messages (file descriptor
    2) to `log_path`, so that the console keeps one progress line per stage."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    with open(log_path, "a", encoding="utf-8") as log:
        handler = logging.StreamHandler(log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        saved = [(h, h.level) for h in root.handlers]
        for h, _ in saved:
            h.setLevel(logging.CRITICAL)
        root.addHandler(handler)
        logging.captureWarnings(True)
        sys.stderr.flush()
        stderr_fd = os.dup(2)
        os.dup2(log.fileno(), 2)
        try:
            with contextlib.redirect_stdout(log):
                yield
        finally:
            log.flush()
            sys.stderr.flush()
            os.dup2(stderr_fd, 2)
            os.close(stderr_fd)
            logging.captureWarnings(False)
            root.removeHandler(handler)
            for h, level in saved:
                h.setLevel(level)


def _generate(out, settings):
    from recsys.data import synthetic

    with captured(out / "logs" / "store.log"):
        store = synthetic.generate(
            products=settings.products, users=settings.users, seed=settings.seed
        )
        synthetic.write_store(store, out / "store", overwrite=True)
    return store


def _train(out, key, config_name, settings):
    from training import train as training

    overrides = [f"data.path={out / 'store'}", *settings.overrides.get(key, ())]
    with captured(out / "logs" / f"{key}.log"):
        code = training.run(
            CONFIGS / config_name,
            overrides,
            store=str(out / "saved_models"),
            run_dir=out / "runs" / key,
        )
    if code != 0:
        raise RuntimeError(f"training {config_name} exited with code {code}; see {out / 'logs'}")
    return json.loads((out / "runs" / key / "report.json").read_text())


def _model_names(out, settings):
    from recsys.config import load_config

    return {
        key: load_config(CONFIGS / config, settings.overrides.get(key, ())).name
        for key, config, _ in MODELS
    }


def _batch_score(out, store, names, settings):
    """Top 10 for every shopper, and buy probabilities of the whole catalog for a few."""
    from recsys import batch
    from recsys.batch_tasks import Options

    scores = out / "scores"
    scores.mkdir(parents=True, exist_ok=True)
    events = store.events
    users = (
        events["user_id"]
        .drop_duplicates()
        .sample(min(settings.score_users, events["user_id"].nunique()), random_state=settings.seed)
    )
    sample = scores / "_sample_users_events.parquet"
    events[events["user_id"].isin(users)].to_parquet(sample, index=False)
    jobs = (
        ("ranker", "top10", {"users": out / "store" / "events.parquet"}, {"k": 10}),
        ("buy", "buy", {"users": sample, "catalog": out / "store" / "catalog.parquet"}, {}),
    )
    for key, folder, inputs, options in jobs:
        inputs = {"users": None, "catalog": None, "candidates": None, **inputs}
        request = batch.Request(
            model=str(out / "saved_models" / names[key]),
            out=str(scores / folder),
            inputs={k: (str(v) if v else None) for k, v in inputs.items()},
            options=Options(**options),
            given=frozenset(k for k, v in inputs.items() if v) | frozenset(options),
            progress=False,
        )
        with captured(out / "logs" / "score.log"):
            batch.run(request)
    sample.unlink()
    return _show_batch(scores, store)


def _show_batch(scores, store):
    import pandas as pd

    titles = store.catalog.set_index("product_id")["title"]
    top = pd.read_parquet(scores / "top10")
    buy = pd.read_parquet(scores / "buy")
    print(
        f"    {scores / 'top10'}: top 10 for {top['user_id'].nunique():,} shoppers "
        f"({len(top):,} rows)"
    )
    print(
        f"    {scores / 'buy'}: buy probabilities of all {buy['product_id'].nunique():,} "
        f"products for {buy['user_id'].nunique()} shoppers ({len(buy):,} rows)"
    )
    best = buy.sort_values("probability", ascending=False).drop_duplicates("user_id").head(3)
    for row in best.itertuples():
        print(
            f"      {row.user_id}: most likely buys {titles[row.product_id]} ({row.probability:.1%})"
        )
    return {"top10_rows": len(top), "buy_rows": len(buy)}


def _checks(out, summary, reports, settings):
    from recsys import demo_quality

    baseline = demo_quality.popularity_baseline(
        CONFIGS / "ranker_demo.yaml",
        [f"data.path={out / 'store'}", *settings.overrides.get("ranker", ())],
    )
    checks = [
        demo_quality.buy_check(reports["buy"], summary.get("bayes_optimal_auc")),
        demo_quality.ranker_check(reports["ranker"], baseline),
        demo_quality.classifier_check(reports["classifier"]),
    ]
    return checks, baseline


def _demo_user(store):
    """A shopper with a fair history: the most recently active of those with 15+ events."""
    counts = store.events["user_id"].value_counts()
    regulars = set(counts[counts >= min(15, counts.max())].index)
    recent = store.events[store.events["user_id"].isin(regulars)]
    user = recent["user_id"].iloc[-1]
    mine = store.events[store.events["user_id"] == user].iloc[::-1].head(50)
    return user, list(zip(mine["product_id"], mine["event"], strict=True))


def run(out=DEFAULT_OUT, serve=True, settings=None) -> int:
    """Runs the demo; returns the exit code (0 also after Ctrl-C while serving)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    settings = settings or DemoSettings()
    out = prepare_out(out)
    started = time.perf_counter()
    stages = Stages(total=len(MODELS) + 4 + (2 if serve else 0))
    store = stages.run("generate the synthetic store", _generate, out, settings)
    summary = store.summary()
    print(
        f"    {summary['products']:,} products, {summary['users']:,} shoppers, "
        f"{summary['events']:,} events, {summary['reviews']:,} reviews; Bayes-optimal buy "
        f"AUC {summary['bayes_optimal_auc']} -> {out / 'store'}"
    )
    names = _model_names(out, settings)
    reports = {}
    for key, config, title in MODELS:
        reports[key] = stages.run(title, _train, out, key, config, settings)
        print(f"    {_headline(key, reports[key])} -> {out / 'saved_models' / names[key]}")
    checks, baseline = stages.run(
        "evaluate against the targets", _checks, out, summary, reports, settings
    )
    print("    Model quality:")
    for check in checks:
        print(f"      {check.line()}")
    stages.run("batch-score the catalog", _batch_score, out, store, names, settings)
    run_dirs = {key: out / "runs" / key for key, _, _ in MODELS}
    report = stages.run(
        "write the report",
        _write_report,
        out,
        summary,
        checks,
        reports,
        run_dirs,
        baseline,
        stages.times,
    )
    print(f"    {report.resolve()}")
    (out / "summary.json").write_text(
        json.dumps(
            {"checks": [c.to_dict() for c in checks], "baseline": baseline, "stages": stages.times},
            indent=2,
        )
    )
    if not serve:
        _print_done(out, stages, started, report)
        print(
            "\nServe the models with the page at http://127.0.0.1:8000/ :\n"
            f"  RECSYS_EVENTS={out / 'store' / 'events.parquet'} recsys serve --store "
            f"{out / 'saved_models'} --catalog {out / 'store' / 'catalog.parquet'}"
        )
        return 0
    return _serve(out, store, names, settings, stages, started, report)


def _write_report(out, summary, checks, reports, run_dirs, baseline, times):
    from recsys import demo_report

    return demo_report.write_report(
        out / "report.html", summary, checks, reports, run_dirs, baseline, dict(times)
    )


def _headline(key, report):
    head = report["headline"]
    if key == "buy":
        auc = head.get("truth_auc", head["roc_auc"])
        return f"buy: truth-pair ROC-AUC {auc:.3f}, test ROC-AUC {head['roc_auc']:.3f}"
    if key == "ranker":
        return f"ranker: NDCG@10 {head['ndcg_at_10']:.4f}, HR@10 {head['hr_at_10']:.4f}"
    return f"classifier: macro-F1 {head['macro_f1']:.3f}, accuracy {head['accuracy']:.3f}"


def _print_done(out, stages, started, report):
    total = time.perf_counter() - started
    print(f"\nStage times ({total:.0f} s in all):")
    for name, seconds in stages.times.items():
        print(f"  {seconds:6.1f} s  {name}")
    print(f"Report: {report.resolve().as_uri()}")


def _serve(out, store, names, settings, stages, started, report):
    from recsys import demo_serve

    port = demo_serve.pick_port(settings.port)
    service = demo_serve.Service(
        out / "saved_models",
        port,
        out / "logs" / "serve.log",
        events=out / "store" / "events.parquet",
        catalog=out / "store" / "catalog.parquet",
        workers=settings.workers,
    )
    try:
        with demo_serve.sigterm_as_interrupt():
            _start_and_tour(service, store, names, settings, stages)
    except KeyboardInterrupt:
        print("\nInterrupted; stopping the service ...", flush=True)
        service.stop()
        return 0
    except BaseException:
        service.stop()
        raise
    _print_done(out, stages, started, report)
    print(f"\nThe page:   {service.url}/")
    print(f"The API:    {service.url}/openapi.json   (log: {service.log})")
    print(f"The report: {report.resolve().as_uri()}")
    print("Serving until Ctrl-C ...", flush=True)
    return demo_serve.serve_until_interrupted(service)


def _start_and_tour(service, store, names, settings, stages):
    from recsys import demo_serve

    stages.run(
        f"start recsys serve on {service.url}",
        lambda: service.start().wait_ready(settings.ready_timeout),
    )
    user, history = _demo_user(store)
    titles = store.catalog.set_index("product_id")["title"].to_dict()
    seen = {pid for pid, _ in history}
    contrast = [p for p in store.catalog["product_id"].sample(8, random_state=1) if p not in seen]
    stages.run(
        "call the API",
        demo_serve.tour,
        demo_serve.http_caller(service.url),
        user,
        history,
        titles,
        contrast[:3],
        names,
    )
