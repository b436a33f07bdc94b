"""Loading catalog, events and reviews files (CSV, gzipped CSV, Parquet) and their errors."""

import gzip
import math

import numpy as np
import pandas as pd
import pytest

from recsys.data.catalog import load_catalog
from recsys.data.errors import DataError
from recsys.data.events import load_events
from recsys.data.reviews import MAX_RATING, MIN_RATING, load_reviews
from recsys.schema import EVENT_TYPES

FORMATS = ("csv", "csv.gz", "parquet")


def _catalog():
    return pd.DataFrame(
        {
            "product_id": ["p1", "p2", "p3"],
            "title": ["Linen shirt", "Trail boot", "Desk lamp"],
            "category": ["shirts", "boots", "lamps"],
            "brand": ["Acme", None, "Lumo"],
            "price": [19.5, 120.0, None],
        }
    )


def _events():
    # Out of time order and in a non-UTC zone, so sorting and conversion both show.
    stamps = pd.to_datetime(
        ["2024-03-02 10:00", "2024-03-01 09:30", "2024-03-03 18:15", "2024-03-01 08:00"]
    ).tz_localize("Europe/Paris")
    return pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u1", "u3"],
            "product_id": ["p1", "p2", "p3", "p1"],
            "event": ["view", "cart", "purchase", "View"],
            "timestamp": stamps,
        }
    )


def _reviews():
    return pd.DataFrame(
        {
            "product_id": ["p1", "p2", "p2"],
            "text": ["Fits well", "Too small", "Fine"],
            "rating": [5.0, 2.0, 3.5],
            "recommended": [True, False, None],
        }
    )


def _write(frame, path, fmt):
    if fmt == "parquet":
        frame.to_parquet(path, index=False)
    elif fmt == "csv.gz":
        frame.to_csv(path, index=False, compression="gzip")
    else:
        frame.to_csv(path, index=False)
    return path


def _write_text(path, text):
    data = text.encode() if isinstance(text, str) else text
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def _check_error(excinfo, path, column=None, row=None, value=None):
    """The error names the file and, where given, the column, the row and the value."""
    error, message = excinfo.value, str(excinfo.value)
    assert str(path) in message
    if column is not None:
        assert error.column == column
        assert repr(column) in message
    if row is not None:
        assert error.row == row
        assert f"row {row}" in message
    if value is not None:
        assert str(value) in message
    return message


# Valid files.


@pytest.mark.parametrize("fmt", FORMATS)
def test_catalog_loads_with_typed_columns(tmp_path, fmt):
    source = _catalog()
    catalog = load_catalog(_write(source, tmp_path / f"catalog.{fmt}", fmt))

    assert list(catalog.columns) == ["product_id", "title", "category", "brand", "price"]
    assert catalog["price"].dtype == np.float64
    for column in ("product_id", "title", "category", "brand"):
        assert pd.api.types.is_string_dtype(catalog[column]), column
    assert catalog["product_id"].tolist() == source["product_id"].tolist()
    np.testing.assert_array_equal(catalog["price"].to_numpy(), source["price"].to_numpy(float))
    assert catalog["brand"].isna().tolist() == source["brand"].isna().tolist()


@pytest.mark.parametrize("fmt", FORMATS)
def test_events_load_as_utc_sorted_by_time(tmp_path, fmt):
    source = _events()
    events = load_events(_write(source, tmp_path / f"events.{fmt}", fmt))

    assert isinstance(events["timestamp"].dtype, pd.DatetimeTZDtype)
    assert str(events["timestamp"].dt.tz) == "UTC"
    expected = source.sort_values("timestamp", kind="stable").reset_index(drop=True)
    assert events["timestamp"].tolist() == expected["timestamp"].dt.tz_convert("UTC").tolist()
    assert events["product_id"].tolist() == expected["product_id"].tolist()
    assert events["timestamp"].is_monotonic_increasing
    assert events["event"].tolist() == expected["event"].str.lower().tolist()
    assert set(events["event"]) <= set(EVENT_TYPES)


def test_events_accept_unix_seconds(tmp_path):
    seconds = [1_704_067_200, 1_704_153_600]
    path = _write_text(
        tmp_path / "events.csv",
        "user_id,product_id,event,timestamp\n" + "".join(f"u1,p1,view,{s}\n" for s in seconds),
    )
    events = load_events(path)
    assert str(events["timestamp"].dt.tz) == "UTC"
    assert [int(t.timestamp()) for t in events["timestamp"]] == seconds


@pytest.mark.parametrize("fmt", FORMATS)
def test_reviews_load_with_float_rating_and_boolean_recommended(tmp_path, fmt):
    source = _reviews()
    reviews = load_reviews(_write(source, tmp_path / f"reviews.{fmt}", fmt))

    assert reviews["rating"].dtype == np.float64
    assert reviews["rating"].tolist() == source["rating"].tolist()
    assert reviews["recommended"].dtype == "boolean"
    assert reviews["recommended"].tolist()[:2] == [True, False]
    assert reviews["recommended"].isna().tolist() == [False, False, True]


def test_csv_booleans_accept_common_spellings(tmp_path):
    spellings = {"1": True, "0": False, "yes": True, "No": False, "TRUE": True, "false": False}
    path = _write_text(
        tmp_path / "reviews.csv",
        "product_id,text,rating,recommended\n" + "".join(f"p1,ok,4,{s}\n" for s in spellings),
    )
    assert load_reviews(path)["recommended"].tolist() == list(spellings.values())


# Bad values, each named by file, column, row and value.


@pytest.mark.parametrize("fmt", FORMATS)
def test_missing_required_column(tmp_path, fmt):
    path = _write(_catalog().drop(columns="category"), tmp_path / f"catalog.{fmt}", fmt)
    with pytest.raises(DataError, match="missing required column") as excinfo:
        load_catalog(path)
    _check_error(excinfo, path, column="category")


@pytest.mark.parametrize("fmt", FORMATS)
def test_non_numeric_price(tmp_path, fmt):
    frame = _catalog().astype({"price": object})
    frame.loc[1, "price"] = "abc"
    frame["price"] = frame["price"].map(lambda v: None if v is None else str(v))
    path = _write(frame, tmp_path / f"catalog.{fmt}", fmt)
    with pytest.raises(DataError, match="expected a number") as excinfo:
        load_catalog(path)
    _check_error(excinfo, path, column="price", row=1, value="'abc'")


@pytest.mark.parametrize("fmt", FORMATS)
def test_infinite_price(tmp_path, fmt):
    frame = _catalog()
    frame.loc[2, "price"] = math.inf
    path = _write(frame, tmp_path / f"catalog.{fmt}", fmt)
    with pytest.raises(DataError, match="finite") as excinfo:
        load_catalog(path)
    message = _check_error(excinfo, path, column="price", row=2, value="inf")
    assert "np.float64" not in message


@pytest.mark.parametrize("text", ["NaN", "nan", "-inf"])
def test_nan_or_infinite_price_text_in_csv(tmp_path, text):
    path = _write_text(
        tmp_path / "catalog.csv",
        f"product_id,title,category,price\np1,Shirt,shirts,10\np2,Boot,boots,{text}\n",
    )
    with pytest.raises(DataError) as excinfo:
        load_catalog(path)
    _check_error(excinfo, path, column="price", row=1, value=text)


@pytest.mark.parametrize("fmt", FORMATS)
def test_missing_required_value(tmp_path, fmt):
    frame = _catalog()
    frame.loc[1, "title"] = None
    path = _write(frame, tmp_path / f"catalog.{fmt}", fmt)
    with pytest.raises(DataError, match="empty value") as excinfo:
        load_catalog(path)
    _check_error(excinfo, path, column="title", row=1)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("blank", ["", "   "])
def test_blank_required_string(tmp_path, fmt, blank):
    frame = _events()
    frame.loc[2, "product_id"] = blank
    path = _write(frame, tmp_path / f"events.{fmt}", fmt)
    with pytest.raises(DataError) as excinfo:
        load_events(path)
    _check_error(excinfo, path, column="product_id", row=2)


@pytest.mark.parametrize("fmt", FORMATS)
def test_unknown_event_type(tmp_path, fmt):
    frame = _events()
    frame.loc[3, "event"] = "Click"
    path = _write(frame, tmp_path / f"events.{fmt}", fmt)
    with pytest.raises(DataError, match="unknown event") as excinfo:
        load_events(path)
    message = _check_error(excinfo, path, column="event", row=3, value="'Click'")
    assert all(kind in message for kind in EVENT_TYPES)


def test_unreadable_timestamp(tmp_path):
    path = _write_text(
        tmp_path / "events.csv",
        "user_id,product_id,event,timestamp\nu1,p1,view,2024-01-01\nu1,p2,view,last tuesday\n",
    )
    with pytest.raises(DataError, match="timestamp") as excinfo:
        load_events(path)
    _check_error(excinfo, path, column="timestamp", row=1, value="last tuesday")


@pytest.mark.parametrize("fmt", FORMATS)
def test_duplicate_product_id(tmp_path, fmt):
    frame = _catalog()
    frame.loc[2, "product_id"] = frame.loc[0, "product_id"]
    path = _write(frame, tmp_path / f"catalog.{fmt}", fmt)
    with pytest.raises(DataError, match="duplicate") as excinfo:
        load_catalog(path)
    _check_error(excinfo, path, column="product_id", row=2, value=repr(frame.loc[0, "product_id"]))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("rating", [MIN_RATING - 1, MAX_RATING + 1])
def test_rating_out_of_range(tmp_path, fmt, rating):
    frame = _reviews()
    frame.loc[1, "rating"] = rating
    path = _write(frame, tmp_path / f"reviews.{fmt}", fmt)
    with pytest.raises(DataError, match="out of range") as excinfo:
        load_reviews(path)
    _check_error(excinfo, path, column="rating", row=1, value=rating)


def test_bad_boolean(tmp_path):
    path = _write_text(
        tmp_path / "reviews.csv", "product_id,text,rating,recommended\np1,ok,4,maybe\n"
    )
    with pytest.raises(DataError, match="boolean") as excinfo:
        load_reviews(path)
    _check_error(excinfo, path, column="recommended", row=0, value="maybe")


# Bad files.


@pytest.mark.parametrize("name", ["catalog.csv", "catalog.parquet", "catalog.csv.gz"])
def test_empty_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    with pytest.raises(DataError, match="empty") as excinfo:
        load_catalog(path)
    _check_error(excinfo, path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_header_only_file(tmp_path, fmt):
    path = _write(_catalog().iloc[:0], tmp_path / f"catalog.{fmt}", fmt)
    with pytest.raises(DataError, match="no rows") as excinfo:
        load_catalog(path)
    _check_error(excinfo, path)


def test_gzip_of_nothing(tmp_path):
    path = _write_text(tmp_path / "catalog.csv.gz", b"")
    assert path.stat().st_size > 0
    with pytest.raises(DataError, match="header") as excinfo:
        load_catalog(path)
    _check_error(excinfo, path)


@pytest.mark.parametrize("name", ["catalog.csv", "catalog.csv.gz"])
def test_latin1_bytes(tmp_path, name):
    path = _write_text(tmp_path / name, b"product_id,title,category\np1,Caf\xe9 mug,mugs\n")
    with pytest.raises(DataError, match="UTF-8") as excinfo:
        load_catalog(path)
    _check_error(excinfo, path)


def test_truncated_parquet(tmp_path):
    path = _write(_catalog(), tmp_path / "catalog.parquet", "parquet")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="Parquet") as excinfo:
        load_catalog(path)
    _check_error(excinfo, path)


def test_truncated_gzip(tmp_path):
    path = _write(_catalog(), tmp_path / "catalog.csv.gz", "csv.gz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as excinfo:
        load_catalog(path)
    _check_error(excinfo, path)


def test_row_with_extra_fields_is_not_shifted(tmp_path):
    # pandas would otherwise take the extra leading fields as an index and shift every column.
    path = _write_text(
        tmp_path / "catalog.csv", "product_id,title,category\np1,Shirt,shirts,extra,more\n"
    )
    with pytest.raises(DataError, match="more fields") as excinfo:
        load_catalog(path)
    _check_error(excinfo, path, row=0)


def test_unclosed_quote(tmp_path):
    path = _write_text(tmp_path / "catalog.csv", 'product_id,title,category\np1,"Shirt,shirts\n')
    with pytest.raises(DataError) as excinfo:
        load_catalog(path)
    _check_error(excinfo, path)


@pytest.mark.parametrize("name", ["catalog.json", "catalog.xlsx", "catalog"])
def test_unknown_suffix(tmp_path, name):
    path = _write_text(tmp_path / name, "product_id,title,category\np1,Shirt,shirts\n")
    with pytest.raises(DataError, match="unknown file type") as excinfo:
        load_catalog(path)
    message = _check_error(excinfo, path)
    assert ".csv" in message and ".parquet" in message


@pytest.mark.parametrize("loader", [load_catalog, load_events, load_reviews])
def test_missing_file(tmp_path, loader):
    path = tmp_path / "nowhere.csv"
    with pytest.raises(DataError, match="not found") as excinfo:
        loader(path)
    _check_error(excinfo, path)


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(DataError, match="directory") as excinfo:
        load_catalog(tmp_path)
    _check_error(excinfo, tmp_path)


# Events against a catalog.


@pytest.mark.parametrize("fmt", FORMATS)
def test_unknown_products_are_counted_and_dropped(tmp_path, fmt):
    catalog = _catalog()
    events = _events()
    events.loc[[0, 2], "product_id"] = ["p404", "p405"]
    path = _write(events, tmp_path / f"events.{fmt}", fmt)

    loaded = load_events(path, catalog=catalog, on_unknown="drop")

    unknown = ~events["product_id"].isin(catalog["product_id"])
    assert loaded.attrs["dropped_unknown_products"] == int(unknown.sum())
    assert len(loaded) == len(events) - int(unknown.sum())
    assert set(loaded["product_id"]) <= set(catalog["product_id"])
    assert loaded["timestamp"].is_monotonic_increasing


@pytest.mark.parametrize("fmt", FORMATS)
def test_unknown_products_are_refused_at_their_file_row(tmp_path, fmt):
    events = _events()
    latest = int(events["timestamp"].argmax())  # last once sorted, so sorting would move it
    events.loc[latest, "product_id"] = "p404"
    path = _write(events, tmp_path / f"events.{fmt}", fmt)

    with pytest.raises(DataError, match="missing from the catalog") as excinfo:
        load_events(path, catalog=_catalog(), on_unknown="error")
    _check_error(excinfo, path, column="product_id", row=latest, value="'p404'")


def test_known_products_drop_nothing(tmp_path):
    path = _write(_events(), tmp_path / "events.csv", "csv")
    loaded = load_events(path, catalog=_catalog(), on_unknown="drop")
    assert loaded.attrs["dropped_unknown_products"] == 0
    assert len(loaded) == len(_events())


def test_on_unknown_must_be_error_or_drop(tmp_path):
    path = _write(_events(), tmp_path / "events.csv", "csv")
    with pytest.raises(ValueError, match="on_unknown"):
        load_events(path, catalog=_catalog(), on_unknown="ignore")
