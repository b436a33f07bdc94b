import gzip
import pathlib

import pandas as pd
import pytest

from recsys.data import formats
from recsys.data.errors import DataError
from recsys.data.splits import SequenceExample, leave_one_out, user_sequences

MOVIES = "1::Toy Story (1995)::Animation|Children's|Comedy\n2::Café au lait (1993)::Drama\n"
RATINGS = "1::2::5::978300760\n1::1::3::978300700\n2::1::4::978300800\n"
RETAIL_HEADER = (
    "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
)
RETAIL_ROWS = [
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850,UK",
    "536365,71053,WHITE METAL LANTERN,6,2010-12-01 08:26:00,3.39,17850.0,UK",
    "536366,85123A,CREAM HANGING HEART T-LIGHT HOLDER,2,2010-12-01 09:00:00,2.95,13047,UK",
    "536367,85123A,WHITE HANGING HEART T-LIGHT HOLDER,1,2010-12-02 10:00:00,2.65,13047,UK",
    "C536368,71053,WHITE METAL LANTERN,-1,2010-12-02 11:00:00,3.39,17850,UK",  # cancelled
    "536369,71053,WHITE METAL LANTERN,3,2010-12-02 12:00:00,3.39,,UK",  # no customer
    "536370,71053,,3,2010-12-02 12:00:00,3.39,17850,UK",  # no description
    "536371,71053,WHITE METAL LANTERN,0,2010-12-02 12:00:00,3.39,17850,UK",  # quantity 0
    "536372,71053,WHITE METAL LANTERN,1,2010-12-02 12:00:00,0,17850,UK",  # free
    "536373,POST,POSTAGE,1,2010-12-02 12:00:00,18.0,17850,UK",  # not a product
]
CLOTHING = (
    ",Clothing ID,Age,Title,Review Text,Rating,Recommended IND,Positive Feedback Count,"
    "Division Name,Department Name,Class Name\n"
    '0,767,33,,"Absolutely wonderful, silky",4,1,0,Initmates,Intimate,Intimates\n'
    "1,1080,34,Meh,,5,1,4,General,Dresses,Dresses\n"
    '2,1077,60,Some major design flaws,"I had such high hopes\nfor this dress",3,0,0,General,Dresses,Dresses\n'
)
PRICERUNNER = (
    "Product ID, Product Title,Merchant ID, Cluster ID,Cluster Label,Category ID,Category Label\n"
    "1,apple iphone 8 plus 64gb silver,1,1,Apple iPhone 8 Plus 64GB,2612,Mobile Phones\n"
    "2,apple iphone 8 plus 64 gb spacegrau,2,1,Apple iPhone 8 Plus 64GB,2612,Mobile Phones\n"
    "3,bosch serie 4 wan28250gb,3,7,Bosch WAN28250GB,2622,Washing Machines\n"
)


def write(path, text, encoding="utf-8", gz=False):
    path = pathlib.Path(path)
    data = text.encode(encoding)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def test_shared_data_dir_env_var_and_default(monkeypatch, tmp_path):
    monkeypatch.setenv("RECSYS_SHARED_DATA", str(tmp_path))
    assert formats.shared_data_dir() == tmp_path
    monkeypatch.delenv("RECSYS_SHARED_DATA")
    repo_root = pathlib.Path(formats.__file__).resolve().parents[2]
    assert formats.shared_data_dir() == repo_root.parent / "shared" / "data"


# --- MovieLens ------------------------------------------------------------------------------


@pytest.fixture
def movielens(tmp_path):
    write(tmp_path / "movies.dat", MOVIES, encoding="latin-1")
    write(tmp_path / "ratings.dat", RATINGS)
    write(tmp_path / "ratings_no_ts.dat.gz", "2::1::4\n1::2::5\n1::1::3\n", gz=True)
    return tmp_path


def test_movielens_catalog_reads_latin1_and_genres(movielens):
    catalog, _ = formats.load_movielens_dat(movielens, "ratings.dat")
    assert catalog["product_id"].tolist() == ["1", "2"]
    assert catalog["title"].tolist() == ["Toy Story (1995)", "Café au lait (1993)"]
    assert catalog["category"].tolist() == ["Animation", "Drama"]
    assert catalog["description"].iloc[0] == "Animation, Children's, Comedy"


def test_movielens_events_with_timestamps_sorted_by_time(movielens):
    _, events = formats.load_movielens_dat(movielens, "ratings.dat")
    assert list(events.columns) == ["user_id", "product_id", "event", "timestamp", "rating"]
    assert events["product_id"].tolist() == ["1", "2", "1"]
    assert events["user_id"].tolist() == ["1", "1", "2"]
    assert set(events["event"]) == {"purchase"}
    assert str(events["timestamp"].dt.tz) == "UTC"
    assert events["timestamp"].iloc[0] == pd.Timestamp(978300700, unit="s", tz="UTC")
    assert events["rating"].tolist() == [3.0, 5.0, 4.0]


def test_movielens_gzipped_ratings_without_timestamps_keep_line_order(movielens):
    _, events = formats.load_movielens_dat(movielens, "ratings_no_ts.dat.gz")
    assert events["user_id"].tolist() == ["2", "1", "1"]
    assert events["timestamp"].is_monotonic_increasing
    assert events["timestamp"].iloc[0] == formats.SYNTHETIC_START
    assert user_sequences(events) == {"2": ["1"], "1": ["2", "1"]}


def test_movielens_errors_name_file_column_and_row(movielens):
    write(movielens / "bad_fields.dat", "1::1::5::978300760\n1::2::5\n")
    with pytest.raises(DataError, match=r"bad_fields\.dat: row 1 .*expected 3 or 4 fields"):
        formats.load_movielens_dat(movielens, "bad_fields.dat")
    write(movielens / "bad_rating.dat", "1::1::5\n1::2::five\n")
    with pytest.raises(
        DataError, match=r"bad_rating\.dat: column 'Rating', row 1 \(value 'five'\)"
    ):
        formats.load_movielens_dat(movielens, "bad_rating.dat")
    write(movielens / "unknown.dat", "1::1::5\n1::99::4\n")
    with pytest.raises(DataError, match=r"unknown\.dat: column 'MovieID', row 1 \(value '99'\)"):
        formats.load_movielens_dat(movielens, "unknown.dat")
    write(movielens / "bad_user.dat", "x1::1::5\n")
    with pytest.raises(DataError, match=r"column 'UserID', row 0"):
        formats.load_movielens_dat(movielens, "bad_user.dat")
    with pytest.raises(DataError, match=r"missing\.dat: file not found"):
        formats.load_movielens_dat(movielens, "missing.dat")
    (movielens / "movies.dat").unlink()
    with pytest.raises(DataError, match=r"movies\.dat: file not found"):
        formats.load_movielens_dat(movielens, "ratings.dat")


def test_corrupt_gzip_and_bad_encoding_are_data_errors(tmp_path):
    write(tmp_path / "movies.dat", "1::Movie::Drama\n")
    (tmp_path / "ratings.dat.gz").write_bytes(b"\x1f\x8bnot really gzip")
    with pytest.raises(DataError, match=r"ratings\.dat\.gz: unreadable file"):
        formats.load_movielens_dat(tmp_path, "ratings.dat.gz")
    (tmp_path / "seq.txt").write_bytes(b"1 1\n1 \xff\n")
    with pytest.raises(DataError, match=r"seq\.txt: unreadable encoding at byte 6; expected utf-8"):
        formats.load_sasrec(tmp_path / "seq.txt")
    (tmp_path / "bad.csv").write_bytes(b"InvoiceNo\n\xff\n")
    with pytest.raises(DataError, match=r"bad\.csv: unreadable encoding"):
        formats.load_online_retail(tmp_path / "bad.csv")


# --- SASRec ---------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_load_sasrec_keeps_order_per_user(tmp_path, gz):
    path = write(tmp_path / ("seq.txt.gz" if gz else "seq.txt"), "1 5\n2 7\n1 3\n1 5\n", gz=gz)
    assert formats.load_sasrec(path) == {"1": ["5", "3", "5"], "2": ["7"]}


def test_load_sasrec_item_map_translates_and_rejects_unknown_items(tmp_path):
    path = write(tmp_path / "seq.txt", "1 1\n1 2\n")
    assert formats.load_sasrec(path, item_map={1: 1198, "2": "3552"}) == {"1": ["1198", "3552"]}
    with pytest.raises(DataError, match=r"seq\.txt: column 'item', row 1 \(value '2'\)"):
        formats.load_sasrec(path, item_map={"1": "1198"})


def test_load_sasrec_bad_line_names_the_row(tmp_path):
    path = write(tmp_path / "seq.txt", "1 1\n1 2 3\n")
    with pytest.raises(DataError, match=r"seq\.txt: row 1 \(value '1 2 3'\): expected 2 fields"):
        formats.load_sasrec(path)
    with pytest.raises(DataError, match="file not found"):
        formats.load_sasrec(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="the file is empty"):
        formats.load_sasrec(write(tmp_path / "empty.txt", ""))


def test_load_sasrec_item_map_as_catalog(tmp_path):
    path = write(
        tmp_path / "map.tsv",
        "sasrec_item\tmovie_id\ttitle\tgenres\n"
        '1\t1198\tRaiders of the Lost Ark (1981)\tAction|Adventure\n2\t3552\t"Quoted" (1980)\tComedy\n',
    )
    catalog = formats.load_sasrec_item_map(path)
    assert catalog["product_id"].tolist() == ["1", "2"]
    assert catalog["title"].tolist()[1] == '"Quoted" (1980)'
    assert catalog["category"].tolist() == ["Action", "Comedy"]
    assert catalog["description"].tolist()[0] == "Action, Adventure"
    assert catalog["movie_id"].tolist() == ["1198", "3552"]
    bad = write(tmp_path / "bad.tsv", "sasrec_item\ttitle\n1\tA\n")
    with pytest.raises(DataError, match=r"bad\.tsv: column 'genres'"):
        formats.load_sasrec_item_map(bad)


def test_sequences_to_events_round_trips_through_user_sequences():
    sequences = {"u1": ["a", "b", "a"], "u2": ["c"]}
    events = formats.sequences_to_events(sequences)
    assert list(events.columns) == ["user_id", "product_id", "event", "timestamp"]
    assert events["timestamp"].is_monotonic_increasing
    assert user_sequences(events) == sequences
    with pytest.raises(ValueError, match="no items"):
        formats.sequences_to_events({"u": []})
    with pytest.raises(ValueError, match="`event`"):
        formats.sequences_to_events(sequences, event="click")


# --- Online Retail --------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_online_retail_applies_protocol_p1_filters(tmp_path, gz):
    path = write(tmp_path / "retail.csv", RETAIL_HEADER + "\n".join(RETAIL_ROWS) + "\n", gz=gz)
    catalog, events = formats.load_online_retail(path)
    assert len(events) == 4
    assert events["user_id"].tolist() == ["17850", "17850", "13047", "13047"]
    assert events["product_id"].tolist() == ["85123A", "71053", "85123A", "85123A"]
    assert events["quantity"].tolist() == [6, 6, 2, 1]
    assert events["price"].tolist() == [2.55, 3.39, 2.95, 2.65]
    assert events["invoice"].tolist() == ["536365", "536365", "536366", "536367"]
    assert events["timestamp"].iloc[2] == pd.Timestamp("2010-12-01 09:00:00", tz="UTC")
    assert catalog.set_index("product_id").to_dict("index") == {
        "71053": {"title": "White Metal Lantern", "category": "lantern", "price": 3.39},
        "85123A": {
            "title": "White Hanging Heart T-Light Holder",
            "category": "holder",
            "price": 2.65,
        },
    }


def test_online_retail_errors_name_column_and_row(tmp_path):
    rows = RETAIL_ROWS[:2] + ["536365,71053,LANTERN,six,2010-12-01 08:26:00,3.39,17850,UK"]
    path = write(tmp_path / "retail.csv", RETAIL_HEADER + "\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"retail\.csv: column 'Quantity', row 2 \(value 'six'\)"):
        formats.load_online_retail(path)
    rows = RETAIL_ROWS[:1] + ["536365,71053,LANTERN,6,yesterday,3.39,17850,UK"]
    path = write(tmp_path / "dates.csv", RETAIL_HEADER + "\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"dates\.csv: column 'InvoiceDate', row 1"):
        formats.load_online_retail(path)
    path = write(tmp_path / "cols.csv", "InvoiceNo,StockCode\n1,2\n")
    with pytest.raises(DataError, match=r"cols\.csv: column 'Description'"):
        formats.load_online_retail(path)


def test_retail_category_and_title_helpers():
    assert formats.retail_category("LUNCH BAG RED RETROSPOT") == "bag"
    assert formats.retail_category("SET OF 6 SPICE TINS") == "tin"
    assert formats.retail_category("PACK OF 72 RETROSPOT CAKE CASES") == "case"
    assert formats.retail_category("HANGING DOILIES") == "doily"
    assert formats.retail_category("72") == "other"
    assert formats.readable_title("  WHITE   METAL LANTERN ") == "White Metal Lantern"


# --- Reviews, PriceRunner -------------------------------------------------------------------


def test_clothing_reviews_drop_rows_without_text(tmp_path):
    path = write(tmp_path / "reviews.csv.gz", CLOTHING, gz=True)
    reviews = formats.load_clothing_reviews(path)
    assert reviews["product_id"].tolist() == ["767", "1077"]
    assert reviews["text"].tolist()[1] == "I had such high hopes\nfor this dress"
    assert reviews["rating"].tolist() == [4.0, 3.0]
    assert reviews["recommended"].tolist() == [True, False]
    assert reviews["title"].isna().tolist() == [True, False]
    assert reviews["department"].tolist() == ["Intimate", "Dresses"]
    assert reviews["class_name"].tolist() == ["Intimates", "Dresses"]
    assert "user_id" not in reviews


def test_clothing_reviews_errors_report_file_rows(tmp_path):
    bad = CLOTHING.replace('"I had such high hopes\nfor this dress",3,0', '"Nice",7,0')
    with pytest.raises(
        DataError, match=r"column 'Rating', row 2 \(value 7\.0\): rating out of range"
    ):
        formats.load_clothing_reviews(write(tmp_path / "reviews.csv", bad))
    bad = CLOTHING.replace('"Absolutely wonderful, silky",4,1', '"Absolutely wonderful",4,maybe')
    with pytest.raises(DataError, match=r"reviews2\.csv: column 'Recommended IND', row 0"):
        formats.load_clothing_reviews(write(tmp_path / "reviews2.csv", bad))
    no_text = CLOTHING.replace("Review Text", "Text")
    with pytest.raises(DataError, match=r"column 'Review Text'"):
        formats.load_clothing_reviews(write(tmp_path / "reviews3.csv", no_text))


def test_pricerunner_normalizes_header_and_types(tmp_path):
    frame = formats.load_pricerunner(write(tmp_path / "pr.csv.gz", PRICERUNNER, gz=True))
    assert list(frame.columns) == ["product_id", "title", "category", "cluster_id", "merchant_id"]
    assert frame["product_id"].tolist() == ["1", "2", "3"]
    assert frame["category"].tolist() == ["Mobile Phones", "Mobile Phones", "Washing Machines"]
    assert frame["cluster_id"].tolist() == ["1", "1", "7"]
    assert frame["merchant_id"].tolist() == ["1", "2", "3"]


def test_pricerunner_errors_name_the_file_column(tmp_path):
    duplicate = PRICERUNNER.replace("\n3,bosch", "\n2,bosch")
    with pytest.raises(
        DataError, match=r"pr\.csv: column 'Product ID', row 2 \(value '2'\): duplicate"
    ):
        formats.load_pricerunner(write(tmp_path / "pr.csv", duplicate))
    no_cluster = PRICERUNNER.replace(",3,7,Bosch", ",3,,Bosch")
    with pytest.raises(DataError, match=r"column ' Cluster ID', row 2"):
        formats.load_pricerunner(write(tmp_path / "pr2.csv", no_cluster))
    with pytest.raises(DataError, match=r"column 'Category Label'"):
        formats.load_pricerunner(write(tmp_path / "pr3.csv", "Product ID,Product Title\n1,a\n"))


# --- UniSRec --------------------------------------------------------------------------------


@pytest.fixture
def unisrec(tmp_path):
    write(
        tmp_path / "Toy.text",
        "item_id:token\ttext:token_seq\n"
        "B2\tGlue, 8 oz. Industrial & Scientific Tapes Glue. Gorilla. \n"
        "B1\tMr. Tape. Industrial & Scientific Tapes. 3M. \n"
        "B3\tLoose item. . . \n",
    )
    write(tmp_path / "Toy.item2index", "B1\t0\nB2\t1\nB3\t2\n")
    header = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    write(tmp_path / "Toy.train.inter", header + "0\t0\t1\n")
    write(tmp_path / "Toy.valid.inter", header + "0\t0 1\t2\n1\t\t2\n")
    write(tmp_path / "Toy.test.inter", header + "0\t0 1 2\t1\n1\t2\t0\n")
    return tmp_path


def test_load_unisrec_catalog_and_sequences(unisrec):
    catalog, sequences = formats.load_unisrec(unisrec, name="Toy")
    assert catalog["product_id"].tolist() == ["0", "1", "2"]
    assert catalog["asin"].tolist() == ["B1", "B2", "B3"]
    assert catalog["title"].tolist() == ["Mr. Tape", "Glue, 8 oz", "Loose item"]
    assert catalog["brand"].tolist()[:2] == ["3M", "Gorilla"]
    assert catalog["category"].tolist()[2] == "unknown"
    assert catalog["description"].iloc[1].startswith("Glue, 8 oz. Industrial")
    assert sequences == {"0": ["0", "1", "2", "1"], "1": ["2", "0"]}


def test_load_unisrec_splits(unisrec):
    splits = formats.load_unisrec_splits(unisrec, name="Toy")
    assert splits["train"] == [SequenceExample("0", ("0",), "1")]
    assert splits["valid"][1] == SequenceExample("1", (), "2")
    assert splits["test"][0] == SequenceExample("0", ("0", "1", "2"), "1")


def test_load_unisrec_errors(unisrec):
    write(unisrec / "Toy.item2index", "B1\t0\nB2\t1\n")
    with pytest.raises(DataError, match=r"Toy\.text: column 'item_id', row 2 \(value 'B3'\)"):
        formats.load_unisrec(unisrec, name="Toy")
    with pytest.raises(DataError, match=r"Other\.text: file not found"):
        formats.load_unisrec(unisrec, name="Other")


# --- The real files (skipped where ../shared/data is missing) --------------------------------

DATA = formats.shared_data_dir()
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"no shared data at {DATA}")


@needs_data
def test_real_online_retail_matches_protocol_p1():
    catalog, events = formats.load_online_retail(DATA / "online-retail" / "online_retail.csv.gz")
    assert len(events) == 396_337
    train = events[events["timestamp"] < pd.Timestamp("2011-11-09", tz="UTC")]
    assert train["product_id"].nunique() == 3_618
    assert catalog["product_id"].is_unique and set(catalog["product_id"]) == set(
        events["product_id"]
    )


@needs_data
def test_real_reviews_and_pricerunner_counts():
    folder = DATA / "womens-clothing-reviews"
    reviews = formats.load_clothing_reviews(folder / "womens_clothing_ecommerce_reviews.csv.gz")
    assert len(reviews) == 22_641
    folder = DATA / "pricerunner-product-classification"
    offers = formats.load_pricerunner(folder / "pricerunner_aggregate.csv.gz")
    assert (len(offers), offers["cluster_id"].nunique(), offers["category"].nunique()) == (
        35_311,
        13_233,
        10,
    )


@needs_data
def test_real_movielens_and_sasrec_counts():
    catalog, events = formats.load_movielens_dat(DATA / "movielens-1m")
    assert (len(catalog), len(events), events["user_id"].nunique()) == (3_883, 487_650, 2_999)
    sequences = formats.load_sasrec(DATA / "movielens-1m" / "ml-1m-sasrec.txt.gz")
    assert (len(sequences), sum(map(len, sequences.values()))) == (6_040, 999_611)
    items = formats.load_sasrec_item_map(DATA / "movielens-1m" / "sasrec_item_map.tsv")
    assert len(items) == 3_416 and set(items["product_id"]) == {
        i for s in sequences.values() for i in s
    }


@needs_data
def test_real_unisrec_scientific_counts():
    catalog, sequences = formats.load_unisrec(DATA / "amazon-scientific")
    assert (len(catalog), len(sequences), sum(map(len, sequences.values()))) == (
        4_385,
        8_442,
        59_384,
    )
    _, _, test = leave_one_out(sequences)
    assert test == formats.load_unisrec_splits(DATA / "amazon-scientific", parts=("test",))["test"]
