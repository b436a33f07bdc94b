"""Catalogs in a worker: full catalogs give buy-model texts; a ranker's may carry ids only."""

import pandas as pd

from serving.catalog import Catalog


def test_texts_match_the_buy_model_format():
    c = Catalog(
        pd.DataFrame(
            {
                "product_id": ["p1", "p2"],
                "title": ["Mug; blue", "Cap"],
                "category": ["kitchen", "hats"],
                "brand": ["Acme", None],
                "price": [12.0, None],
            }
        )
    )
    assert c.product_text("p1") == "Mug, blue | kitchen | Acme | price low"
    assert c.item_text("p2") == "Cap | hats"
    assert c.describes("p1") and "p2" in c and len(c) == 2


def test_a_catalog_of_ids_only_or_with_gaps_is_still_usable():
    ids_only = Catalog(pd.DataFrame({"product_id": [1, 2], "popularity": [5, 3]}))
    assert "1" in ids_only and ids_only.meta("1") == (None, None) and not ids_only.describes("1")
    gaps = Catalog(
        pd.DataFrame({"product_id": ["a", "b"], "title": ["A", None], "category": ["x", "y"]})
    )
    assert gaps.meta("b") == (None, "y") and gaps.describes("a") and not gaps.describes("b")
    assert gaps.meta("zzz") == (None, None) and gaps.category("a") == "x"
