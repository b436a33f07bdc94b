"""Runs the doctests of `serving/` (pytest's `testpaths` covers `tests` and `recsys` only)."""

import doctest
import importlib

import pytest

MODULES = [
    "serving.auth",
    "serving.batching",
    "serving.catalog",
    "serving.command",
    "serving.errors",
    "serving.openapi",
    "serving.predictors",
    "serving.schemas",
    "serving.tensors",
]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
