"""The simulation behind `recsys.data.synthetic`: hidden tastes, browsing and the buy model.

The chance that a user buys a product they look at is

    sigmoid(BIAS + W_CATEGORY * category taste + brand taste + material taste
            - W_PRICE * price sensitivity * log(price / category median) + product quality
            + W_BOUGHT_CATEGORY * [bought in this category before]
            + W_BOUGHT_BRAND * [bought from this brand before])

Sessions of views, carts and purchases are simulated week by week; purchases are drawn from
that model with the history as of the start of the week. Everything is vectorised with numpy
except the titles and review texts. Use `recsys.data.synthetic.generate`, not this module.

>>> round(float(sigmoid(0.0)), 2)
0.5
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from recsys.data import synthetic_text as text

START = pd.Timestamp("2024-01-01", tz="UTC")
WEEKS = 26
HELD_OUT_DAYS = 28
_WEEK = 7 * 24 * 3600

BIAS, W_CATEGORY, W_PRICE = -4.8, 0.75, 1.5
W_BOUGHT_CATEGORY, W_BOUGHT_BRAND = 1.0, 1.3
# browsing: a category by exp(VIEW_CATEGORY * taste), then a product in it by
# exp(VIEW_BRAND * brand taste + VIEW_MATERIAL * material taste + quality)
VIEW_CATEGORY, VIEW_BRAND, VIEW_MATERIAL = 1.5, 0.6, 0.4
CART_IF_BOUGHT, CART_PER_PROBABILITY = 0.85, 0.5  # a view not bought is carted w.p. 0.5 * P(buy)
# the hidden parameters' priors: normal standard deviations, log-normal price sensitivity
TASTE_SD = {"category": 1.0, "brand": 0.8, "material": 0.6}
QUALITY_SD = 0.3
PRICE_SENSITIVITY_LOG_MEAN, PRICE_SENSITIVITY_LOG_SD = float(np.log(0.8)), 0.5
EXPLORE = 0.1  # share of views on a uniformly random product
REVIEW_RATE = 0.45
# a review's satisfaction: brand and material taste + REVIEW_QUALITY * quality
# - REVIEW_PRICE * price sensitivity * relative price + normal noise of sd REVIEW_NOISE
REVIEW_QUALITY, REVIEW_PRICE, REVIEW_NOISE = 2.0, 0.5, 0.7
RATING_CUTS = (-0.35, 0.3, 1.05, 1.9)  # satisfaction thresholds between ratings 1|2|3|4|5
TRUTH_USERS, TRUTH_BROWSED, TRUTH_RANDOM = 1000, 7, 3


@dataclasses.dataclass(frozen=True, eq=False)
class Hidden:
    """The store's hidden parameters (arrays indexed by user and product position)."""

    user_ids: np.ndarray  # [users] str
    product_ids: np.ndarray  # [products] str
    category: np.ndarray  # [products] int, index into CATEGORIES
    brand: np.ndarray  # [products] int, index into BRANDS
    material: np.ndarray  # [products] int, index into MATERIALS
    rel_price: np.ndarray  # [products] log(price / category median)
    quality: np.ndarray  # [products]
    category_taste: np.ndarray  # [users, categories]
    brand_taste: np.ndarray  # [users, brands]
    material_taste: np.ndarray  # [users, materials]
    price_sensitivity: np.ndarray  # [users]
    bought_category: np.ndarray  # [users, categories] bool, at the end of the events
    bought_brand: np.ndarray  # [users, brands] bool, at the end of the events

    def logits(self, u, p, bought_category=None, bought_brand=None):
        """Buy logits for user positions `u` and product positions `p` (same shape)."""
        bc = self.bought_category if bought_category is None else bought_category
        bb = self.bought_brand if bought_brand is None else bought_brand
        c, b = self.category[p], self.brand[p]
        return (
            BIAS
            + W_CATEGORY * self.category_taste[u, c]
            + self.brand_taste[u, b]
            + self.material_taste[u, self.material[p]]
            + self.quality[p]
            - W_PRICE * self.price_sensitivity[u] * self.rel_price[p]
            + W_BOUGHT_CATEGORY * bc[u, c]
            + W_BOUGHT_BRAND * bb[u, b]
        )


def _ids(prefix, n):
    width = max(5, len(str(n - 1)))
    return np.array([f"{prefix}{i:0{width}d}" for i in range(n)])


def make_catalog(n, rng):
    """Product attributes (arrays, grouped by category) and the catalog frame (sorted by id)."""
    cats, n_cat = text.CATEGORIES, len(text.CATEGORIES)
    counts = 1 + rng.multinomial(n - n_cat, rng.dirichlet(np.full(n_cat, 8.0)))
    category = np.repeat(np.arange(n_cat), counts)  # products are grouped by category
    brands_of = [rng.choice(len(text.BRANDS), size=6, replace=False) for _ in range(n_cat)]
    brand, material = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    ptype, size = np.empty(n, dtype=object), np.empty(n, dtype=object)
    for c, cat in enumerate(cats):
        rows = np.flatnonzero(category == c)
        brand[rows] = rng.choice(brands_of[c], size=rows.size, p=rng.dirichlet(np.ones(6) * 2))
        mats = np.array([text.MATERIALS.index(m) for m in cat.materials])
        material[rows] = rng.choice(mats, size=rows.size)
        ptype[rows] = [cat.types[i] for i in rng.integers(len(cat.types), size=rows.size)]
        size[rows] = [cat.sizes[i] for i in rng.integers(len(cat.sizes), size=rows.size)]
    adjective = rng.integers(len(text.ADJECTIVES), size=n)
    base = np.array([c.base_price for c in cats])[category]
    tier = np.array([t for _, t in text.BRANDS])[brand]
    mat_mult = np.array([text.MATERIAL_PRICE[m] for m in text.MATERIALS])[material]
    price = np.maximum(np.round(base * tier * mat_mult * rng.lognormal(0, 0.25, n)) - 0.01, 2.99)
    medians = np.array([np.median(price[category == c]) for c in range(n_cat)])
    attrs = {
        "product_ids": _ids("P", n)[rng.permutation(n)],  # ids do not reveal the category
        "category": category,
        "brand": brand,
        "material": material,
        "rel_price": np.log(price / medians[category]),
        "quality": rng.normal(0.0, QUALITY_SD, n),
        "ptype": ptype,
        "size": size,
    }
    templates = rng.integers(text.NUM_DESCRIPTIONS, size=n)
    return attrs, _catalog_frame(attrs, adjective, templates, price)


def _catalog_frame(attrs, adjective, templates, price):
    cats = text.CATEGORIES
    titles, descriptions = [], []
    for i, c in enumerate(attrs["category"]):
        b = text.BRANDS[attrs["brand"][i]][0]
        m = text.MATERIALS[attrs["material"][i]]
        a, t = text.ADJECTIVES[adjective[i]], attrs["ptype"][i]
        titles.append(text.product_title(b, m, a, t, attrs["size"][i]))
        descriptions.append(text.product_description(templates[i], b, m, a, t, cats[c].blurb))
    catalog = pd.DataFrame(
        {
            "product_id": attrs["product_ids"],
            "title": titles,
            "category": [cats[c].name for c in attrs["category"]],
            "description": descriptions,
            "brand": [text.BRANDS[b][0] for b in attrs["brand"]],
            "price": price,
        }
    )
    return catalog.sort_values("product_id", kind="stable").reset_index(drop=True)


def make_users(n, attrs, rng):
    """Hidden tastes for `n` users, with an empty purchase history."""
    n_cat, n_brand, n_mat = len(text.CATEGORIES), len(text.BRANDS), len(text.MATERIALS)
    return Hidden(
        user_ids=_ids("U", n),
        **{
            k: attrs[k]
            for k in ("product_ids", "category", "brand", "material", "rel_price", "quality")
        },
        category_taste=rng.normal(0.0, TASTE_SD["category"], (n, n_cat)),
        brand_taste=rng.normal(0.0, TASTE_SD["brand"], (n, n_brand)),
        material_taste=rng.normal(0.0, TASTE_SD["material"], (n, n_mat)),
        price_sensitivity=rng.lognormal(PRICE_SENSITIVITY_LOG_MEAN, PRICE_SENSITIVITY_LOG_SD, n),
        bought_category=np.zeros((n, n_cat), dtype=bool),
        bought_brand=np.zeros((n, n_brand), dtype=bool),
    )


def sigmoid(x):
    """The logistic function, elementwise."""
    return 1.0 / (1.0 + np.exp(-x))


class Browsing:
    """Samples what users look at: a category from their taste, then a product in it."""

    def __init__(self, h: Hidden):
        self.h, self.n_products = h, h.category.size
        self.n_cat = h.category_taste.shape[1]
        self.cat_cum = np.cumsum(np.exp(VIEW_CATEGORY * h.category_taste).ravel())
        interest = (
            VIEW_BRAND * h.brand_taste[:, h.brand]
            + VIEW_MATERIAL * h.material_taste[:, h.material]
            + h.quality[None, :]
        )
        self.prod_cum = np.cumsum(np.exp(interest).ravel())
        self.bounds = np.searchsorted(h.category, np.arange(self.n_cat + 1))

    @staticmethod
    def _draw(cum, lo, hi, rng):
        lo_mass = np.where(lo > 0, cum[np.maximum(lo - 1, 0)], 0.0)
        r = lo_mass + rng.random(lo.size) * (cum[hi - 1] - lo_mass)
        return np.clip(np.searchsorted(cum, r, side="right"), lo, hi - 1)

    def products(self, users, rng):
        cat = self._draw(self.cat_cum, users * self.n_cat, (users + 1) * self.n_cat, rng)
        cat -= users * self.n_cat
        offset = users * self.n_products
        picked = (
            self._draw(self.prod_cum, offset + self.bounds[cat], offset + self.bounds[cat + 1], rng)
            - offset
        )
        explore = rng.random(users.size) < EXPLORE
        return np.where(explore, rng.integers(self.n_products, size=users.size), picked)


def simulate(h: Hidden, browse, events_target, rng):
    """Weekly sessions; returns (events frame, purchases (user, product) arrays, history).

    The number of views per session is steered week by week so the total lands near
    `events_target`; the purchase history used by the buy model is updated after each week.
    """
    s_user, s_start = _sessions(h.user_ids.size, events_target, rng)
    week = s_start // _WEEK
    bought_c, bought_b = h.bought_category.copy(), h.bought_brand.copy()
    parts, done, views_done, per_view = [], 0, 0, 1.25
    for w in range(WEEKS):
        sel = np.flatnonzero(week == w)
        if sel.size == 0:
            continue
        left = max(events_target - done, sel.size)
        mean_views = left / (per_view * np.count_nonzero(week >= w))
        n_views = 1 + rng.poisson(np.clip(mean_views - 1.0, 0.3, 15.0), sel.size)
        u, p, kind, t = _week_events(
            h, browse, sel, n_views, s_user, s_start, bought_c, bought_b, rng
        )
        parts.append((u, p, kind, t))
        bought = kind == 2
        bought_c[u[bought], h.category[p[bought]]] = True
        bought_b[u[bought], h.brand[p[bought]]] = True
        done, views_done = done + kind.size, views_done + n_views.sum()
        per_view = done / views_done
    u, p, kind, t = (np.concatenate(x) for x in zip(*parts, strict=True))
    order = np.lexsort((kind, t))
    u, p, kind, t = u[order], p[order], kind[order], t[order]
    frame = pd.DataFrame(
        {
            "user_id": h.user_ids[u],
            "product_id": h.product_ids[p],
            "event": np.array(["view", "cart", "purchase"])[kind],
            "timestamp": _stamps(t),
        }
    )
    return frame, (u[kind == 2], p[kind == 2]), bought_c, bought_b


def _sessions(n_users, events_target, rng):
    """Session (user, start second) pairs sorted by start; every user gets at least one."""
    n_sessions = max(n_users, int(events_target / (1.25 * 4.0)))
    activity = rng.lognormal(0.0, 0.8, n_users)
    extra = rng.multinomial(n_sessions - n_users, activity / activity.sum())
    s_user = np.repeat(np.arange(n_users), 1 + extra)
    s_start = rng.integers(0, WEEKS * _WEEK, size=s_user.size)
    order = np.argsort(s_start, kind="stable")
    return s_user[order], s_start[order]


def _week_events(h, browse, sel, n_views, s_user, s_start, bought_c, bought_b, rng):
    """Views, carts and purchases of the sessions `sel`; returns (user, product, kind, second)."""
    sess = np.repeat(sel, n_views)
    u = s_user[sess]
    p = browse.products(u, rng)
    gaps = rng.integers(20, 180, sess.size)  # seconds between views; carts fit inside
    cum, first = np.cumsum(gaps), np.cumsum(n_views) - n_views
    t_view = s_start[sess] + cum - np.repeat(cum[first] - gaps[first], n_views)
    prob = sigmoid(h.logits(u, p, bought_c, bought_b))
    buy = rng.random(sess.size) < prob
    cart = np.where(
        buy,
        rng.random(sess.size) < CART_IF_BOUGHT,
        rng.random(sess.size) < CART_PER_PROBABILITY * prob,
    )
    buy &= ~_duplicated(sess, p, buy)
    cart &= ~_duplicated(sess, p, cart)
    last = np.zeros(s_start.size, dtype=np.int64)
    np.maximum.at(last, sess, t_view)
    t_cart = t_view + rng.integers(5, 20, sess.size)  # before the session's next view
    t_buy = last[sess] + 120 + rng.integers(0, 300, sess.size)  # after the session's views
    kind = np.repeat(np.array([0, 1, 2], np.int8), [sess.size, cart.sum(), buy.sum()])
    return (
        np.concatenate([u, u[cart], u[buy]]),
        np.concatenate([p, p[cart], p[buy]]),
        kind,
        np.concatenate([t_view, t_cart[cart], t_buy[buy]]),
    )


def _duplicated(sess, p, mask):
    """True where (session, product) already appeared earlier among the `mask` rows."""
    idx = np.flatnonzero(mask)
    keys = sess[idx].astype(np.int64) * (p.max() + 1) + p[idx]
    _, first = np.unique(keys, return_index=True)
    dup = np.zeros(sess.size, dtype=bool)
    dup[idx] = True
    dup[idx[first]] = False
    return dup


def _stamps(seconds):
    return (START + pd.to_timedelta(seconds, unit="s")).astype("datetime64[us, UTC]")


def make_reviews(h: Hidden, purchases, attrs, rng):
    """Reviews of a share of purchases; rating and words follow the shopper's satisfaction."""
    u, p = purchases
    keep = rng.random(u.size) < REVIEW_RATE
    keep[:1] |= not keep.any()  # a store with purchases always has a review
    pairs = pd.DataFrame({"u": u[keep], "p": p[keep]}).drop_duplicates()
    u, p = pairs["u"].to_numpy(), pairs["p"].to_numpy()
    satisfaction = (
        h.brand_taste[u, h.brand[p]]
        + h.material_taste[u, h.material[p]]
        + REVIEW_QUALITY * h.quality[p]
        - REVIEW_PRICE * h.price_sensitivity[u] * h.rel_price[p]
        + rng.normal(0.0, REVIEW_NOISE, u.size)
    )
    rating = 1 + np.searchsorted(RATING_CUTS, satisfaction)
    level = np.clip(rating + rng.choice((-1, 0, 0, 0, 0, 0, 0, 1), size=u.size), 1, 5)
    recommended = satisfaction + rng.normal(0.0, 0.4, u.size) > RATING_CUTS[2]
    titles, texts = [], []
    for i in range(u.size):
        j = p[i]
        slots = {
            "type": attrs["ptype"][j].lower(),
            "material": text.MATERIALS[h.material[j]].lower(),
            "brand": text.BRANDS[h.brand[j]][0],
            "size": attrs["size"][j] or "one size",
        }
        title, body = text.review_text(int(level[i]), slots, rng)
        titles.append(title)
        texts.append(body)
    return pd.DataFrame(
        {
            "product_id": h.product_ids[p],
            "text": texts,
            "rating": rating.astype(np.float64),
            "user_id": h.user_ids[u],
            "title": titles,
            "recommended": recommended,
        }
    )


def make_truth(h: Hidden, browse, rng):
    """Held-out pairs after the events: products a user browses plus random ones."""
    n_users, n_products = h.user_ids.size, h.product_ids.size
    users = np.sort(rng.choice(n_users, size=min(TRUTH_USERS, n_users), replace=False))
    browsed = browse.products(np.repeat(users, TRUTH_BROWSED), rng)
    u = np.concatenate([np.repeat(users, TRUTH_BROWSED), np.repeat(users, TRUTH_RANDOM)])
    p = np.concatenate([browsed, rng.integers(n_products, size=users.size * TRUTH_RANDOM)])
    _, first = np.unique(u.astype(np.int64) * n_products + p, return_index=True)
    u, p = u[first], p[first]  # sorted by user, then product position
    prob = sigmoid(h.logits(u, p))
    start = WEEKS * _WEEK + 24 * 3600
    when = rng.integers(start, start + HELD_OUT_DAYS * 24 * 3600, size=n_users)[u]
    return pd.DataFrame(
        {
            "user_id": pd.array(h.user_ids[u], dtype="string"),
            "product_id": pd.array(h.product_ids[p], dtype="string"),
            "timestamp": _stamps(when),
            "probability": prob,
            "label": (rng.random(u.size) < prob).astype(np.int64),
        }
    )


def build(products, users, seed, events_target):
    """Runs the whole simulation; returns (hidden, catalog, events, reviews, truth) frames."""
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)]
    product_attrs, catalog = make_catalog(products, rngs[0])
    hidden = make_users(users, product_attrs, rngs[1])
    browse = Browsing(hidden)
    events, purchases, bought_c, bought_b = simulate(hidden, browse, events_target, rngs[2])
    if purchases[0].size == 0:
        raise ValueError(
            "The simulated store has no purchases, so no reviews; raise `events_target` or "
            f"`users`. Received: users={users}, events_target={events_target}"
        )
    hidden = dataclasses.replace(hidden, bought_category=bought_c, bought_brand=bought_b)
    reviews = make_reviews(hidden, purchases, product_attrs, rngs[3])
    return hidden, catalog, events, reviews, make_truth(hidden, browse, rngs[4])
