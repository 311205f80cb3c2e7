"""The data reader a task gets: safetensors, CSV, Parquet and image files; errors name file, row, column."""
from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fedfunc.silo.sources import DirDataSource
from fedfunc.tasks.data import DataError, DataReader, MemoryDataSource, describe_file
from fedfunc.weights import encode

CSV = b"age,weight,label\n34,70.5,benign\n51,81.0,malignant\n"
COLUMNS = {"age": "int64", "weight": "float32", "label": "str"}


def parquet(**columns) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def reader(files: dict[str, bytes]) -> DataReader:
    return DataReader(MemoryDataSource({f"t/train/{k}": v for k, v in files.items()}), "t/train/")


def error(fn, *args) -> DataError:
    with pytest.raises(DataError) as e:
        fn(*args)
    return e.value


def test_csv_and_parquet_tables_concatenate_in_name_order():
    r = reader({"a.csv": CSV, "b.parquet": parquet(age=[60], weight=[90.25], label=["benign"]), "notes.txt": b"x"})
    table = r.table("*", COLUMNS)
    assert table["age"].tolist() == [34, 51, 60] and table["age"].dtype == np.int64
    assert table["weight"].dtype == np.float32 and table["label"].tolist() == ["benign", "malignant", "benign"]
    assert r.files() == ["a.csv", "b.parquet", "notes.txt"] and r.files("*.csv") == ["a.csv"]


@pytest.mark.parametrize("body, row, column, says", [
    (b"age,weight\n34,70.5\n", None, "label", "missing column"),
    (b"age,weight,label\n34,70.5,benign\nold,81,malignant\n", 2, "age", "'old' is not an integer"),
    (b"age,weight,label\n34,,benign\n", 1, "weight", "empty value"),
    (b"age,weight,label\n34,inf,benign\n", 1, "weight", "not a finite number"),
    (b"age,weight,label\n34,70.5\n", 1, None, "2 fields, the header has 3"),
])
def test_malformed_csv_names_file_row_and_column(body, row, column, says):
    e = error(reader({"site.csv": body}).table, "*.csv", COLUMNS)
    assert (e.file, e.row, e.column) == ("data/t/train/site.csv", row, column) and says in e.message
    assert "file data/t/train/site.csv" in str(e)


@pytest.mark.parametrize("table, row, column, says", [
    (dict(age=[1, 2], weight=[1.0, 2.0]), None, "label", "missing column"),
    (dict(age=[1.0, 2.5], weight=[1.0, 2.0], label=["a", "b"]), 2, "age", "2.5 is not an integer"),
    (dict(age=[1, None], weight=[1.0, 2.0], label=["a", "b"]), 2, "age", "empty value"),
    (dict(age=[1, 2], weight=["1.0", "heavy"], label=["a", "b"]), 2, "weight", "'heavy' is not a number"),
])
def test_malformed_parquet_names_file_row_and_column(table, row, column, says):
    e = error(reader({"site.parquet": parquet(**table)}).table, "*.parquet", COLUMNS)
    assert (e.file, e.row, e.column) == ("data/t/train/site.parquet", row, column) and says in e.message


def test_files_that_are_not_what_their_name_says():
    assert "not a Parquet file" in error(reader({"x.parquet": b"PAR1 nope"}).table, "*", COLUMNS).message
    assert "not UTF-8" in error(reader({"x.csv": b"\xff\xfe\x00"}).table, "*", COLUMNS).message
    assert "no CSV or Parquet file matches" in error(reader({"x.txt": b""}).table, "*", COLUMNS).message
    assert "not a safetensors file" in error(reader({"x.safetensors": b"\x00" * 3}).arrays, "x.safetensors").message
    assert "not a readable image" in error(reader({"x.png": b"\x89PNG broken"}).image, "x.png").message
    assert "no such file" in error(reader({}).read_bytes, "gone.csv").message


def test_arrays_and_images():
    img = (np.arange(64, dtype=np.uint8) * 4).reshape(8, 8)
    r = reader({"a.safetensors": encode({"x": np.ones((2, 3), np.float32), "y": np.arange(2)}),
                "b.safetensors": encode({"x": np.zeros((1, 3), np.float32), "y": np.arange(1)}),
                "img/3/0.png": png(img), "c.safetensors": encode({"x": np.ones((1, 3), np.float32)})})
    both = r.concat_arrays("[ab].safetensors", ("x", "y"))
    assert both["x"].shape == (3, 3) and both["y"].tolist() == [0, 1, 0]
    assert "lacks array(s) ['y']" in error(r.concat_arrays, "*.safetensors", ("x", "y")).message
    np.testing.assert_array_equal(r.image("img/3/0.png"), img)
    assert r.image("img/3/0.png", mode="RGB").shape == (8, 8, 3)


def test_describe_file_parses_known_formats():
    assert describe_file("a.csv", CSV) == "CSV table, 2 rows, columns ['age', 'weight', 'label']"
    assert describe_file("a.parquet", parquet(a=[1, 2, 3])).startswith("Parquet table, 3 rows")
    assert describe_file("a.png", png(np.zeros((4, 5), np.uint8))) == "image 4×5"
    assert describe_file("a.bin", b"1234") == "4 bytes"
    assert "row 1" in str(error(describe_file, "a.csv", b"a,b\n1\n"))


def test_a_folder_source_lists_and_reads_only_inside_its_root(tmp_path):
    (tmp_path / "t" / "test" / "sub").mkdir(parents=True)
    (tmp_path / "t" / "test" / "sub" / "a.csv").write_bytes(CSV)
    (tmp_path / "outside.csv").write_bytes(CSV)
    source = DirDataSource(tmp_path)
    assert source.list("t/test/") == ["t/test/sub/a.csv"]
    with pytest.raises(FileNotFoundError):
        source.read("t/test/../../outside.csv")
    assert DataReader(source, "t/test/").table("sub/*.csv", COLUMNS)["age"].tolist() == [34, 51]
