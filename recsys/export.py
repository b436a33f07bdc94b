"""SavedModel export with raw-string signatures, and the model card.

Every exported model takes raw strings and ids: tokenisation, packing and id lookups run inside
the graph, so serving and batch scoring need only TensorFlow and `tensorflow_text`.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import pathlib
import subprocess

import numpy as np
import tensorflow as tf

from recsys import schema

logger = logging.getLogger(__name__)


def fingerprint(frame) -> str:
    """A short, stable hash of a DataFrame's contents (the training data fingerprint).

    >>> import pandas as pd
    >>> fingerprint(pd.DataFrame({"a": [1, 2]})) == fingerprint(pd.DataFrame({"a": [1, 2]}))
    True
    """
    import pandas as pd

    digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=pathlib.Path(__file__).parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def write_model_card(export_dir, card: dict) -> dict:
    """Writes `model_card.json`, adding `created_at` and the git commit."""
    card = {
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        **card,
    }
    path = pathlib.Path(export_dir) / schema.MODEL_CARD
    path.write_text(json.dumps(card, indent=2, sort_keys=True, default=_json_default))
    return card


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def embed_texts(encode, texts, batch_size=256):
    """Runs `encode(tf.string batch) -> [B, D]` over `texts` in batches; returns float32 numpy."""
    chunks = []
    for start in range(0, len(texts), batch_size):
        chunks.append(np.asarray(encode(tf.constant(texts[start : start + batch_size]))))
    return np.concatenate(chunks, axis=0).astype("float32")


def string_table(keys, values, default):
    """A static hash table from string keys to values, tracked in the SavedModel."""
    initializer = tf.lookup.KeyValueTensorInitializer(
        tf.constant(list(keys), tf.string), tf.constant(values)
    )
    return tf.lookup.StaticHashTable(initializer, default_value=default)
