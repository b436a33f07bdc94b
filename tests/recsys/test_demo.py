"""`recsys demo` end to end on a tiny store with tiny models, and its parts on their own.

The end-to-end run trains the three tiny models, batch-scores, writes the report, starts a real
`recsys serve` (gunicorn), tours the API and is stopped by a real SIGINT, as Ctrl-C does.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from recsys import demo, demo_serve
from recsys.config import ConfigError
from recsys.demo import DemoSettings
from tests.conftest import TINY_BERT

_BERT = "backbone={" + ", ".join(f"{k}: {v}" for k, v in TINY_BERT.items()) + "}"
TINY = DemoSettings(
    products=60,
    users=40,
    score_users=3,
    port=0,  # any free port
    ready_timeout=240,
    overrides={
        "buy": (
            _BERT,
            "model.sequence_length=32",
            "model.product_sequence_length=16",
            "model.hidden_dim=8",
            "data.history_length=4",
            "data.max_pairs=null",
            "train.epochs=1",
        ),
        "ranker": (
            "model.sequence_length=12",
            "model.num_layers=1",
            "model.num_heads=1",
            "model.embedding_dim=8",
            "train.epochs=1",
            "train.batch_size=8",
        ),
        "classifier": (
            _BERT,
            "model.sequence_length=32",
            "model.hidden_dim=8",
            "train.epochs=1",
            "train.batch_size=16",
        ),
    },
)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, monkeypatch_module):
    """Runs the whole tiny demo with serving; a SIGINT stops it once it serves."""
    out = tmp_path_factory.mktemp("demo") / "out"
    original = demo_serve.serve_until_interrupted
    seen = {}

    def interrupt_soon(service):
        import requests

        seen["page"] = requests.get(service.url + "/", timeout=30).text
        seen["users"] = requests.get(service.url + "/v1/users?limit=3", timeout=30).json()
        seen["service"] = service
        threading.Timer(0.5, ctrl_c, (service,)).start()
        return original(service)

    def ctrl_c(service):
        if service.running():  # never interrupt pytest itself
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch_module.setattr(demo_serve, "serve_until_interrupted", interrupt_soon)
    # A shell that starts pytest in the background without job control makes it ignore SIGINT;
    # Ctrl-C in a terminal raises KeyboardInterrupt, so the test restores that for the run.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            code = demo.run(out, serve=True, settings=TINY)
    finally:
        signal.signal(signal.SIGINT, previous)
    return out, code, buffer.getvalue(), seen


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_every_stage_prints_a_progress_line_and_a_time(demo_run):
    _, code, printed, _ = demo_run
    assert code == 0
    stages = re.findall(r"==> \[(\d+)/(\d+)\] (.+) \.\.\.", printed)
    assert [int(n) for n, _, _ in stages] == list(range(1, 10))
    assert all(total == "9" for _, total, _ in stages)
    assert len(re.findall(r"done in \d+\.\d s", printed)) == 9
    assert "Stage times" in printed and "Report: file://" in printed


def test_models_are_exported_and_judged_against_their_targets(demo_run):
    out, _, printed, _ = demo_run
    from recsys import store

    assert store.list_models(out / "saved_models") == {
        "buy": [1],
        "ranker": [1],
        "classify_demo": [1],
    }
    for model in ("buy ", "ranker ", "classifier "):
        assert re.search(rf"{model}\s+\S.*target .*(ok|BELOW TARGET|not judged)", printed), model
    assert "most popular" in printed and "Bayes-optimal" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert [c["model"] for c in summary["checks"]] == ["buy", "ranker", "classifier"]
    assert 0 <= summary["baseline"]["ndcg_at_10"] <= 1


def test_the_catalog_is_batch_scored(demo_run):
    import pandas as pd

    out, _, printed, _ = demo_run
    top = pd.read_parquet(out / "scores" / "top10")
    buy = pd.read_parquet(out / "scores" / "buy")
    assert top["user_id"].nunique() == 40 and set(top["rank"]) <= set(range(1, 11))
    assert buy["user_id"].nunique() == 3 and buy["product_id"].nunique() == 60
    assert "most likely buys" in printed


def test_the_report_is_one_self_contained_file(demo_run):
    out, _, _, _ = demo_run
    html = (out / "report.html").read_text()
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)"', html)
    captions = {alt for alt, _ in images}
    assert {
        "ROC curve (test pairs)",
        "Calibration (test pairs)",
        "Ranker vs. most popular (test)",
        "Confusion matrix (test)",
        "Training curves",
    } <= captions
    assert all(base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n" for _, data in images)
    assert "most popular" in html and "macro-F1" in html
    assert not re.search(r'(src|href)="(?!data:)[^"#]', html)  # nothing to fetch


def test_the_api_tour_prints_titles_and_the_service_stops_on_sigint(demo_run):
    out, _, printed, seen = demo_run
    assert "POST /v1/recommend" in printed and "POST /v1/score" in printed
    assert "POST /v1/classify" in printed
    from recsys.data import synthetic

    titles = set(synthetic.load_store_dir(out / "store").catalog["title"])
    tour = printed.split("POST /v1/recommend", 1)[1].split("POST /v1/classify", 1)[0]
    shown = [
        line.split("%  ", 1)[1].rsplit(" (", 1)[0] for line in tour.splitlines() if "%  " in line
    ]
    assert len(shown) >= 5 and all(title in titles for title in shown)
    assert re.search(r"(negative|neutral|positive)\s+\d+\.\d%", printed)
    assert "The page:   http://127.0.0.1:" in printed and "Service stopped." in printed
    assert 'src="static/page.js"' in seen["page"]
    assert len(seen["users"]["users"]) == 3
    assert seen["service"].proc.returncode is not None  # gunicorn is gone


def test_a_folder_with_other_files_is_refused_and_left_alone(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="precious.txt"):
        demo.prepare_out(tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_a_rerun_replaces_only_what_the_demo_wrote(tmp_path):
    out = demo.prepare_out(tmp_path / "d")
    (out / "runs").mkdir()
    (out / "report.html").write_text("old")
    demo.prepare_out(out)
    assert sorted(p.name for p in out.iterdir()) == [demo.MARKER]


def test_the_tour_prints_titles_not_only_ids(capsys):
    titles = {"p1": "Red Mug", "p2": "Blue Boot", "p3": "Green Lamp"}

    def call(path, body):
        if path == "/v1/recommend":
            items = [{"id": "p2", "score": 2.0, "title": "Blue Boot", "category": "boots"}]
            return {"model": "ranker", "version": 1, "items": items}, 3.0
        if path == "/v1/score":
            scores = [{"id": p, "probability": 0.5} for p in body["products"]]
            return {"model": "buy", "version": 1, "scores": scores}, 4.0
        labels = ["positive", "neutral", "negative"]
        predictions = [{"label": label, "probabilities": {label: 0.9}} for label in labels]
        return {"model": "cls", "version": 2, "predictions": predictions}, 5.0

    names = {"buy": "buy", "ranker": "ranker", "classifier": "cls"}
    demo_serve.tour(call, "U1", [("p1", "purchase")], titles, ["p3"], names)
    printed = capsys.readouterr().out
    assert "purchase  Red Mug" in printed and "50.0%  Blue Boot (boots)" in printed
    assert "50.0%  Green Lamp" in printed and "negative   90.0%" in printed


def test_a_service_that_dies_at_start_is_reported(tmp_path):
    service = demo_serve.Service(tmp_path / "store", 1, tmp_path / "serve.log", workers=0)
    service.start()
    with pytest.raises(demo_serve.ServiceError, match="exited with code 2"):
        service.wait_ready(timeout=60)


def test_waiting_for_the_service_wakes_when_another_thread_takes_the_interrupt():
    """The kernel may deliver Ctrl-C to any thread; a blocking wait must still return."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    bystander = threading.Thread(target=time.sleep, args=(3,), daemon=True)
    bystander.start()
    threading.Timer(0.3, signal.pthread_kill, (bystander.ident, signal.SIGINT)).start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            demo_serve.wait_interruptibly(proc, poll_seconds=0.1)
        assert time.monotonic() - started < 10
        assert proc.poll() is None  # interrupted the wait, not the child
    finally:
        signal.signal(signal.SIGINT, previous)
        proc.kill()
        proc.wait()
