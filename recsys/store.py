"""The versioned model store: `<root>/<name>/<version>/` with a SavedModel and its model card.

Versions are positive integers, as TensorFlow Serving expects. A version is written into a
hidden temporary directory and renamed into place, so a reader never sees half a model.

Example:
>>> import pathlib, tempfile
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> path = publish(root, "buy", lambda d: (d / "model_card.json").write_text('{"task": "x"}'))
>>> path.name, list_models(root)
('1', {'buy': [1]})
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import re
import shutil
import socket
import uuid

from recsys.schema import MODEL_CARD

logger = logging.getLogger(__name__)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class StoreError(ValueError):
    """A model or version is missing from the store, or a name is invalid."""


def check_name(name) -> str:
    """Returns `name` if it is a valid model name (no path separators or dots first)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise StoreError(
            f"Invalid model name {name!r}: use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit."
        )
    return name


def versions(root, name) -> list[int]:
    """The published versions of a model, ascending."""
    folder = pathlib.Path(root) / check_name(name)
    if not folder.is_dir():
        return []
    return sorted(
        int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0
    )


def list_models(root) -> dict:
    """Maps each model name in the store to its versions."""
    root = pathlib.Path(root)
    if not root.is_dir():
        return {}
    out = {}
    for folder in sorted(root.iterdir()):
        if folder.is_dir() and _NAME.match(folder.name):
            found = versions(root, folder.name)
            if found:
                out[folder.name] = found
    return out


def resolve(root, name, version=None) -> pathlib.Path:
    """The directory of a version (the newest when `version` is None).

    Raises:
        StoreError: unknown model or version.
    """
    found = versions(root, name)
    if not found:
        raise StoreError(
            f"No model {name!r} in the store {root}; known: {sorted(list_models(root))}."
        )
    if version is None:
        version = found[-1]
    if not str(version).isdecimal():
        raise StoreError(f"A version is a positive integer. Received: {version!r}.")
    if int(version) not in found:
        raise StoreError(f"Model {name!r} has no version {version}; versions: {found}.")
    return pathlib.Path(root) / name / str(int(version))


def resolve_path(path) -> pathlib.Path:
    """A model given as `store/<name>` (newest version) or `store/<name>/<version>`."""
    path = pathlib.Path(path)
    if (path / MODEL_CARD).is_file():
        return path
    if path.is_dir():
        found = [
            int(p.name) for p in path.iterdir() if p.name.isdigit() and (p / MODEL_CARD).is_file()
        ]
        if found:
            return path / str(max(found))
    raise StoreError(
        f"{path} is not a model: expected saved_models/<name> or saved_models/<name>/<version> "
        f"holding {MODEL_CARD}."
    )


def read_card(version_dir) -> dict:
    path = pathlib.Path(version_dir) / MODEL_CARD
    try:
        card = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreError(f"Unreadable model card {path}: {e}") from None
    if not isinstance(card, dict):
        raise StoreError(f"Unreadable model card {path}: expected a JSON object.")
    return card


def remove_stale_tmp(folder) -> list[str]:
    """Removes the half-written versions (`.tmp-<host>-<pid>-*`) of writers on this host that
    are gone (killed while publishing); returns their names. Writers on other hosts sharing
    the store are left alone.

    >>> import tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> (folder / f".tmp-{socket.gethostname()}-999999999-x").mkdir()
    >>> remove_stale_tmp(folder), list(folder.iterdir())
    (['.tmp-...-999999999-x'], [])
    """
    removed = []
    prefix = f".tmp-{socket.gethostname()}-"
    for path in pathlib.Path(folder).glob(".tmp-*"):
        pid = path.name[len(prefix) :].split("-", 1)[0] if path.name.startswith(prefix) else ""
        if not pid.isdigit() or _alive(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name.replace(socket.gethostname(), "...", 1))
        logger.warning("Removed %s, left by a writer that is gone", path)
    return removed


def _alive(pid) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def publish(root, name, write) -> pathlib.Path:
    """Writes a new version with `write(tmp_dir)` and renames it into place atomically.

    Returns:
        The new version's directory.
    """
    folder = pathlib.Path(root) / check_name(name)
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(folder)
    tmp = folder / f".tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        write(tmp)
        while True:
            found = versions(root, name)
            target = folder / str((found[-1] if found else 0) + 1)
            try:
                os.rename(tmp, target)  # fails if target exists: another writer won the race
                break
            except OSError:
                if not target.exists():
                    raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("Published %s version %s at %s", name, target.name, target)
    return target


def print_models(root) -> int:
    """`recsys models`: one line per version with its task and headline metrics."""
    models = list_models(root)
    if not models:
        print(f"No models in {root}. Train one with: recsys train training/configs/buy_demo.yaml")
        return 0
    print(f"{'name':<20} {'version':>7}  {'task':<20} {'created':<20} metrics")
    for name, found in models.items():
        for version in found:
            try:
                card = read_card(pathlib.Path(root) / name / str(version))
            except StoreError as e:
                print(f"{name:<20} {version:>7}  (unreadable card: {e})")
                continue
            headline = card.get("headline_metrics")
            metrics = ", ".join(
                f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                for k, v in (headline.items() if isinstance(headline, dict) else ())
            )
            created = str(card.get("created_at") or "")[:19]
            task = str(card.get("task") or "?")
            print(f"{name:<20} {version:>7}  {task:<20} {created:<20} {metrics}")
    return 0
