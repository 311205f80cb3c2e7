"""What a task's data reader sees: one part (train or test) of the silo's own data for the task.

The silo job hands a task a ``DataReader`` over ``data/{task}/{part}/`` in the silo's own storage, read
with the silo's own credentials (``fedfunc.silo.sources``); ``fedfunc task try`` hands it a local folder.
The reader parses the formats a silo may hold — safetensors arrays, CSV and Parquet tables, images
(PNG, JPEG, …) — and every error names the file and, for tables, the row and column, so a silo owner
can fix their data without seeing the task's code. Parsing only: no I/O here (sources do it).
"""
from __future__ import annotations

import csv
import fnmatch
import io
import math
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from fedfunc.weights import UpdateRejected, decode

TABLE_SUFFIXES = (".csv", ".parquet")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
COLUMN_TYPES = ("float32", "float64", "int64", "str")
MAX_IMAGE_PIXELS = 64 * 1024 * 1024


class DataSource(Protocol):
    """Where a silo's data container is read from (blob storage, a mounted folder, memory)."""

    def list(self, prefix: str) -> list[str]:
        """Full paths of the blobs under ``prefix``, sorted."""

    def read(self, path: str) -> bytes: ...


class MemoryDataSource:
    """Files held in memory: tests, simulations and built-in sample data."""

    def __init__(self, files: Mapping[str, bytes]):
        self.files = dict(files)

    def list(self, prefix: str) -> list[str]:
        return sorted(p for p in self.files if p.startswith(prefix))

    def read(self, path: str) -> bytes:
        try:
            return self.files[path]
        except KeyError:
            raise FileNotFoundError(path) from None


class DataError(ValueError):
    """Data a task cannot read; names the file and, for tables, the row (1 = first data row) and column."""

    def __init__(self, file: str, message: str, *, row: int | None = None, column: str | None = None):
        self.file, self.row, self.column, self.message = file, row, column, message
        where = [f"file {file}"] + ([f"row {row}"] if row is not None else []) + \
                ([f"column {column!r}"] if column is not None else [])
        super().__init__(f"{', '.join(where)}: {message}")


class DataReader:
    """One part of a silo's data for a task: ``files``, ``read_bytes``, ``arrays``, ``table``, ``image``.

    Names are relative to the part's folder (``data/{task}/{part}/``) and use ``/``; patterns are
    ``fnmatch`` patterns over those names (``*`` also matches ``/``).
    """

    def __init__(self, source: DataSource, prefix: str, label: str | None = None):
        self.source, self.prefix = source, prefix
        self.label = label or f"data/{prefix}"   # how errors name the folder

    def files(self, pattern: str = "*") -> list[str]:
        names = [p[len(self.prefix):] for p in self.source.list(self.prefix)]
        return [n for n in names if n and fnmatch.fnmatchcase(n, pattern)]

    def _where(self, name: str) -> str:
        return self.label + name

    def read_bytes(self, name: str) -> bytes:
        try:
            return self.source.read(self.prefix + name)
        except FileNotFoundError:
            raise DataError(self._where(name), "no such file") from None

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        """A safetensors file's arrays (never pickle)."""
        try:
            return decode(self.read_bytes(name))[0]
        except UpdateRejected as e:
            raise DataError(self._where(name), f"not a safetensors file ({e.detail})") from None

    def concat_arrays(self, pattern: str, names: Sequence[str]) -> dict[str, np.ndarray]:
        """Arrays ``names`` of every safetensors file matching ``pattern``, concatenated along rows."""
        files = self.files(pattern)
        if not files:
            raise DataError(self.label + pattern, "no file matches")
        parts = []
        for name in files:
            arrays = self.arrays(name)
            missing = [n for n in names if n not in arrays]
            if missing:
                raise DataError(self._where(name), f"lacks array(s) {missing} (has {sorted(arrays)})")
            lengths = {n: len(arrays[n]) for n in names}
            if len(set(lengths.values())) > 1:
                raise DataError(self._where(name), f"arrays have different row counts {lengths}")
            parts.append(arrays)
        try:
            return {n: np.concatenate([p[n] for p in parts]) for n in names}
        except ValueError as e:
            raise DataError(self.label + pattern, f"files do not stack: {e}") from None

    def table(self, pattern: str, columns: Mapping[str, str]) -> dict[str, np.ndarray]:
        """The named columns of every CSV / Parquet file matching ``pattern``, concatenated in name order.

        ``columns`` maps a column name to one of ``float32``, ``float64``, ``int64``, ``str``. A missing
        column, an empty or mistyped value, or a non-finite number is a ``DataError`` naming file, row, column.
        """
        bad = {c: t for c, t in columns.items() if t not in COLUMN_TYPES}
        if bad:
            raise ValueError(f"column types {bad}: use one of {COLUMN_TYPES}")
        names = [n for n in self.files(pattern) if n.lower().endswith(TABLE_SUFFIXES)]
        if not names:
            raise DataError(self.label + pattern, "no CSV or Parquet file matches")
        parts = [self._parse_table(n, columns) for n in names]
        return {c: np.concatenate([p[c] for p in parts]) for c in columns}

    def _parse_table(self, name: str, columns: Mapping[str, str]) -> dict[str, np.ndarray]:
        data, where = self.read_bytes(name), self._where(name)
        if name.lower().endswith(".csv"):
            return read_csv(data, columns, where)
        return read_parquet(data, columns, where)

    def image(self, name: str, mode: str | None = None) -> np.ndarray:
        """An image as a uint8 array (H, W) or (H, W, channels); ``mode`` converts (e.g. ``"L"``, ``"RGB"``)."""
        return read_image(self.read_bytes(name), self._where(name), mode)


def describe_file(name: str, data: bytes, where: str | None = None) -> str:
    """A one-line description of a data file of a known format (safetensors, CSV, Parquet, image), after
    parsing it the way a task's reader will; ``DataError`` naming the file if it does not parse. Other
    formats are described by size only (the task's own reader decides)."""
    where = where or name
    lower = name.lower()
    if lower.endswith(".safetensors"):
        try:
            arrays = decode(data)[0]
        except UpdateRejected as e:
            raise DataError(where, f"not a safetensors file ({e.detail})") from None
        return "arrays " + ", ".join(f"{k} {v.dtype}{list(v.shape)}" for k, v in sorted(arrays.items()))
    if lower.endswith(".csv"):
        header, body = _csv_rows(data, where)
        return f"CSV table, {len(body)} rows, columns {header[:8]}{' …' if len(header) > 8 else ''}"
    if lower.endswith(".parquet"):
        table = _parquet(data, where)
        return f"Parquet table, {table.num_rows} rows, columns {table.column_names[:8]}"
    if lower.endswith(IMAGE_SUFFIXES):
        return "image " + "×".join(map(str, read_image(data, where).shape))
    return f"{len(data)} bytes"


def _csv_rows(data: bytes, where: str) -> tuple[list[str], list[list[str]]]:
    """Header and data rows (blank lines skipped), every row as wide as the header."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(where, f"not UTF-8 text (byte {e.start})") from None
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as e:
        raise DataError(where, f"not a CSV file ({e})") from None
    if not rows:
        raise DataError(where, "empty: a CSV file needs a header row")
    header, body = rows[0], [r for r in rows[1:] if r]
    for i, row in enumerate(body, start=1):
        if len(row) != len(header):
            raise DataError(where, f"{len(row)} fields, the header has {len(header)}", row=i)
    return header, body


def read_csv(data: bytes, columns: Mapping[str, str], where: str) -> dict[str, np.ndarray]:
    """Columns of a CSV file with a header row."""
    header, body = _csv_rows(data, where)
    out = {}
    for column, dtype in columns.items():
        if column not in header:
            raise DataError(where, f"missing column (the header has {header[:20]})", column=column)
        i = header.index(column)
        out[column] = _convert([r[i] for r in body], dtype, where, column)
    return out


def _parquet(data: bytes, where: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as e:
        raise DataError(where, f"not a Parquet file ({e})") from None


def read_parquet(data: bytes, columns: Mapping[str, str], where: str) -> dict[str, np.ndarray]:
    """Columns of a Parquet file."""
    table = _parquet(data, where)
    out = {}
    for column, dtype in columns.items():
        if column not in table.column_names:
            raise DataError(where, f"missing column (the file has {table.column_names[:20]})", column=column)
        out[column] = _convert(table.column(column).to_pylist(), dtype, where, column)
    return out


def _convert(values: Sequence, dtype: str, where: str, column: str) -> np.ndarray:
    """``values`` (strings from CSV, typed values from Parquet) as a ``dtype`` array; the first bad value
    is named with its row. Clean columns take numpy's vectorised path; the value loop finds the bad row."""
    fast = _vectorised(values, dtype)
    if fast is not None:
        return fast
    out = np.empty(len(values), dtype=object if dtype == "str" else dtype)
    for i, v in enumerate(values):
        try:
            out[i] = _value(v, dtype)
        except ValueError as e:
            raise DataError(where, str(e), row=i + 1, column=column) from None
    return out.astype(str) if dtype == "str" else out


def _vectorised(values: Sequence, dtype: str) -> np.ndarray | None:
    if dtype == "str" or any(v is None or isinstance(v, bool) for v in values):
        return None
    if dtype == "int64" and any(isinstance(v, float) for v in values):
        return None  # numpy would truncate 2.5 to 2
    try:
        arr = np.asarray(values, dtype=np.float64 if dtype != "int64" else np.int64)
    except (ValueError, TypeError, OverflowError):
        return None
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        return None
    return arr.astype(dtype)


def _value(v, dtype: str):
    if v is None or (isinstance(v, str) and not v.strip()):
        raise ValueError("empty value")
    if dtype == "str":
        return str(v)
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise ValueError(f"{type(v).__name__} value {str(v)[:40]!r}, expected {dtype}")
    if dtype == "int64":
        if isinstance(v, float):
            if not v.is_integer():
                raise ValueError(f"{v!r} is not an integer")
            return int(v)
        try:
            return int(v)
        except ValueError:
            raise ValueError(f"{str(v)[:40]!r} is not an integer") from None
    try:
        x = float(v)
    except ValueError:
        raise ValueError(f"{str(v)[:40]!r} is not a number") from None
    if not math.isfinite(x):
        raise ValueError(f"{str(v)[:40]!r} is not a finite number")
    return x


def read_image(data: bytes, where: str, mode: str | None = None) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise DataError(where, f"{img.width}×{img.height} pixels exceeds {MAX_IMAGE_PIXELS}")
            img = img.convert(mode) if mode else img
            return np.asarray(img, dtype=np.uint8).copy()
    except DataError:
        raise
    except Exception as e:  # Pillow raises many types for undecodable input
        raise DataError(where, f"not a readable image ({type(e).__name__}: {e})") from None
