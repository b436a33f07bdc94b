"""TensorFlow Serving's REST predict API over any signature of a loaded SavedModel.

Row format: `{"instances": [row, ...]}` -> `{"predictions": [...]}`; each row is a value (one
input) or an object of named inputs, and every input must be batched (first dimension `None`).
Columnar format: `{"inputs": value or {name: value}}` -> `{"outputs": value or {name: value}}`.
`signature_name` picks the signature (default `serving_default`, else the task's own one).
"""

from __future__ import annotations

import logging

from recsys import schema
from serving.errors import ApiError
from serving.tensors import format_shape, to_array, to_json

logger = logging.getLogger(__name__)
TASK_SIGNATURES = {
    "buy_probability": schema.SIGNATURE_SCORE,
    "ranking": schema.SIGNATURE_RECOMMEND,
    "text_classification": schema.SIGNATURE_CLASSIFY,
}


def signature_name(loaded, requested=None) -> str:
    signatures = loaded.module.signatures
    if requested is not None:
        if requested not in signatures:
            raise ApiError(
                400,
                f"Model {loaded.name!r} has no signature {requested!r}; "
                f"it has {sorted(signatures)}.",
                code="unknown_signature",
            )
        return requested
    for name in ("serving_default", TASK_SIGNATURES.get(loaded.task)):
        if name in signatures:
            return name
    if len(signatures) == 1:
        return next(iter(signatures))
    raise ApiError(400, f"Name a `signature_name`; model {loaded.name!r} has {sorted(signatures)}.")


def input_specs(fn) -> dict:
    return dict(fn.structured_input_signature[1])


def describe(module) -> dict:
    """Each signature's inputs and outputs as `{"dtype", "shape"}` (-1 for an unknown size)."""

    def spec(s):
        dims = None if s.shape.rank is None else [-1 if d is None else d for d in s.shape]
        return {"dtype": s.dtype.name, "shape": dims}

    out = {}
    for name, fn in module.signatures.items():
        out[name] = {
            "inputs": {k: spec(v) for k, v in sorted(input_specs(fn).items())},
            "outputs": {k: spec(v) for k, v in sorted(fn.structured_outputs.items())},
        }
    return out


def _named(value, specs, where):
    if not isinstance(value, dict):
        raise ApiError(
            400,
            f"{where} must be an object keyed by input name; the signature takes {sorted(specs)}.",
        )
    if unknown := sorted(set(value) - set(specs)):
        raise ApiError(400, f"Unknown input(s) {unknown} in {where}; inputs: {sorted(specs)}.")
    if missing := sorted(set(specs) - set(value)):
        raise ApiError(400, f"{where} is missing the input(s) {missing}.")
    return value


def _columns(request, specs):
    if request.format == "instances":
        unbatched = [n for n, s in specs.items() if s.shape.rank in (None, 0) or s.shape[0]]
        if unbatched:
            raise ApiError(
                400,
                f"Inputs {sorted(unbatched)} are not batched by row; use the columnar "
                "`inputs` format for this signature.",
            )
        rows = request.data
        if len(specs) == 1:
            (only,) = specs
            values = [r[only] if isinstance(r, dict) and set(r) == {only} else r for r in rows]
            return {only: values}
        rows = [_named(r, specs, f"`instances[{i}]`") for i, r in enumerate(rows)]
        return {n: [r[n] for r in rows] for n in specs}
    data = request.data
    if len(specs) == 1 and not (isinstance(data, dict) and set(data) == set(specs)):
        (only,) = specs
        return {only: data}
    return _named(data, specs, "`inputs`")


def batchable(fn) -> bool:
    """True when every input and output is `[None, fixed...]`: rows of requests can be stacked."""

    def by_row(spec):
        shape = spec.shape
        return bool(shape.rank) and shape[0] is None and None not in shape[1:]

    outputs = fn.structured_outputs
    return all(by_row(s) for s in input_specs(fn).values()) and all(
        by_row(s) for s in (outputs.values() if isinstance(outputs, dict) else [])
    )


def _call(fn, arrays):
    import tensorflow as tf

    specs = input_specs(fn)
    return {
        k: v.numpy()
        for k, v in fn(**{k: tf.constant(a, specs[k].dtype) for k, a in arrays.items()}).items()
    }


def _call_stacked(fn, jobs):
    """One model call over the rows of several requests; each gets its own rows back."""
    import numpy as np

    if len(jobs) == 1:
        return [_call(fn, jobs[0])]
    stacked = {k: np.concatenate([j[k] for j in jobs]) for k in jobs[0]}
    outputs = _call(fn, stacked)
    results, start = [], 0
    for job in jobs:
        rows = len(next(iter(job.values())))
        results.append({k: v[start : start + rows] for k, v in outputs.items()})
        start += rows
    return results


def predict(loaded, request) -> dict:
    """Runs `request` (a `schemas.PredictRequest`) against `loaded` and shapes the response.

    Signatures whose inputs and outputs are all batched by row go through a micro-batcher
    (concurrent requests share one call); the others run directly.
    """
    import tensorflow as tf

    name = signature_name(loaded, request.signature_name)
    fn = loaded.module.signatures[name]
    specs = input_specs(fn)
    columns = _columns(request, specs)
    arrays = {}
    for key, spec in specs.items():
        shape = None if spec.shape.rank is None else tuple(spec.shape.as_list())
        arrays[key] = to_array(columns[key], spec.dtype.name, shape, key)
    rows = {len(a) for a in arrays.values() if a.ndim}
    try:
        if batchable(fn) and len(rows) == 1 and rows != {0}:
            batcher = loaded.predictor.batching.for_signature(
                name, lambda jobs: _call_stacked(fn, jobs)
            )
            outputs = batcher.submit(arrays, rows=rows.pop())
        else:
            outputs = _call(fn, arrays)
    except (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError) as e:
        message = str(e.message).strip().splitlines()[0][:300]
        raise ApiError(400, f"The model refused the input: {message}") from None
    if request.format == "instances":
        count = len(request.data)
        for key, value in outputs.items():
            if value.ndim == 0 or value.shape[0] != count:
                raise ApiError(
                    400,
                    f"Output {key!r} has shape {format_shape(value.shape)}, not one row per "
                    "instance; use the columnar `inputs` format for this signature.",
                )
        if len(outputs) == 1:
            (value,) = outputs.values()
            return {"predictions": to_json(value)}
        keys = sorted(outputs)
        columns = {k: to_json(outputs[k]) for k in keys}
        return {"predictions": [{k: columns[k][i] for k in keys} for i in range(count)]}
    if len(outputs) == 1:
        (value,) = outputs.values()
        return {"outputs": to_json(value)}
    return {"outputs": {k: to_json(v) for k, v in sorted(outputs.items())}}
