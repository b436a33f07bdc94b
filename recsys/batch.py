"""`recsys score`: batch scoring with a SavedModel, streaming, resumable, into Parquet parts.

The job is cut into numbered parts (see `recsys.batch_tasks`): part `i` always covers the same
input units, so a run that was killed and is started again with the same arguments scores only
the parts that are missing. The output folder holds

    part-00000.parquet, part-00001.parquet, ...   one per part, written to a hidden temporary
                                                  name and renamed into place when complete
    _manifest.json                                the job (model, inputs, options), the plan
                                                  and the finished parts, replaced atomically

so `pandas.read_parquet(out)` reads every row (files starting with "_" or "." are skipped).
A second run with different arguments into the same folder is refused, and so is a second run
while one is writing to it. Inputs are read in chunks and one part is scored while the next is
read and the previous is written, so memory is flat in the input's length.

Example:
>>> Progress.format_line(250, 1000, 50.0, 5.0)
' 25% 250/1,000 rows | 50 rows/s | ETA 0:00:05'
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime
import hashlib
import json
import logging
import os
import pathlib
import shutil
import sys
import threading
import time

from recsys import schema, store

logger = logging.getLogger(__name__)

MANIFEST = "_manifest.json"
STAGING = "_staging"
FORMAT = "recsys-score-1"
_LOCK = ".lock"


@dataclasses.dataclass(frozen=True)
class Request:
    """A `recsys score` invocation.

    Args:
        model: str. `saved_models/<name>` (newest version) or `saved_models/<name>/<version>`.
        out: str. The output folder.
        inputs: dict. "users", "catalog", "candidates" -> path or None.
        options: `recsys.batch_tasks.Options`.
        given: frozenset of str. The inputs and options named on the command line.
        runner: str. "local" or "beam".
        beam_args: tuple of str. Pipeline options for Beam (after `--`).
        progress: bool. Draw a progress bar on stderr.
    """

    model: str
    out: str
    inputs: dict
    options: object  # recsys.batch_tasks.Options
    given: frozenset = frozenset()
    runner: str = "local"
    beam_args: tuple = ()
    progress: bool = True


def _error(message):
    """A `TaskError` (a `DataError`: the CLI exits with 2). `batch_tasks` imports pyarrow,
    so it is imported only when needed, keeping `recsys --help` fast."""
    from recsys.batch_tasks import TaskError

    return TaskError(message)


def request_from_args(args) -> Request:
    """The `Request` of parsed `recsys score` arguments (see `add_parser`)."""
    from recsys.batch_tasks import Options

    inputs = {"users": args.users, "catalog": args.catalog, "candidates": args.candidates}
    options = Options(
        k=args.k if args.k is not None else Options.k,
        text_columns=tuple(args.text_column or ()),
        id_column=args.id_column,
        drop_unknown=args.drop_unknown,
        all_probabilities=args.all_probabilities,
        part_rows=args.part_rows,
        batch_size=args.batch_size,
    )
    given = {name for name, path in inputs.items() if path}
    given |= {
        name
        for name, on in (
            ("k", args.k is not None),
            ("text_columns", bool(args.text_column)),
            ("id_column", args.id_column is not None),
            ("all_probabilities", args.all_probabilities),
            ("drop_unknown", args.drop_unknown),
        )
        if on
    }
    beam_args = tuple(a for a in args.beam_args if a != "--")
    if beam_args and args.runner != "beam":
        raise _error(f"Unexpected arguments {list(beam_args)}: Beam options need --runner beam.")
    return Request(
        model=args.model,
        out=args.out,
        inputs=inputs,
        options=options,
        given=frozenset(given),
        runner=args.runner,
        beam_args=beam_args,
        progress=not args.no_progress,
    )


def add_parser(sub):
    """Adds `recsys score` to the CLI's subparsers."""
    score = sub.add_parser(
        "score",
        help="score a whole catalog or user base with a model, into Parquet parts",
        description="Batch scoring. buy_probability: --users (with --catalog for all pairs, or "
        "--candidates); ranking: --users --k; text_classification: --catalog (any table with a "
        "text column). Killed runs resume where they stopped when started again.",
    )
    score.add_argument("--model", required=True, help="saved_models/<name>[/<version>]")
    score.add_argument("--out", required=True, help="output folder (Parquet parts + manifest)")
    score.add_argument(
        "--users", help="users table (user_id, history) or events table to build histories from"
    )
    score.add_argument("--catalog", help="catalog (buy: products to score; classifier: the input)")
    score.add_argument("--candidates", help="buy: table of (user_id, product_id) pairs")
    score.add_argument("--k", type=int, default=None, help="ranking: products per user (10)")
    score.add_argument(
        "--text-column",
        action="append",
        metavar="COLUMN",
        help="classifier: text column (repeatable; joined with '. ')",
    )
    score.add_argument("--id-column", help="classifier: column copied to the output")
    score.add_argument(
        "--all-probabilities",
        action="store_true",
        help="classifier: also write every label's probability",
    )
    score.add_argument(
        "--drop-unknown",
        action="store_true",
        help="skip product ids the model does not know instead of refusing the input",
    )
    score.add_argument("--part-rows", type=int, default=100_000, help="rows per part file")
    score.add_argument("--batch-size", type=int, default=256, help="rows per model call")
    score.add_argument("--runner", choices=["local", "beam"], default="local")
    score.add_argument("--no-progress", action="store_true", help="no progress bar")
    score.add_argument(
        "beam_args",
        nargs="*",
        metavar="-- BEAM_OPTION",
        help="with --runner beam: pipeline options after --, e.g. -- --runner=DataflowRunner",
    )
    return score


# -- the job and its manifest ------------------------------------------------------------------


def _file_identity(path) -> dict:
    try:
        stat = pathlib.Path(path).stat()
    except OSError as e:
        from recsys.data.errors import DataError

        raise DataError(f"file not found ({e.strerror})", path=str(path)) from None
    return {
        "path": str(pathlib.Path(path).resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }


def job_identity(request, model_dir, task) -> dict:
    """What makes two runs the same job: the model, the inputs and the options.

    Files are identified by path, size and modification time; `batch_size` is left out (it
    does not change which rows a part holds).
    """
    card = pathlib.Path(model_dir) / schema.MODEL_CARD
    saved_model = pathlib.Path(model_dir) / "saved_model.pb"
    model = {
        "path": str(pathlib.Path(model_dir).resolve()),
        "task": task,
        "card_sha256": hashlib.sha256(card.read_bytes()).hexdigest(),
        "saved_model": _file_identity(saved_model) if saved_model.is_file() else None,
    }
    inputs = {name: _file_identity(path) for name, path in request.inputs.items() if path}
    options = {k: v for k, v in dataclasses.asdict(request.options).items() if k != "batch_size"}
    options["text_columns"] = list(options["text_columns"])
    return {"model": model, "inputs": inputs, "options": options, "runner": request.runner}


def _differences(old, new, prefix=""):
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


def read_manifest(out):
    path = pathlib.Path(out) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise _error(f"{path} is unreadable ({e}); delete the folder to start over.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _error(f"{path} is not a recsys score manifest; use another --out.")
    return manifest


def check_out(out, job):
    """Refuses an output folder that holds another job (or anything else); returns its manifest.

    Raises:
        TaskError: naming what differs.
    """
    out = pathlib.Path(out)
    if out.exists() and not out.is_dir():
        raise _error(f"--out {out} is a file; expected a folder.")
    manifest = read_manifest(out) if out.is_dir() else None
    if manifest is None:
        if out.is_dir() and any(p.name != _LOCK for p in out.iterdir()):
            raise _error(
                f"--out {out} is not empty and holds no {MANIFEST}: use a new or empty folder."
            )
        return None
    differ = _differences(manifest.get("job"), job)
    if differ:
        raise _error(
            f"--out {out} holds the output of a different job (differs in: {', '.join(differ)}). "
            "Start it again with the same arguments to resume it, or use another --out."
        )
    return manifest


def write_json_atomic(path, data):
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def new_manifest(job, task, runner) -> dict:
    plan = task.plan
    return {
        "format": FORMAT,
        "job": job,
        "runner": runner,
        "mode": plan.mode,
        "plan": {
            "units": plan.units,
            "units_per_part": plan.units_per_part,
            "num_parts": plan.num_parts,
            "expected_rows": plan.expected_rows,
        },
        "schema": {f.name: str(f.type) for f in task.schema},
        "parts": {},
        "complete": False,
        "created_at": _now(),
    }


def _now():
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


@contextlib.contextmanager
def locked(out):
    """An exclusive lock on the output folder (released when the process dies)."""
    import fcntl

    handle = open(pathlib.Path(out) / _LOCK, "a")  # noqa: SIM115  (held for the whole run)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _error(f"Another `recsys score` is writing to {out}.") from None
        yield
    finally:
        handle.close()


# -- progress ------------------------------------------------------------------------------------


class Progress:
    """A progress line on stderr: percent, rows, rows/s and ETA (redrawn in place on a TTY,
    a log-style line every 10 s otherwise)."""

    def __init__(self, total, done=0, enabled=True, stream=None):
        self.total, self.done, self.enabled = int(total), int(done), enabled
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.scored = 0
        self.start = self._last = time.monotonic()
        self._lock = threading.Lock()

    @staticmethod
    def format_line(done, total, rate, eta):
        percent = 100.0 * done / total if total else 100.0
        eta_text = str(datetime.timedelta(seconds=round(eta))) if eta is not None else "?"
        return f"{percent:3.0f}% {done:,}/{total:,} rows | {rate:,.0f} rows/s | ETA {eta_text}"

    def update(self, rows):
        with self._lock:
            self.done += rows
            self.scored += rows
            now = time.monotonic()
            if self.enabled and now - self._last >= (0.5 if self.tty else 10.0):
                self._last = now
                self._draw(now)

    def _draw(self, now, end="\r"):
        elapsed = max(now - self.start, 1e-9)
        rate = self.scored / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else None
        line = "scoring " + self.format_line(self.done, self.total, rate, eta)
        self.stream.write(line + (end if self.tty else "\n"))
        self.stream.flush()

    def close(self):
        if self.enabled:
            self._draw(time.monotonic(), end="\n")


# -- the command ---------------------------------------------------------------------------------


def run(request: Request) -> int:
    """Runs `recsys score`; returns the exit code (bad input raises a `DataError`)."""
    try:
        model_dir = store.resolve_path(request.model)
        card = store.read_card(model_dir)
    except store.StoreError as e:
        raise _error(str(e)) from None
    from recsys import batch_tasks

    task_name = card.get("task")
    batch_tasks.check_flags(task_name, request.given, model_dir)
    if request.runner == "beam":
        from recsys import batch_beam

        batch_beam.import_beam()  # or say how to install it, before reading anything
    out = pathlib.Path(request.out)
    job = job_identity(request, model_dir, task_name)
    manifest = check_out(out, job)
    if manifest and manifest.get("complete"):
        _print_summary(manifest["summary"], already=True)
        return 0
    task, stage = batch_tasks.plan_task(
        card, model_dir, request.inputs, request.options, out / STAGING
    )
    logger.info(
        "Planned %s: %d rows in %d part(s) of %d %s",
        task.plan.mode,
        task.plan.expected_rows,
        task.plan.num_parts,
        task.plan.units_per_part,
        "pairs" if task.plan.mode.startswith("buy") else "units",
    )
    if request.runner == "local":  # (Beam workers load the model themselves)
        task.load()  # a model that cannot score is refused before the output folder is touched
    out.mkdir(parents=True, exist_ok=True)
    with locked(out):
        manifest = check_out(out, job) or new_manifest(job, task, request.runner)
        write_json_atomic(out / MANIFEST, manifest)  # first: a killed run can always resume
        if stage is not None:
            stage()
        if request.runner == "beam":
            from recsys import batch_beam

            summary = batch_beam.run(task, out, manifest, request.beam_args)
        else:
            summary = LocalRunner(task, out, manifest, request.progress).run()
        shutil.rmtree(out / STAGING, ignore_errors=True)  # histories built from events
    _print_summary(summary)
    return 0


def _print_summary(summary, already=False):
    resumed = summary.get("resumed_parts") or 0
    note = f", {resumed} part(s) from an earlier run" if resumed else ""
    if already:
        print(f"Nothing to do: {summary['output']} is complete ({summary['rows']:,} rows).")
        return
    print(
        f"Scored {summary['rows']:,} rows in {summary['parts']} part(s){note}: "
        f"{summary['scored_rows']:,} rows in {summary['seconds']:.1f} s "
        f"({summary['rows_per_second']:,.0f} rows/s) -> {summary['output']}"
    )


def part_name(part) -> str:
    return f"part-{part:05d}.parquet"


class LocalRunner:
    """Scores the missing parts in order: part `i + 1` is read while part `i` is scored, and
    part `i - 1` is written meanwhile (one write in flight)."""

    def __init__(self, task, out, manifest, progress=True):
        self.task, self.out, self.manifest = task, pathlib.Path(out), manifest
        self.progress = progress
        self._lock = threading.Lock()

    def _save(self):
        write_json_atomic(self.out / MANIFEST, self.manifest)

    def finished_parts(self) -> dict:
        """Parts in the manifest, plus part files renamed into place just before a kill."""
        import pyarrow.parquet as pq

        for stale in self.out.glob(".part-*.tmp"):
            stale.unlink()
        parts = self.manifest["parts"]
        for part in range(self.task.plan.num_parts):
            path = self.out / part_name(part)
            if str(part) in parts:
                if not path.is_file():
                    raise _error(f"{path} is listed in {MANIFEST} but missing; delete --out.")
                continue
            if path.is_file():
                try:
                    parts[str(part)] = {"file": path.name, "rows": pq.read_metadata(path).num_rows}
                except OSError:  # cannot happen after an atomic rename; redo it anyway
                    path.unlink()
        return parts

    def _write(self, part, table):
        import pyarrow.parquet as pq

        path = self.out / part_name(part)
        tmp = self.out / f".{path.name}.{os.getpid()}.tmp"
        pq.write_table(table, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        with self._lock:
            self.manifest["parts"][str(part)] = {"file": path.name, "rows": table.num_rows}
            self._save()

    def run(self) -> dict:
        plan = self.task.plan
        parts = self.finished_parts()
        self._save()
        todo = [p for p in range(plan.num_parts) if str(p) not in parts]
        resumed = plan.num_parts - len(todo)
        if resumed:
            logger.info("Resuming: %d of %d part(s) are done", resumed, plan.num_parts)
        done_rows = sum(p["rows"] for p in parts.values())
        bar = Progress(max(plan.expected_rows, done_rows), done_rows, enabled=self.progress)
        self.task.on_rows = bar.update
        start, cpu_start = time.monotonic(), time.process_time()
        with (
            concurrent.futures.ThreadPoolExecutor(1, "recsys-score-read") as reader,
            concurrent.futures.ThreadPoolExecutor(1, "recsys-score-write") as writer,
        ):
            upcoming = reader.submit(self.task.elements, todo[0]) if todo else None
            writing = None
            for n, part in enumerate(todo):
                elements = upcoming.result()
                if n + 1 < len(todo):
                    upcoming = reader.submit(self.task.elements, todo[n + 1])
                table = self.task.score(elements)
                if writing is not None:
                    writing.result()
                writing = writer.submit(self._write, part, table)
            if writing is not None:
                writing.result()
        seconds, cpu_seconds = time.monotonic() - start, time.process_time() - cpu_start
        bar.close()
        total = sum(p["rows"] for p in self.manifest["parts"].values())
        summary = {
            "rows": total,
            "parts": plan.num_parts,
            "resumed_parts": resumed,
            "scored_rows": bar.scored,
            "seconds": round(seconds, 3),
            "rows_per_second": round(bar.scored / seconds, 1) if seconds > 0 else 0.0,
            "cpu_seconds": round(cpu_seconds, 3),  # all threads of this process
            "output": str(self.out),
            "finished_at": _now(),
        }
        self.manifest.update(complete=True, summary=summary)
        self._save()
        logger.info("Scored %d rows (%d this run) in %.1f s", total, bar.scored, seconds)
        return summary
