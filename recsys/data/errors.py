"""The one error type for bad input data."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data, with where it is and what was expected.

    Args:
        message: str. What is wrong and what was expected.
        path: str or None. The file that holds the bad data.
        column: str or None. The offending column.
        row: int or None. The first offending row (0-based data row, header excluded).
        value: object. The first offending value.

    Example:
    >>> str(DataError("expected a number", path="cat.csv", column="price", row=3, value="abc"))
    "cat.csv: column 'price', row 3 (value 'abc'): expected a number"
    """

    def __init__(self, message, path=None, column=None, row=None, value=None):
        self.message, self.path, self.column, self.row, self.value = (
            message,
            path,
            column,
            row,
            value,
        )
        super().__init__(self._format())

    def _format(self):
        where = []
        if self.column is not None:
            where.append(f"column {self.column!r}")
        if self.row is not None:
            where.append(f"row {self.row}")
        location = ", ".join(where)
        if self.value is not None:
            location += f" (value {self.value!r})"
        prefix = f"{self.path}: " if self.path else ""
        return f"{prefix}{location}: {self.message}" if location else f"{prefix}{self.message}"
