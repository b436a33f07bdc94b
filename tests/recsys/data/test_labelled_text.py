import pandas as pd
import pytest

from recsys.data import labelled_text as lt
from recsys.data.errors import DataError


def _raw(n=30):
    return pd.DataFrame(
        {
            "title": [f"t{i}" if i % 3 else None for i in range(n)],
            "text": [f"text {i}" for i in range(n)],
            "rating": [float(1 + i % 5) for i in range(n)],
            "tags": ["a|b" if i % 2 else "c" for i in range(n)],
        }
    )


def test_examples_join_titles_and_drop_empty_texts():
    raw = pd.DataFrame({"title": ["A", None, " "], "text": ["x", "y", ""], "rating": [5, 1, 3]})
    frame = lt.examples(raw, ["title", "text"], "sentiment")
    assert frame["text"].tolist() == ["A. x", "y"]
    assert frame["label"].tolist() == ["positive", "negative"]


def test_examples_refuse_missing_labels_columns_and_empty_data():
    raw = pd.DataFrame({"text": ["x", "y"], "label": ["a", None]})
    with pytest.raises(DataError, match="missing label"):
        lt.examples(raw, ["text"], "label")
    with pytest.raises(DataError, match="no column 'body'"):
        lt.examples(raw, ["body"], "label")
    with pytest.raises(DataError, match="no examples"):
        lt.examples(raw.iloc[:0], ["text"], "label")


def test_max_examples_keeps_a_seeded_sample_in_row_order():
    frame = lt.examples(_raw(), ["text"], "rating", max_examples=10, seed=1)
    again = lt.examples(_raw(), ["text"], "rating", max_examples=10, seed=1)
    assert len(frame) == 10 and frame.index.is_monotonic_increasing
    assert frame.index.tolist() == again.index.tolist()
    assert set(frame["label"]) <= {"1", "2", "3", "4", "5"}


def test_label_names_from_data_or_given_and_refusals():
    multi = lt.examples(_raw(), ["text"], "tags", multi_label=True)
    assert lt.label_names(multi["label"], multi_label=True) == ("a", "b", "c")
    assert lt.label_names(pd.Series(["x", "y"]), given=("y", "x", "z")) == ("y", "x", "z")
    with pytest.raises(DataError, match="not in model.labels"):
        lt.label_names(pd.Series(["x", "w"]), given=("x", "y"))
    with pytest.raises(DataError, match="at least two classes"):
        lt.label_names(pd.Series(["x", "x"]))


def test_split_examples_stratified_random_and_from_a_column():
    frame = lt.examples(_raw(), ["text"], "sentiment")
    train, validation, test = lt.split_examples(frame, (0.6, 0.2, 0.2), seed=0)
    assert len(train) + len(validation) + len(test) == len(frame)
    assert set(validation["label"]) == set(frame["label"])  # every class in every part
    multi = lt.examples(_raw(), ["text"], "tags", multi_label=True)
    parts = lt.split_examples(multi, (0.6, 0.2, 0.2), multi_label=True)
    assert [len(p) for p in parts] == [18, 6, 6]
    marked = frame.assign(split=["train"] * 20 + ["validation"] * 5 + ["test"] * 5)
    assert [len(p) for p in lt.split_examples(marked, column="part")] == [20, 5, 5]
    with pytest.raises(DataError, match="unknown part"):
        lt.split_examples(marked.assign(split="dev"), column="part")
    with pytest.raises(DataError, match="validation part has no examples"):
        lt.split_examples(marked.assign(split="train"), column="part")
