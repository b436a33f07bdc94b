import json

import numpy as np
import pandas as pd
import pytest

from recsys.data import splits
from recsys.data.errors import DataError
from recsys.data.splits import ItemVocabulary, SequenceExample
from recsys.schema import NUM_RESERVED_IDS, OOV_ID, PAD_ID


def events_frame(rows):
    user, product, seconds = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            "user_id": list(user),
            "product_id": list(product),
            "event": "purchase",
            "timestamp": pd.to_datetime(list(seconds), unit="s", utc=True),
        }
    )


# --- leave-one-out --------------------------------------------------------------------------


def test_leave_one_out_targets_and_histories():
    train, valid, test = splits.leave_one_out({"u1": ["a", "b", "c", "d"], "u2": ("x", "y", "z")})
    assert train == {"u1": ["a", "b"], "u2": ["x"]}
    assert valid == [SequenceExample("u1", ("a", "b"), "c"), SequenceExample("u2", ("x",), "y")]
    assert test == [
        SequenceExample("u1", ("a", "b", "c"), "d"),
        SequenceExample("u2", ("x", "y"), "z"),
    ]


def test_leave_one_out_short_users_stay_in_train_only():
    train, valid, test = splits.leave_one_out({"short": ["a", "b"], "one": ["c"], "none": []})
    assert train == {"short": ["a", "b"], "one": ["c"]}
    assert valid == [] and test == []
    with pytest.raises(ValueError, match="empty"):
        splits.leave_one_out({})


def test_leave_one_out_events_by_time_with_stable_ties():
    events = events_frame(
        [
            ("u", "c", 30),
            ("u", "a", 10),
            ("u", "b", 20),
            ("u", "d", 30),
            ("v", "x", 5),
            ("v", "y", 6),
        ]
    )
    train, valid, test = splits.leave_one_out_events(events)
    assert train["product_id"].tolist() == ["x", "y", "a", "b"]
    assert valid["product_id"].tolist() == ["c"]
    assert test["product_id"].tolist() == ["d"]
    assert len(train) + len(valid) + len(test) == len(events)
    with pytest.raises(DataError, match="user_id"):
        splits.leave_one_out_events(events.drop(columns="user_id"))


def test_leave_one_out_events_agrees_with_sequences():
    rng = np.random.default_rng(0)
    rows = [
        (f"u{rng.integers(5)}", f"p{rng.integers(20)}", int(t)) for t in rng.integers(0, 50, 60)
    ]
    events = events_frame(rows)
    train, valid, test = splits.leave_one_out_events(events)
    seq_train, seq_valid, seq_test = splits.leave_one_out(splits.user_sequences(events))
    assert {e.user: e.target for e in seq_test} == dict(
        zip(test["user_id"], test["product_id"], strict=True)
    )
    assert {e.user: e.target for e in seq_valid} == dict(
        zip(valid["user_id"], valid["product_id"], strict=True)
    )
    assert splits.user_sequences(train) == seq_train


# --- time split -----------------------------------------------------------------------------


def test_time_split_at_cutoff():
    events = events_frame([("u", "a", 0), ("u", "b", 100), ("u", "c", 200)])
    before, after = splits.time_split(events, pd.Timestamp(100, unit="s"))
    assert before["product_id"].tolist() == ["a"]
    assert after["product_id"].tolist() == ["b", "c"]
    before, _ = splits.time_split(events, "1970-01-01T00:01:00+01:00")  # before the data
    assert len(before) == 0


def test_time_split_bad_arguments():
    events = events_frame([("u", "a", 0)])
    with pytest.raises(ValueError, match="cutoff"):
        splits.time_split(events, "not a date")
    with pytest.raises(DataError, match="timestamp"):
        splits.time_split(events.assign(timestamp="2020-01-01"), "2020-01-01")
    with pytest.raises(DataError, match="timestamp"):
        splits.time_split(events.drop(columns="timestamp"), "2020-01-01")


# --- stratified and group splits ------------------------------------------------------------


@pytest.fixture
def labelled():
    rng = np.random.default_rng(1)
    return pd.DataFrame(
        {"x": np.arange(1000), "y": rng.choice(["a", "b", "c"], 1000, p=[0.7, 0.2, 0.1])}
    )


def test_stratified_split_is_deterministic_and_covers_every_row(labelled):
    first = splits.stratified_split(labelled, "y", seed=3)
    again = splits.stratified_split(labelled, "y", seed=3)
    other = splits.stratified_split(labelled, "y", seed=4)
    assert all(a.equals(b) for a, b in zip(first, again, strict=True))
    assert not first[0].equals(other[0])
    indices = np.concatenate([part.index.to_numpy() for part in first])
    assert sorted(indices.tolist()) == list(range(1000))


def test_stratified_split_keeps_label_proportions(labelled):
    parts = splits.stratified_split(labelled, "y", fractions=(0.8, 0.1, 0.1))
    counts = labelled["y"].value_counts()
    for part, fraction in zip(parts, (0.8, 0.1, 0.1), strict=True):
        part_counts = part["y"].value_counts()
        for label, n in counts.items():
            assert abs(part_counts[label] - fraction * n) <= 1
    assert all(abs(len(p) - f * 1000) <= 3 for p, f in zip(parts, (0.8, 0.1, 0.1), strict=True))


def test_stratified_split_errors(labelled):
    with pytest.raises(ValueError, match="sum to 1"):
        splits.stratified_split(labelled, "y", fractions=(0.8, 0.1))
    with pytest.raises(ValueError, match="non-negative"):
        splits.stratified_split(labelled, "y", fractions=(1.2, -0.2))
    with pytest.raises(ValueError, match="no rows"):
        splits.stratified_split(labelled.iloc[:0], "y")
    with pytest.raises(DataError, match="'rare' has 2 row"):
        splits.stratified_split(pd.DataFrame({"y": ["a"] * 10 + ["rare"] * 2}), "y")
    with pytest.raises(DataError, match=r"column 'y', row 1"):
        splits.stratified_split(pd.DataFrame({"y": ["a", None, "a"]}), "y")
    with pytest.raises(DataError, match="lacks column"):
        splits.stratified_split(labelled, "label")


def test_stratified_split_gives_small_labels_a_row_in_each_part():
    frame = pd.DataFrame({"y": ["a"] * 97 + ["b"] * 3})
    parts = splits.stratified_split(frame, "y")
    assert [int((p["y"] == "b").sum()) for p in parts] == [1, 1, 1]


def test_group_split_groups_never_straddle(labelled):
    frame = labelled.assign(group=labelled["x"] // 7)
    parts = splits.group_split(frame, "group", fractions=(0.6, 0.2, 0.2), seed=5)
    groups = [set(p["group"]) for p in parts]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert sum(len(p) for p in parts) == len(frame)
    total = frame["group"].nunique()
    assert sum(len(g) for g in groups) == total
    assert all(abs(len(g) - f * total) < 1 for g, f in zip(groups, (0.6, 0.2, 0.2), strict=True))
    again = splits.group_split(frame, "group", fractions=(0.6, 0.2, 0.2), seed=5)
    assert all(a.equals(b) for a, b in zip(parts, again, strict=True))


def test_group_split_errors():
    with pytest.raises(DataError, match="1 group"):
        splits.group_split(pd.DataFrame({"g": [1, 1]}), "g", fractions=(0.5, 0.5))
    with pytest.raises(ValueError, match="sum to 1"):
        splits.group_split(pd.DataFrame({"g": [1, 2]}), "g", fractions=(0.5, 0.6))


# --- user sequences -------------------------------------------------------------------------


def test_user_sequences_order_truncation_and_event_filter():
    events = events_frame([("u", "a", 3), ("v", "x", 0), ("u", "b", 1), ("u", "c", 2)])
    events.loc[3, "event"] = "view"
    assert splits.user_sequences(events) == {"v": ["x"], "u": ["b", "c", "a"]}
    assert splits.user_sequences(events, max_length=2) == {"v": ["x"], "u": ["c", "a"]}
    assert splits.user_sequences(events, event_types=["purchase"]) == {"v": ["x"], "u": ["b", "a"]}
    assert splits.user_sequences(events, event_types="view") == {"u": ["c"]}


def test_user_sequences_errors():
    events = events_frame([("u", "a", 0)])
    with pytest.raises(ValueError, match="max_length"):
        splits.user_sequences(events, max_length=0)
    with pytest.raises(ValueError, match="Unknown event types"):
        splits.user_sequences(events, event_types=["click"])
    with pytest.raises(ValueError, match="no rows"):
        splits.user_sequences(events.iloc[:0])
    with pytest.raises(DataError, match="product_id"):
        splits.user_sequences(events.drop(columns="product_id"))


# --- item vocabulary ------------------------------------------------------------------------


def test_vocabulary_reserved_ids_and_round_trip():
    vocab = ItemVocabulary.build(["b", "a", "b", "c"])
    assert len(vocab) == 3 + NUM_RESERVED_IDS
    encoded = vocab.encode(["b", "a", "c", "unseen"])
    assert encoded.dtype == np.int64
    assert encoded.tolist() == [
        NUM_RESERVED_IDS,
        NUM_RESERVED_IDS + 1,
        NUM_RESERVED_IDS + 2,
        OOV_ID,
    ]
    assert vocab.decode(vocab.encode(["c", "a"])) == ["c", "a"]
    assert vocab.decode([PAD_ID, OOV_ID]) == [splits.PAD_TOKEN, splits.OOV_TOKEN]
    assert "a" in vocab and "zz" not in vocab
    saved = json.dumps(vocab.to_list())
    assert ItemVocabulary.from_list(json.loads(saved)) == vocab
    assert vocab.to_list() == ["b", "a", "c"]


def test_vocabulary_errors():
    with pytest.raises(ValueError, match="at least one item"):
        ItemVocabulary.build([])
    with pytest.raises(ValueError, match="distinct"):
        ItemVocabulary.from_list(["a", "a"])
    with pytest.raises(ValueError, match="reserved"):
        ItemVocabulary.from_list(["a", "[PAD]"])
    with pytest.raises(ValueError, match="out of range"):
        ItemVocabulary.build(["a"]).decode([3])
