"""Product catalogs in a worker: id -> title, category, and the texts a buy model sees.

A catalog comes from a model's version directory (`catalog.parquet`, saved at export) or from a
catalog file given to the server (`RECSYS_CATALOG`). The texts are built by the same functions
the buy model was trained and exported with (`recsys.data.buy_pairs.catalog_texts`), so the
serving side never drifts from training.

Example:
>>> import pandas as pd
>>> c = Catalog(pd.DataFrame({"product_id": ["p1"], "title": ["Mug"], "category": ["kitchen"],
...                           "price": [12.0]}))
>>> "p1" in c, c.meta("p1"), c.product_text("p1")
(True, ('Mug', 'kitchen'), 'Mug | kitchen | price low')
"""

from __future__ import annotations

import pathlib

import pandas as pd

from recsys import schema


class Catalog:
    """An immutable view of a catalog table (`product_id`, `title`, `category`, ...)."""

    def __init__(self, frame: pd.DataFrame, source="<catalog>"):
        from recsys.data.buy_pairs import catalog_texts

        if "product_id" not in frame.columns:
            raise ValueError(f"{source}: the catalog has no `product_id` column.")
        frame = frame.drop_duplicates("product_id", keep="first")
        frame = frame.assign(product_id=frame["product_id"].astype(str))
        for column in ("title", "category"):  # a ranker's catalog may carry ids only
            if column not in frame.columns:
                frame = frame.assign(**{column: None})
        self.source = source
        self.ids = frame["product_id"].tolist()
        self._meta = {
            pid: (_text_or_none(title), _text_or_none(category))
            for pid, title, category in zip(
                self.ids, frame["title"], frame["category"], strict=True
            )
        }
        described = frame[frame["title"].notna() & frame["category"].notna()]
        self._items, self._products = catalog_texts(described)

    @classmethod
    def read(cls, path):
        """A catalog from a Parquet or CSV file (`recsys.data.catalog` validates it)."""
        from recsys.data.catalog import load_catalog

        path = pathlib.Path(path)
        if path.suffix == ".parquet" and path.parent.joinpath(schema.MODEL_CARD).exists():
            return cls(pd.read_parquet(path), source=str(path))  # written by our own export
        return cls(load_catalog(path), source=str(path))

    def __contains__(self, product_id) -> bool:
        return product_id in self._meta

    def __len__(self) -> int:
        return len(self._meta)

    def meta(self, product_id):
        """`(title, category)`, or `(None, None)` for an unknown id."""
        return self._meta.get(product_id, (None, None))

    def category(self, product_id):
        return self._meta.get(product_id, (None, None))[1]

    def describes(self, product_id) -> bool:
        """True when the catalog has the title and category a buy model needs."""
        return product_id in self._products

    def item_text(self, product_id):
        """The product as a history item in a user context (no purchase mark)."""
        return self._items[product_id]

    def product_text(self, product_id):
        """The product as a buy-probability candidate (title, category, brand, price band)."""
        return self._products[product_id]


def _text_or_none(value):
    if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
        return None
    return str(value)
