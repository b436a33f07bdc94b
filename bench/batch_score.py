"""Batch scoring: `recsys score` against a plain loop over the SavedModel, and peak memory.

    python bench/batch_score.py --make-model bench_out/batch      # once: a random-BERT classifier
    nice -n 10 python bench/batch_score.py --dir bench_out/batch [--rows 100000] [--rounds 2]
        [--memory-rows 100000,1000000] [--control] [--batch-size 256] [--markdown]

1. `--make-model DIR` publishes `DIR/store/classifier/1`: the text-classification export
   (`recsys.tasks.text_classification_export`, the `classify` signature) of a randomly
   initialised 2-layer BERT (hidden size 32, character vocabulary, 32 tokens) with 8 labels.
   Speed and memory do not depend on the weights. `--model` scores another model instead.
2. Inputs: `rows-N.parquet` holds N generated product titles (`product_id`, `title`, row
   groups of 65,536 rows).
3. Throughput on `--rows` rows, each run in a fresh process, alternating (and alternating which
   goes first), `--rounds` times; with `--in-process`, both alternate in this one process
   (`recsys score` through `recsys.cli.main`), so that both see the same machine load:
   - loop: load the SavedModel, read the titles into a Python list, warm up with one call, then
     call `classify` on consecutive batches of `--batch-size` titles and fetch the outputs
     (`.numpy()`), nothing else; rows/s of that loop;
   - recsys score: `python -m recsys.cli score --model M --catalog rows-N.parquet --out ...`
     with the same batch size; rows/s of its scoring phase (the summary it prints: reading,
     scoring, writing Parquet parts and the manifest; model loading and the validation pass
     before it are not counted, as the loop does not count loading), and its wall time.
   The ratio is the median recsys rows/s over the median loop rows/s; on a shared machine the
   wall clock is noisy, so rows per CPU-second (user + system time of the process, all
   threads, over the same phase) are compared too.
4. Peak memory: `recsys score` on each size of `--memory-rows`, peak RSS of the process
   (`ru_maxrss` from `wait4`); with `--control`, also a plain loop that streams the same file
   batch by batch (what the model and TensorFlow alone use).
Prints JSON (and Markdown tables with --markdown).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LABELS = [f"category_{i}" for i in range(8)]
_WORDS = (
    "red blue green black white linen wool cotton leather trail running desk lamp mug shirt "
    "boot sneaker jacket scarf kettle chair table pillow candle backpack wallet watch hat sock "
    "dress skirt cap glove ceramic steel oak walnut classic modern slim cozy waterproof"
).split()


def make_model(folder):
    """Publishes the random-BERT classifier into `folder/store`; returns its version dir."""
    import keras

    from recsys import store
    from recsys.backbones import resolve
    from recsys.export import write_model_card
    from recsys.tasks import text_classification as tc
    from recsys.tasks import text_classification_export

    keras.utils.set_random_seed(0)
    spec = {"family": "bert", "num_layers": 2, "num_heads": 2, "hidden_dim": 32}
    backbone, text_pre = resolve({**spec, "intermediate_dim": 64}, sequence_length=32)
    pre = tc.TextClassificationPreprocessor(text_pre.tokenizer, 32)
    model = tc.build_model(backbone, len(LABELS))
    model(pre(["warm up"]))

    def write(tmp):
        signatures = text_classification_export.export(model, pre, LABELS, tmp)
        write_model_card(
            tmp,
            {
                "name": "classifier",
                "task": "text_classification",
                "backbone": spec,
                "signatures": signatures,
                "labels": LABELS,
                "multi_label": False,
            },
        )

    return store.publish(pathlib.Path(folder) / "store", "classifier", write)


def make_rows(path, rows, seed=0):
    """`rows` product titles of 3-6 words, as Parquet with row groups of 65,536 rows."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = pathlib.Path(path)
    if path.is_file():
        return path
    rng = np.random.default_rng(seed)
    words = np.asarray(_WORDS, dtype=object)
    tmp = path.with_suffix(".tmp")
    schema = pa.schema([("product_id", pa.string()), ("title", pa.string())])
    with pq.ParquetWriter(tmp, schema) as writer:
        for start in range(0, rows, 65_536):
            n = min(65_536, rows - start)
            lengths = rng.integers(3, 7, size=n)
            picks = rng.integers(0, len(words), size=(n, 6))
            titles = [" ".join(words[p[:k]]) for p, k in zip(picks, lengths, strict=True)]
            ids = [f"P{i:08d}" for i in range(start, start + n)]
            writer.write_table(pa.table({"product_id": ids, "title": titles}, schema=schema))
    tmp.replace(path)
    return path


def plain_loop(model, path, batch_size, stream=False):
    """Child process: the loop over the SavedModel; prints JSON.

    With `stream`, titles are read batch by batch from the Parquet file instead of all at
    once (the memory control: nothing but the model grows with the input).
    """
    import pyarrow.parquet as pq
    import tensorflow as tf
    import tensorflow_text  # noqa: F401

    classify = tf.saved_model.load(str(model)).signatures["classify"]
    if stream:
        file = pq.ParquetFile(path)
        batches = (
            b.column("title").to_pylist()
            for b in file.iter_batches(batch_size=batch_size, columns=["title"])
        )
    else:
        titles = pq.read_table(path, columns=["title"]).column("title").to_pylist()
        batches = (titles[i : i + batch_size] for i in range(0, len(titles), batch_size))
    classify(text=tf.constant(["warm up"] * batch_size))
    rows, start, cpu_start = 0, time.perf_counter(), time.process_time()
    for batch in batches:
        out = classify(text=tf.constant(batch))
        out["label"].numpy(), out["probabilities"].numpy()
        rows += len(batch)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    print(json.dumps({"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds,
                      "cpu_seconds": cpu, "rows_per_cpu_s": rows / cpu}))  # fmt: skip


def _run_measured(argv, env):
    """Like `_run`, with the child's own peak RSS (`wait4` before anyone else reaps it)."""
    start = time.perf_counter()
    with open(os.devnull, "w") as null:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=null)
        _, status, usage = os.wait4(proc.pid, 0)
        out = proc.stdout.read().decode()
        proc.stdout.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{argv} exited with {proc.returncode}")
    return out, time.perf_counter() - start, usage.ru_maxrss / 1024.0


def in_process(model, path, out, batch_size, rounds):
    """Loop and `recsys score` alternately in this one process (same scheduling conditions)."""
    import pyarrow.parquet as pq
    import tensorflow as tf
    import tensorflow_text  # noqa: F401

    from recsys.cli import main as cli_main

    classify = tf.saved_model.load(str(model)).signatures["classify"]
    titles = pq.read_table(path, columns=["title"]).column("title").to_pylist()
    classify(text=tf.constant(titles[:batch_size]))
    argv = ["score", "--model", str(model), "--catalog", str(path), "--out", str(out)]
    argv += ["--batch-size", str(batch_size), "--no-progress"]
    loops, scores = [], []
    for n in range(rounds):
        for runner in ("loop", "score") if n % 2 == 0 else ("score", "loop"):
            if runner == "loop":
                start, cpu = time.perf_counter(), time.process_time()
                for i in range(0, len(titles), batch_size):
                    result = classify(text=tf.constant(titles[i : i + batch_size]))
                    result["label"].numpy(), result["probabilities"].numpy()
                seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
                loops.append(
                    {"rows_per_s": len(titles) / seconds, "rows_per_cpu_s": len(titles) / cpu}
                )
            else:
                shutil.rmtree(out, ignore_errors=True)
                with contextlib.redirect_stdout(io.StringIO()):
                    assert cli_main(argv) == 0
                summary = json.loads((pathlib.Path(out) / "_manifest.json").read_text())["summary"]
                scores.append(
                    {
                        "rows_per_s": summary["rows_per_second"],
                        "rows_per_cpu_s": summary["scored_rows"] / summary["cpu_seconds"],
                    }
                )
            print(
                json.dumps({runner: (loops if runner == "loop" else scores)[-1]}), file=sys.stderr
            )
    shutil.rmtree(out, ignore_errors=True)
    return loops, scores


def run_score(model, path, out, batch_size, env):
    shutil.rmtree(out, ignore_errors=True)
    argv = [sys.executable, "-m", "recsys.cli", "score", "--model", str(model), "--catalog"]
    argv += [str(path), "--out", str(out), "--batch-size", str(batch_size), "--no-progress"]
    _, wall, peak_mib = _run_measured(argv, env)
    summary = json.loads((pathlib.Path(out) / "_manifest.json").read_text())["summary"]
    shutil.rmtree(out, ignore_errors=True)
    return {
        "rows": summary["rows"],
        "rows_per_s": summary["rows_per_second"],
        "scoring_s": summary["seconds"],
        "cpu_seconds": summary["cpu_seconds"],
        "rows_per_cpu_s": summary["scored_rows"] / summary["cpu_seconds"],
        "wall_s": wall,
        "peak_rss_mib": peak_mib,
    }


def run_loop(model, path, batch_size, env, stream=False):
    argv = [sys.executable, __file__, "--loop", str(model), str(path), str(batch_size)]
    argv += ["--stream"] if stream else []
    out, wall, peak_mib = _run_measured(argv, env)
    result = json.loads(out.strip().splitlines()[-1])
    return {**result, "wall_s": wall, "peak_rss_mib": peak_mib}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--make-model", metavar="DIR")
    parser.add_argument("--dir", default="bench_out/batch", help="model store and inputs")
    parser.add_argument("--model", help="a model to score with (default: DIR/store/classifier)")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--memory-rows", default="100000,1000000")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="throughput: the loop and `recsys score` (recsys.cli.main) alternately in one process",
    )
    parser.add_argument(
        "--control", action="store_true", help="also the peak RSS of a streaming plain loop"
    )
    parser.add_argument("--loop", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--stream", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.loop:
        return plain_loop(args.loop[0], args.loop[1], int(args.loop[2]), args.stream)
    if args.make_model:
        print(make_model(args.make_model))
        return None
    folder = pathlib.Path(args.dir)
    model = pathlib.Path(args.model or folder / "store" / "classifier")
    if not (model / "saved_model.pb").is_file():
        model = max((p for p in model.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = {"model": str(model), "batch_size": args.batch_size, "cpus": os.cpu_count()}
    result["load_average"] = os.getloadavg()[0]

    path = make_rows(folder / f"rows-{args.rows}.parquet", args.rows)
    if args.in_process:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        loops, scores = in_process(model, path, folder / "out", args.batch_size, args.rounds)
    else:
        loops, scores = [], []
        for n in range(args.rounds):  # alternating which goes first
            for runner in ("loop", "score") if n % 2 == 0 else ("score", "loop"):
                if runner == "loop":
                    loops.append(run_loop(model, path, args.batch_size, env))
                else:
                    scores.append(run_score(model, path, folder / "out", args.batch_size, env))
            print(json.dumps({"loop": loops[-1], "score": scores[-1]}), file=sys.stderr)
    result["throughput_mode"] = "one process" if args.in_process else "a process per run"
    median = statistics.median
    result["throughput"] = {
        "rows": args.rows,
        "loop": loops,
        "score": scores,
        "loop_rows_per_s": median(r["rows_per_s"] for r in loops),
        "score_rows_per_s": median(r["rows_per_s"] for r in scores),
        "loop_rows_per_cpu_s": median(r["rows_per_cpu_s"] for r in loops),
        "score_rows_per_cpu_s": median(r["rows_per_cpu_s"] for r in scores),
    }
    t = result["throughput"]
    t["ratio"] = t["score_rows_per_s"] / t["loop_rows_per_s"]
    t["cpu_ratio"] = t["score_rows_per_cpu_s"] / t["loop_rows_per_cpu_s"]
    memory, control = [], []
    for rows in [int(r) for r in args.memory_rows.split(",") if r]:
        size_path = make_rows(folder / f"rows-{rows}.parquet", rows)
        memory.append(run_score(model, size_path, folder / "out", args.batch_size, env))
        print(json.dumps({"memory": memory[-1]}), file=sys.stderr)
        if args.control:
            control.append(run_loop(model, size_path, args.batch_size, env, stream=True))
            print(json.dumps({"control": control[-1]}), file=sys.stderr)
    result["memory"], result["memory_control"] = memory, control
    result["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(result, indent=2))
    if args.markdown:
        print(markdown(result))
    return result


def _rates(runs):
    return ", ".join(f"{r['rows_per_s']:,.0f}" for r in runs)


def markdown(result) -> str:
    t = result["throughput"]
    lines = [
        "| runner | rows | rows/s, each round | median rows/s | median rows per CPU-second |",
        "| --- | ---: | --- | ---: | ---: |",
        f"| plain loop over `classify` | {t['rows']:,} | {_rates(t['loop'])} | "
        f"{t['loop_rows_per_s']:,.0f} | {t['loop_rows_per_cpu_s']:,.0f} |",
        f"| `recsys score` (local runner) | {t['rows']:,} | {_rates(t['score'])} | "
        f"{t['score_rows_per_s']:,.0f} | {t['score_rows_per_cpu_s']:,.0f} |",
        "",
        f"Ratio `recsys score` / loop: {t['ratio']:.2f} (wall clock), "
        f"{t['cpu_ratio']:.2f} (per CPU-second).",
        "",
        "| process | rows | peak RSS (MiB) | scoring s | wall s | rows/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in result["memory"]:
        lines.append(
            f"| `recsys score` | {m['rows']:,} | {m['peak_rss_mib']:,.0f} | "
            f"{m['scoring_s']:,.1f} | {m['wall_s']:,.1f} | {m['rows_per_s']:,.0f} |"
        )
    for m in result["memory_control"]:
        lines.append(
            f"| streaming plain loop | {m['rows']:,} | {m['peak_rss_mib']:,.0f} | "
            f"{m['seconds']:,.1f} | {m['wall_s']:,.1f} | {m['rows_per_s']:,.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
