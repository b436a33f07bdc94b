"""JSON values to tensors for a signature's inputs, and tensors back to JSON (pure numpy).

Strings are UTF-8 text, or `{"b64": "..."}` for raw bytes as in TensorFlow Serving's REST API.
Outputs turn NaN and infinities into `null` (JSON has no NaN) and bytes into text.

>>> import numpy as np
>>> to_array([["a", "b"], ["c", {"b64": "ZA=="}]], "string", (None, None), "history").tolist()
[[b'a', b'b'], [b'c', b'd']]
>>> to_json(np.array([0.5, np.nan], dtype="float32"))
[0.5, None]
"""

from __future__ import annotations

import base64
import binascii
import math

import numpy as np

from serving.errors import ApiError

_NUMERIC = {
    "float16": "f",
    "bfloat16": "f",
    "float32": "f",
    "float64": "f",
    "half": "f",
    "double": "f",
    "int8": "i",
    "int16": "i",
    "int32": "i",
    "int64": "i",
    "uint8": "u",
    "uint16": "u",
    "uint32": "u",
    "uint64": "u",
}


def _bytes_tree(value, name):
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise ApiError(400, f"Input {name!r}: a string is text or {{'b64': '...'}}.")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, f"Input {name!r}: invalid base64 in a 'b64' value.") from None
    if isinstance(value, list):
        return [_bytes_tree(v, name) for v in value]
    raise ApiError(
        400, f"Input {name!r} expects strings. Received a {type(value).__name__}: {value!r:.60}."
    )


def _shape_of(value):
    """The shape of a rectangular nested list; None if it is ragged."""
    if not isinstance(value, list):
        return ()
    if not value:
        return (0,)
    inner = [_shape_of(v) for v in value]
    if any(s is None or s != inner[0] for s in inner):
        return None
    return (len(value),) + inner[0]


def _leaves_ok(value, check):
    if isinstance(value, list):
        return all(_leaves_ok(v, check) for v in value)
    return check(value)


def to_array(value, dtype, shape, name):
    """Converts a JSON value to a numpy array of `dtype`, checked against `shape`.

    Args:
        value: a JSON value (scalar or nested lists).
        dtype: str. A TensorFlow dtype name such as "string", "int32", "float32", "bool".
        shape: tuple of int or None, or None for an unknown rank.
        name: str. The input's name, for messages.

    Raises:
        ApiError: 400 naming the input, the expected dtype or shape and what was received.
    """
    if dtype == "string":
        value = _bytes_tree(value, name)
        got = _shape_of(value)
        if got is None:
            raise ApiError(400, f"Input {name!r} is ragged: every row must have the same length.")
        array = np.array(value, dtype=object).reshape(got)
    elif dtype == "bool":
        if not _leaves_ok(value, lambda v: isinstance(v, bool)):
            raise ApiError(400, f"Input {name!r} expects booleans (true/false).")
        got = _shape_of(value)
        if got is None:
            raise ApiError(400, f"Input {name!r} is ragged: every row must have the same length.")
        array = np.array(value, dtype=bool).reshape(got)
    elif dtype in _NUMERIC:
        integral = _NUMERIC[dtype] in "iu"

        def ok(v):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return False
            if integral:
                return isinstance(v, int) or (math.isfinite(v) and float(v).is_integer())
            return True

        if not _leaves_ok(value, ok):
            kind = "integers" if integral else "numbers"
            raise ApiError(400, f"Input {name!r} expects {kind} ({dtype}).")
        got = _shape_of(value)
        if got is None:
            raise ApiError(400, f"Input {name!r} is ragged: every row must have the same length.")
        try:
            array = np.array(value, dtype=np.dtype(dtype if dtype != "bfloat16" else "float32"))
        except (OverflowError, ValueError):
            raise ApiError(400, f"Input {name!r}: a value is out of range for {dtype}.") from None
        array = array.reshape(got)
    else:
        raise ApiError(400, f"Input {name!r} has dtype {dtype}, which JSON cannot carry.")
    if shape is not None:
        expected = tuple(shape)
        if len(expected) != array.ndim or any(
            e is not None and e != g for e, g in zip(expected, array.shape, strict=True)
        ):
            raise ApiError(
                400,
                f"Input {name!r} expects shape {format_shape(expected)}. "
                f"Received shape {format_shape(array.shape)}.",
            )
    return array


def format_shape(shape) -> str:
    """A shape as `[?, 3]`.

    >>> format_shape((None, 3)), format_shape(())
    ('[?, 3]', '[] (a scalar)')
    """
    if len(shape) == 0:
        return "[] (a scalar)"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def to_json(array):
    """A numpy array (or scalar) as JSON: lists, floats (NaN -> null), text for bytes."""
    array = np.asarray(array)
    if array.dtype.kind in "fc":
        array = array.astype("float64")
        return _clean(array.tolist())
    if array.dtype.kind in "SO":
        return _clean(array.tolist())
    return array.tolist()


def _clean(value):
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode("ascii")}
    return value
