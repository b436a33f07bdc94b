"""Reading CSV or Parquet tables in row ranges with flat memory (pyarrow).

Batch scoring reads inputs far larger than memory, so nothing here loads a whole file: a
`TableStream` reads record batches (Parquet row groups, CSV blocks) and a `RowCursor` cuts them
into the row ranges it is asked for. Every CSV column is read as a string (empty fields are
null), as `recsys.data.tables` does; Parquet columns keep their types. Problems become a
`DataError` naming the file.

Example:
>>> import pathlib, tempfile
>>> path = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
>>> _ = path.write_text("id,text\\n1,a\\n2,\\n3,c\\n")
>>> stream = TableStream(path)
>>> stream.columns, stream.count_rows()
(['id', 'text'], 3)
>>> RowCursor(stream, ["text"], block_rows=2).take(1, 3).column("text").to_pylist()
[None, 'c']
"""

from __future__ import annotations

import pathlib

import pyarrow as pa

from recsys.data.errors import DataError

_CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt", ".txt.gz")
_PARQUET_SUFFIXES = (".parquet", ".pq")
BLOCK_ROWS = 65_536


class TableStream:
    """A CSV (plain or gzipped) or Parquet file read in record batches.

    Args:
        path: str or path.

    Raises:
        DataError: the file is missing, empty, of an unknown type, or unreadable.
    """

    def __init__(self, path):
        self.path = pathlib.Path(path)
        if not self.path.exists():
            raise DataError("file not found", path=str(self.path))
        if self.path.is_dir():
            raise DataError("expected a file, got a directory", path=str(self.path))
        if self.path.stat().st_size == 0:
            raise DataError(
                "the file is empty; expected a header and at least one row", path=str(self.path)
            )
        name = self.path.name.lower()
        if name.endswith(_PARQUET_SUFFIXES):
            self.kind = "parquet"
            self._parquet = self._guard(lambda: _parquet_file(self.path))
            self.columns = list(self._parquet.schema_arrow.names)
        elif name.endswith(_CSV_SUFFIXES):
            self.kind = "csv"
            self._delimiter = "\t" if ".tsv" in name else ","
            self.columns = self._guard(self._csv_header)
        else:
            raise DataError(
                f"unknown file type; expected one of {', '.join(_CSV_SUFFIXES + _PARQUET_SUFFIXES)}",
                path=str(self.path),
            )
        self._rows = self._parquet.metadata.num_rows if self.kind == "parquet" else None

    def _guard(self, read):
        try:
            return read()
        except (pa.ArrowException, OSError, UnicodeDecodeError) as e:
            what = "Parquet" if self.kind == "parquet" else "CSV"
            raise DataError(
                f"not a readable {what} file ({type(e).__name__}: {e})", path=str(self.path)
            ) from None

    def _csv_header(self):
        import pyarrow.csv as csv

        reader = csv.open_csv(
            self.path,
            read_options=csv.ReadOptions(block_size=1 << 16),
            parse_options=csv.ParseOptions(delimiter=self._delimiter),
            convert_options=csv.ConvertOptions(include_columns=[]),
        )
        names = list(reader.schema.names)
        reader.close()
        return names

    def require(self, columns, what):
        """Raises a `DataError` naming the missing columns among `columns`."""
        missing = [c for c in columns if c not in self.columns]
        if missing:
            raise DataError(
                f"missing required column(s) {missing}; {what} needs {list(columns)}; "
                f"found {self.columns}",
                path=str(self.path),
                column=missing[0],
            )

    def count_rows(self) -> int:
        """The number of data rows (Parquet: from the footer; CSV: one streaming pass)."""
        if self._rows is None:
            first = self.columns[:1]
            self._rows = sum(b.num_rows for b in self.batches(first))
        return self._rows

    def schema(self, columns) -> pa.Schema:
        """The Arrow types the batches of `columns` will have."""
        if self.kind == "csv":
            return pa.schema([(c, pa.string()) for c in columns])
        full = self._parquet.schema_arrow
        return pa.schema([full.field(c) for c in columns])

    def batches(self, columns, start=0):
        """Record batches of `columns` from row `start` on (the first batch may be cut)."""
        if self.kind == "parquet":
            return self._guarded(self._parquet_batches(list(columns), start))
        return self._guarded(_skip(self._csv_batches(list(columns)), start))

    def _guarded(self, batches):
        iterator = iter(batches)
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except (pa.ArrowException, OSError, UnicodeDecodeError) as e:
                raise DataError(
                    f"unreadable data ({type(e).__name__}: {e})", path=str(self.path)
                ) from None
            yield batch

    def _csv_batches(self, columns):
        import pyarrow.csv as csv

        reader = csv.open_csv(
            self.path,
            read_options=csv.ReadOptions(block_size=1 << 20),
            parse_options=csv.ParseOptions(delimiter=self._delimiter, newlines_in_values=True),
            convert_options=csv.ConvertOptions(
                include_columns=columns,
                column_types={c: pa.string() for c in columns},
                strings_can_be_null=True,
                null_values=[""],
            ),
        )
        try:
            yield from reader
        finally:
            reader.close()

    def _parquet_batches(self, columns, start):
        meta = self._parquet.metadata
        first, offset = 0, 0
        while first < meta.num_row_groups and offset + meta.row_group(first).num_rows <= start:
            offset += meta.row_group(first).num_rows
            first += 1
        if first == meta.num_row_groups:
            return
        parquet = _parquet_file(self.path)  # a fresh reader: several cursors may be open
        batches = parquet.iter_batches(
            batch_size=BLOCK_ROWS, row_groups=range(first, meta.num_row_groups), columns=columns
        )
        yield from _skip(batches, start - offset)


def _parquet_file(path):
    import pyarrow.parquet as pq

    return pq.ParquetFile(path)


def _skip(batches, rows):
    for batch in batches:
        if rows >= batch.num_rows:
            rows -= batch.num_rows
            continue
        yield batch.slice(rows) if rows else batch
        rows = 0


class RowCursor:
    """Row ranges `[start, stop)` of a `TableStream`, read forward, holding one window.

    Ranges asked for must not go backwards (`start` never below an earlier `start`); a jump
    forward skips rows (Parquet: whole row groups without reading them). Memory holds the
    rows from the last `start` to what has been read, so it is flat in the file's length.

    Args:
        stream: a `TableStream`.
        columns: list of str. The columns to read.
        block_rows: int. At least this many rows are read at a time.
    """

    def __init__(self, stream, columns, block_rows=BLOCK_ROWS):
        self.stream, self.columns, self.block_rows = stream, list(columns), int(block_rows)
        self._schema = stream.schema(self.columns)
        self._batches = None
        self._window = []  # record batches covering [self._start, self._end)
        self._start = self._end = 0

    def take(self, start, stop) -> pa.Table:
        """Rows `[start, stop)` (fewer at the end of the file) as one table."""
        if start < self._start:
            raise ValueError(f"RowCursor reads forward: asked for row {start} after {self._start}.")
        far = self.stream.kind == "parquet" and start > self._end + self.block_rows
        if self._batches is None or far:  # (re)open; Parquet skips whole row groups
            self._batches = self.stream.batches(self.columns, start)
            self._window, self._start, self._end = [], start, start
        self._drop_before(start)
        while self._end < stop:
            batch = next(self._batches, None)
            if batch is None:
                break
            self._window.append(batch)
            self._end += batch.num_rows
        table = pa.Table.from_batches(self._window, schema=self._schema)
        return table.slice(0, max(0, min(stop, self._end) - self._start))

    def _drop_before(self, start):
        while self._start < start and self._end > self._start:
            head = self._window[0]
            if self._start + head.num_rows <= start:
                self._window.pop(0)
                self._start += head.num_rows
            else:
                self._window[0] = head.slice(start - self._start)
                self._start = start
        if self._end <= start:  # skip rows not read yet
            self._window = []
            skipped = _skip(self._batches, start - self._end)
            self._batches, self._start, self._end = skipped, start, start


def chunks(stream, columns, size):
    """`(start, table)` for consecutive chunks of `size` rows, for a validation pass."""
    cursor, start = RowCursor(stream, columns, block_rows=size), 0
    while True:
        table = cursor.take(start, start + size)
        if table.num_rows == 0:
            return
        yield start, table
        start += table.num_rows
