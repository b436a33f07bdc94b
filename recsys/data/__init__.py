"""Typed tables (catalog, events, reviews), public dataset loaders, splits and the synthetic store."""

from recsys.data.errors import DataError

__all__ = ["DataError"]
