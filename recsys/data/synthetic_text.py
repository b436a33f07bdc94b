"""Vocabularies and text templates for the synthetic store (`recsys.data.synthetic`).

Everything here is plain data plus small pure functions that turn attribute indices into
titles, descriptions and review text. Randomness comes in through a `numpy` Generator so the
caller controls the seed.

Example:
>>> product_title("Northwind", "Merino", "Cozy", "Sweater", "M")
'Northwind Merino Cozy Sweater, Size M'
>>> product_title("Lumen", "Brass", "Modern", "Desk Lamp", "")
'Lumen Brass Modern Desk Lamp, One Size'
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Category:
    """One catalog category and the attribute values its products draw from."""

    name: str
    types: tuple
    materials: tuple
    sizes: tuple
    base_price: float
    blurb: str


_CLOTHES = ("XS", "S", "M", "L", "XL")
_SHOES = ("38", "39", "40", "41", "42", "43", "44", "45")

CATEGORIES = (
    Category(
        "sweaters",
        ("Sweater", "Cardigan", "Hoodie", "Turtleneck"),
        ("Merino", "Cashmere", "Cotton", "Wool", "Alpaca"),
        _CLOTHES,
        60.0,
        "Soft knitwear for cold days.",
    ),
    Category(
        "jackets",
        ("Jacket", "Parka", "Bomber", "Raincoat"),
        ("Leather", "Denim", "Nylon", "Wool", "Down"),
        _CLOTHES,
        120.0,
        "Outerwear built for the weather.",
    ),
    Category(
        "shirts",
        ("Shirt", "Overshirt", "Blouse", "Polo"),
        ("Linen", "Cotton", "Flannel", "Silk", "Oxford"),
        _CLOTHES,
        35.0,
        "A shirt for the office or the weekend.",
    ),
    Category(
        "trousers",
        ("Jeans", "Chinos", "Joggers", "Trousers"),
        ("Denim", "Corduroy", "Cotton", "Linen", "Wool"),
        ("28", "30", "32", "34", "36"),
        55.0,
        "Trousers cut for everyday wear.",
    ),
    Category(
        "sneakers",
        ("Sneaker", "Running Shoe", "Trainer", "Slip-On"),
        ("Canvas", "Leather", "Suede", "Mesh"),
        _SHOES,
        75.0,
        "Light shoes for city miles.",
    ),
    Category(
        "boots",
        ("Boot", "Chelsea Boot", "Hiking Boot", "Ankle Boot"),
        ("Leather", "Suede", "Rubber", "Wool"),
        _SHOES,
        130.0,
        "Sturdy boots for rough ground.",
    ),
    Category(
        "bags",
        ("Backpack", "Tote", "Duffel", "Messenger Bag"),
        ("Canvas", "Leather", "Nylon", "Cotton"),
        ("15L", "20L", "30L"),
        70.0,
        "Carry everything you need.",
    ),
    Category(
        "watches",
        ("Watch", "Chronograph", "Dive Watch", "Field Watch"),
        ("Steel", "Titanium", "Leather", "Ceramic"),
        ("36mm", "40mm", "42mm"),
        180.0,
        "A timepiece made to last.",
    ),
    Category(
        "headphones",
        ("Headphones", "Earbuds", "Headset", "Speaker"),
        ("Aluminium", "Plastic", "Leather", "Steel"),
        ("",),
        90.0,
        "Clear sound at home or on the move.",
    ),
    Category(
        "mugs",
        ("Mug", "Tumbler", "Teacup", "Travel Mug"),
        ("Ceramic", "Stoneware", "Glass", "Steel"),
        ("8 oz", "12 oz", "16 oz"),
        14.0,
        "For your morning coffee or tea.",
    ),
    Category(
        "lamps",
        ("Desk Lamp", "Floor Lamp", "Pendant", "Table Lamp"),
        ("Brass", "Oak", "Glass", "Ceramic", "Steel"),
        ("Small", "Medium", "Large"),
        65.0,
        "Warm light for any room.",
    ),
    Category(
        "bedding",
        ("Duvet Cover", "Throw", "Pillowcase", "Sheet Set"),
        ("Cotton", "Linen", "Wool", "Silk"),
        ("Single", "Double", "King"),
        50.0,
        "Sleep well, night after night.",
    ),
)

# (name, price multiplier): a brand's tier shows up in its prices.
BRANDS = (
    ("Northwind", 1.0),
    ("Alder & Co", 1.6),
    ("Bluepeak", 0.8),
    ("Cobalt", 1.2),
    ("Driftwood", 0.9),
    ("Evergreen", 1.1),
    ("Foxglove", 1.8),
    ("Granite", 1.0),
    ("Harbor", 0.7),
    ("Ironbark", 1.4),
    ("Juniper", 0.9),
    ("Kestrel", 2.2),
    ("Lumen", 1.3),
    ("Meridian", 2.5),
    ("Nimbus", 0.6),
    ("Oakhurst", 1.5),
    ("Pinecrest", 0.8),
    ("Quill", 1.1),
    ("Redwood", 1.0),
    ("Saltmarsh", 1.7),
    ("Tidewater", 0.7),
    ("Umber", 1.2),
    ("Vantage", 2.0),
    ("Willow Lane", 0.9),
)

MATERIAL_PRICE = {
    "Cashmere": 2.2,
    "Silk": 1.8,
    "Leather": 1.6,
    "Titanium": 1.7,
    "Down": 1.6,
    "Alpaca": 1.6,
    "Merino": 1.4,
    "Brass": 1.4,
    "Suede": 1.3,
    "Oak": 1.3,
    "Wool": 1.2,
    "Ceramic": 1.1,
    "Linen": 1.1,
    "Stoneware": 1.0,
    "Steel": 1.0,
    "Corduroy": 1.0,
    "Aluminium": 1.0,
    "Oxford": 1.0,
    "Flannel": 0.9,
    "Denim": 0.9,
    "Glass": 0.9,
    "Cotton": 0.8,
    "Canvas": 0.8,
    "Rubber": 0.8,
    "Nylon": 0.8,
    "Mesh": 0.7,
    "Plastic": 0.6,
}
MATERIALS = tuple(sorted({m for c in CATEGORIES for m in c.materials}))

ADJECTIVES = (
    "Classic",
    "Essential",
    "Everyday",
    "Modern",
    "Vintage",
    "Cozy",
    "Compact",
    "Lightweight",
    "Heritage",
    "Urban",
    "Signature",
    "Relaxed",
    "Rugged",
    "Slim",
)

_DESCRIPTIONS = (
    "{adj} {type} by {brand}, made from {material}. {blurb}",
    "{brand} makes this {type} in {material}. {blurb}",
    "{a} {adj} {type} in {material} from {brand}. {blurb}",
)


def product_title(brand, material, adjective, ptype, size) -> str:
    """A readable product title: brand, material, adjective, type and size."""
    size_text = f"Size {size}" if size else "One Size"
    return f"{brand} {material} {adjective} {ptype}, {size_text}"


def product_description(template, brand, material, adjective, ptype, blurb) -> str:
    """One of a few description templates filled with the product's attributes.

    >>> product_description(0, "Harbor", "Linen", "Relaxed", "Shirt", "Cool.")
    'Relaxed shirt by Harbor, made from linen. Cool.'
    """
    text = _DESCRIPTIONS[template % len(_DESCRIPTIONS)].format(
        a="An" if adjective[0] in "AEIOU" else "A",
        adj=adjective.lower(),
        type=ptype.lower(),
        brand=brand,
        material=material.lower(),
        blurb=blurb,
    )
    return text[0].upper() + text[1:]


NUM_DESCRIPTIONS = len(_DESCRIPTIONS)

# Review sentences by sentiment level 1 (awful) .. 5 (delighted). Placeholders: {type},
# {material}, {brand}, {size}. Neighbouring levels share some words on purpose.
OPENERS = {
    1: (
        "Terrible {type}, I want my money back.",
        "Worst purchase I have made in years.",
        "Do not buy this {type}.",
        "Awful from the moment I opened the box.",
        "Completely useless, it went straight back.",
        "What a waste of money.",
    ),
    2: (
        "Disappointed with this {type}.",
        "Not what I expected from {brand}.",
        "I had higher hopes for this one.",
        "Below average, sadly.",
        "It looked better in the pictures.",
        "Meh, not great.",
    ),
    3: (
        "It's an okay {type}.",
        "Decent, nothing special.",
        "Average {type} for the price.",
        "It does the job, more or less.",
        "Mixed feelings about this {type}.",
        "Fine, but I expected a bit more.",
    ),
    4: (
        "Good {type}, I'm happy with it.",
        "Nice {type} from {brand}.",
        "Pretty good overall.",
        "I like it and would buy again.",
        "Solid choice, works well.",
        "Better than I expected.",
    ),
    5: (
        "Absolutely love this {type}!",
        "Perfect, exactly what I wanted.",
        "Best {type} I have ever owned.",
        "Fantastic quality from {brand}.",
        "Outstanding, worth every penny.",
        "I adore it, buying another one.",
    ),
}
ASPECTS = {
    1: (
        "The {material} feels cheap and started falling apart.",
        "It broke within a week.",
        "Size {size} fits nothing like the chart.",
        "The stitching came loose immediately.",
        "Nothing about it feels like {material}.",
        "Poor quality, flimsy and badly made.",
    ),
    2: (
        "The {material} is thinner than advertised.",
        "Size {size} runs small for me.",
        "Quality is mediocre at best.",
        "Overpriced for what you get.",
        "The colour faded after one wash.",
        "It feels a bit flimsy.",
    ),
    3: (
        "The {material} is fine.",
        "Size {size} fits as expected.",
        "Quality is acceptable for everyday use.",
        "Price is fair, not a bargain.",
        "Some details could be better.",
        "Not bad, not amazing.",
    ),
    4: (
        "The {material} feels nice.",
        "Size {size} fits well.",
        "Good quality for the price.",
        "Well made and comfortable.",
        "It has held up well so far.",
        "Nice finish and sturdy.",
    ),
    5: (
        "The {material} is gorgeous and soft.",
        "Size {size} fits perfectly.",
        "Superb quality, beautifully made.",
        "Excellent value, a real bargain.",
        "Still looks brand new after months.",
        "Stunning design and flawless finish.",
    ),
}
FILLERS = (
    "Delivery took three days.",
    "Bought it as a gift.",
    "I ordered it in {size}.",
    "My second {brand} purchase.",
    "It arrived in a plain box.",
    "I use it almost every day.",
    "Ordered on a Sunday.",
    "Comes in several colours.",
)
CLOSERS = {
    1: ("Avoid.", "Returned it.", "Never again."),
    2: ("Probably returning it.", "Would not recommend.", "Not worth it."),
    3: ("It's okay.", "Might keep it.", "Fine for now."),
    4: ("Would recommend.", "Happy overall.", "Good buy."),
    5: ("Highly recommend!", "Love it!", "Five stars, no doubt."),
}
REVIEW_TITLES = {
    1: ("Awful", "Waste of money", "Terrible quality", "Do not buy"),
    2: ("Disappointing", "Not great", "Expected better", "Meh"),
    3: ("It's okay", "Average", "Decent enough", "Mixed feelings"),
    4: ("Good buy", "Nice", "Happy with it", "Pretty good"),
    5: ("Love it", "Perfect", "Excellent", "Best purchase ever"),
}


def review_text(level, slots, rng) -> tuple[str, str]:
    """A (title, text) pair whose words follow a sentiment `level` in 1..5, with some noise.

    Each sentence may drift one level up or down, neutral filler sentences are mixed in, and
    the number of sentences varies, so the text tracks the level without giving it away.

    Args:
        level: int. Sentiment level in 1..5.
        slots: dict. Values for {type}, {material}, {brand} and {size}.
        rng: numpy Generator.

    >>> import numpy as np
    >>> title, text = review_text(5, {"type": "mug", "material": "ceramic", "brand": "Quill",
    ...                                "size": "12 oz"}, np.random.default_rng(0))
    >>> isinstance(title, str) and len(text) > 10
    True
    """

    def pick(pool, lvl):
        drift = lvl + int(rng.choice((-1, 0, 0, 0, 0, 0, 1)))
        options = pool[min(5, max(1, drift))]
        return options[int(rng.integers(len(options)))]

    sentences = [pick(OPENERS, level)]
    for _ in range(int(rng.integers(1, 4))):
        if rng.random() < 0.25:
            sentences.append(FILLERS[int(rng.integers(len(FILLERS)))])
        else:
            sentences.append(pick(ASPECTS, level))
    if rng.random() < 0.6:
        sentences.append(pick(CLOSERS, level))
    order = rng.permutation(len(sentences) - 1) + 1
    sentences = [sentences[0]] + [sentences[i] for i in order]
    text = " ".join(s.format(**slots) for s in sentences)
    return pick(REVIEW_TITLES, level), text
