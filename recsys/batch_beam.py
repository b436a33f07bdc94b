"""`recsys score --runner beam`: the same job as an Apache Beam pipeline.

    part numbers ─ Reshuffle ─ read each part's work items ─ RunInference ─ WriteToParquet

The parts and their work items are those of the local runner (`recsys.batch_tasks`), and
`RunInference` scores them with the same task code through `SavedModelHandler`, a model
handler that loads the SavedModel once per worker with `tf.saved_model.load` (Beam's own
TensorFlow handlers load models with `tf.keras`, which under Keras 3 cannot read a
SavedModel). So both runners write the same rows; Beam's output files are
`beam-part-SSSSS-of-NNNNN.parquet` in the output folder, beside `_manifest.json`.

Pipeline options after `--` pass through to Beam (`-- --runner=DataflowRunner --project=...`,
Flink or Spark runners); without them Beam's `FnApiRunner` runs the job on this machine. The
inputs, the model and the output folder must be paths every worker can read and write. A Beam
job is not resumed part by part: started again, it runs whole (its sink writes files only at
the end).

Apache Beam is an optional dependency: `pip install -e .[beam]`.
"""

from __future__ import annotations

import logging
import pathlib
import shutil
import time

logger = logging.getLogger(__name__)

OUTPUT_PREFIX = "beam-part"
_ITEMS_PER_CALL = {"buy_pairs": 4, "buy_candidates": 16}  # work items of the buy model are users


def import_beam():
    """Imports `apache_beam`, or says how to install it."""
    try:
        import apache_beam
    except ImportError:
        from recsys.batch_tasks import TaskError

        raise TaskError(
            "--runner beam needs Apache Beam, an optional dependency: pip install -e '.[beam]'"
        ) from None
    return apache_beam


def transforms(task):
    """The pipeline's DoFn and model handler for `task` (defined here so that importing this
    module does not need Beam)."""
    beam = import_beam()
    from apache_beam.ml.inference.base import ModelHandler

    class ReadPart(beam.DoFn):
        """Part number -> the part's work items (the input cursors open once per worker)."""

        def __init__(self, task):
            self.task = task

        def process(self, part):
            yield from self.task.elements(part)

    class SavedModelHandler(ModelHandler):
        """Loads the SavedModel once per worker; scores a batch of work items into rows."""

        def __init__(self, task):
            size = _ITEMS_PER_CALL.get(task.plan.mode, task.plan.options.batch_size)
            super().__init__(min_batch_size=1, max_batch_size=size)
            self.task = task

        def load_model(self):
            return self.task.load()

        def run_inference(self, batch, model, inference_args=None):
            return model.score(list(batch)).to_pylist()

        def get_metrics_namespace(self):
            return "recsys_score"

    return ReadPart(task), SavedModelHandler(task)


LOCAL_RUNNER = "FnApiRunner"


def pipeline_options(beam_args):
    """Beam's options from the arguments after `--`; `LOCAL_RUNNER` when none names a runner.

    The default is the runner Beam's DirectRunner itself falls back to for batch jobs. Named
    outright, it runs without the DirectRunner's first try of the Prism runner, which fetches a
    binary from GitHub on first use (a failed or hanging fetch on an offline machine, and an
    empty `beam-temp*` folder left in the temporary directory each run). For example,
    `pipeline_options([])` runs on `FnApiRunner`, `pipeline_options(["--runner=PrismRunner"])`
    on Prism (not a doctest: Beam is an optional extra).
    """
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    options = PipelineOptions(list(beam_args))
    if not options.view_as(StandardOptions).runner:
        options.view_as(StandardOptions).runner = LOCAL_RUNNER
    return options


def run(task, out, manifest, beam_args) -> dict:
    """Runs the job as a Beam pipeline into `out`; returns the summary (also in the manifest).

    Args:
        task: a planned `recsys.batch_tasks.BatchTask`.
        out: path. The output folder (locked by the caller).
        manifest: dict. The job's manifest (written here).
        beam_args: sequence of str. Pipeline options.
    """
    beam = import_beam()
    import pyarrow.parquet as pq
    from apache_beam.ml.inference.base import RunInference

    from recsys.batch import MANIFEST, write_json_atomic

    out = pathlib.Path(out)
    for old in out.glob(f"{OUTPUT_PREFIX}-*"):  # an earlier, unfinished run of this job
        old.unlink()
    for old in out.glob(f"beam-temp-{OUTPUT_PREFIX}-*"):  # its sink's temporary files
        shutil.rmtree(old, ignore_errors=True)
    write_json_atomic(out / MANIFEST, manifest)
    read_part, handler = transforms(task)
    options = pipeline_options(beam_args)
    logger.info("Running %d part(s) on Beam (%s)", task.plan.num_parts, " ".join(beam_args))
    start = time.monotonic()
    with beam.Pipeline(options=options) as pipeline:
        _ = (
            pipeline
            | "Parts" >> beam.Create(list(range(task.plan.num_parts)))
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(read_part)
            | "Score" >> RunInference(handler)
            | "Write"
            >> beam.io.WriteToParquet(
                str(out / OUTPUT_PREFIX), task.schema, file_name_suffix=".parquet"
            )
        )
    seconds = time.monotonic() - start
    files = sorted(out.glob(f"{OUTPUT_PREFIX}-*.parquet"))
    rows = sum(pq.read_metadata(f).num_rows for f in files)
    summary = {
        "rows": rows,
        "parts": task.plan.num_parts,
        "resumed_parts": 0,
        "scored_rows": rows,
        "seconds": round(seconds, 3),
        "rows_per_second": round(rows / seconds, 1) if seconds > 0 else 0.0,
        "output": str(out),
        "files": [f.name for f in files],
    }
    manifest.update(complete=True, summary=summary)
    write_json_atomic(out / MANIFEST, manifest)
    return summary
