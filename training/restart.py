"""What a restarted `recsys train` may skip: the fit once it finished, the publish once it landed.

`BackupAndRestore` resumes a run killed during `fit`, but Keras deletes that backup when `fit`
ends. A run killed later (evaluating, exporting, publishing) would then train from scratch and
could publish a second version. `RunState` closes those windows for one-process runs:

- the run gets an id (`run_dir/run_id`), written into the model card of the version it publishes;
  a restart that finds a version with its id is done and publishes nothing;
- when `fit` ends, the trained weights and the fit's summary go to `run_dir/fitted/`; a restart
  loads them instead of training again;
- after publishing, both are removed, so the next run in the same folder starts afresh.

>>> import pathlib, tempfile
>>> state = RunState(pathlib.Path(tempfile.mkdtemp()))
>>> state.run_id, state.fitted(), state._new_id() == RunState(state.run_dir).run_id
(None, None, True)
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import shutil
import uuid

logger = logging.getLogger("training.restart")

FITTED = "fitted"
WEIGHTS = "model.weights.h5"
SUMMARY = "fit.json"


class RunState:
    """The restart state of one run folder (see the module docstring)."""

    def __init__(self, run_dir):
        self.run_dir = pathlib.Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / "run_id"
        self.run_id = path.read_text().strip() if path.is_file() else None

    def _new_id(self):
        """Gives the run its id once it has something to keep (a run that fails on its
        input leaves nothing behind)."""
        if self.run_id is None:
            tmp = self.run_dir / f".run_id.{os.getpid()}.tmp"
            tmp.write_text(uuid.uuid4().hex)
            os.replace(tmp, self.run_dir / "run_id")
            self.run_id = (self.run_dir / "run_id").read_text().strip()
        return self.run_id

    def published(self, store_root, name):
        """The version directory this run already published under `name`, or None."""
        from recsys import store

        folder = pathlib.Path(store_root) / name
        if self.run_id is None or not folder.is_dir():
            return None
        for version in store.versions(store_root, name):
            try:
                card = store.read_card(folder / str(version))
            except store.StoreError:
                continue
            if card.get("run_id") == self.run_id:
                return folder / str(version)
        return None

    def save_fitted(self, model, summary):
        """Keeps the trained weights and the fit's summary (history, epochs, seconds)."""
        self._new_id()
        target = self.run_dir / FITTED
        tmp = self.run_dir / f".{FITTED}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        model.save_weights(str(tmp / WEIGHTS))
        (tmp / SUMMARY).write_text(json.dumps(summary, default=float))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)

    def fitted(self):
        """The saved fit summary, or None when no finished fit is kept."""
        path = self.run_dir / FITTED / SUMMARY
        return json.loads(path.read_text()) if path.is_file() else None

    def load_fitted(self, model, build_data):
        """Loads the kept weights into `model` (built first on one batch of `build_data`)."""
        if not model.built:
            model.evaluate(build_data.take(1), verbose=0)
        model.load_weights(str(self.run_dir / FITTED / WEIGHTS))
        logger.info("Loaded the weights of the finished fit from %s", self.run_dir / FITTED)

    def finish(self):
        """Forgets the run: the next run in this folder trains and publishes anew."""
        (self.run_dir / FITTED / SUMMARY).unlink(missing_ok=True)  # the marker goes first
        shutil.rmtree(self.run_dir / FITTED, ignore_errors=True)
        (self.run_dir / "run_id").unlink(missing_ok=True)
        self.run_id = None
