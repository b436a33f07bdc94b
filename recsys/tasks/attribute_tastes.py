"""Attribute tastes for buy probability: each user's category and brand tastes, in the graph.

A small generative model of browsing and buying. A shopper looks at a category with
probability `softmax(view_category * category tastes)` and at a product in it with probability
proportional to `exp(view_brand * brand taste + product appeal)`; now and then (the exploration
share) at any product. A viewed product is bought with probability

    sigmoid(bias + category taste + brand taste + appeal
            - price weight * price sensitivity * log(price / category median)
            + [bought in its category before] * w + [bought from its brand before] * w')

and one that is not bought is put in the cart anyway with probability `cart rate * P(buy)`.
Product appeal and the weights are fitted by maximum a posteriori on a period's events, jointly
with every user's tastes (`AttributeTastes.fit`); the two view scales are fixed (fitting them by
MAP is degenerate: they grow while the tastes shrink under their priors). When scoring, a
user's tastes and price sensitivity are the MAP estimate from the context alone (its views,
carts and purchases; a fixed number of Adam steps run in the graph with appeal and weights
held), so training and serving read the same raw strings. The feature is the candidate's buy
logit under those tastes, moderated by their uncertainty (a Laplace approximation: users with
little history get logits pulled towards zero, as the posterior mean probability is), with its
terms beside it. It says how much a user's views of a brand tell beyond what the user's
categories and the products' appeal explain, and which views did not turn into purchases.

Example:
>>> import pandas as pd
>>> catalog = pd.DataFrame({"product_id": ["a", "b", "c", "d"],
...     "title": ["Mug", "Cup", "Hat", "Cap"], "category": ["kitchen", "kitchen", "hats", "hats"],
...     "brand": ["Acme", "Bolt", "Acme", "Bolt"], "price": [10.0, 12.0, 20.0, 18.0]})
>>> tastes = AttributeTastes.from_catalog(catalog)
>>> _, products = catalog_texts(catalog)
>>> logit = tastes(tf.constant(["bought: Hat | hats | Acme ; Hat | hats | Acme"]),
...                tf.constant([0, 0]), tf.constant([products["d"], products["b"]]))
>>> bool(logit[0, 0] > logit[1, 0])  # a hat buyer: the Bolt cap rather than the Bolt cup
True
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import tensorflow as tf

from recsys.data.buy_pairs import HistoryIndex, catalog_texts
from recsys.export import string_table
from recsys.tasks.buy_probability import TASTE_FEATURES, _parse_contexts

WEIGHTS = (
    "bias",
    "price",
    "bought_category",
    "bought_brand",
    "explore_logit",
    "view_category",
    "view_brand",
    "cart_logit",
)
# the fit starts from a 5% buy rate, a 50% exploration share and a 50% cart rate
_START = {"bias": float(np.log(0.05 / 0.95)), "price": 1.0}
_FIXED = ("view_category", "view_brand")  # set by `view_scales`, not fitted
COLUMNS = TASTE_FEATURES  # what `AttributeTastes` returns per pair, in this order
_EPS = 1e-7
_LEARNED = tf.constant([0.0 if name in _FIXED else 1.0 for name in WEIGHTS])


class AttributeTastes(tf.Module):
    """Per-user category and brand tastes estimated from the context; see the module docstring.

    Args:
        item_texts: list of str. Each catalog row's history item text (`item_text`).
        product_texts: list of str. Each catalog row's product text (`product_text`).
        category, brand: int arrays `[rows]`. Attribute indices of the rows.
        relative_price: float array `[rows]`. log(price / its category's median price).
        prior_sds: 4 floats. Standard deviations of the normal priors on category tastes,
            brand tastes, log price sensitivity and appeal.
        view_scales: 2 floats. How strongly category and brand tastes steer views (they steer
            purchases with weight 1).
        steps: int. Adam steps of the per-user estimate when scoring.
        learning_rate: float. Their step size.

    The defaults of `prior_sds` and `view_scales` were chosen by validation AUC on the
    synthetic store (docs/BENCHMARKS.md, P5).
    """

    def __init__(
        self,
        item_texts,
        product_texts,
        category,
        brand,
        relative_price,
        prior_sds=(1.0, 1.0, 0.3, 0.3),
        view_scales=(1.0, 0.5),
        steps=60,
        learning_rate=0.15,
    ):
        super().__init__(name="attribute_tastes")
        rows = len(item_texts)
        self.rows = rows
        self.categories = int(np.max(category, initial=-1)) + 2  # + the padding row's
        self.brands = int(np.max(brand, initial=-1)) + 2
        self.prior_sds = tuple(float(sd) for sd in prior_sds)
        self.steps, self.learning_rate = int(steps), float(learning_rate)

        def table(texts):  # each distinct text -> its first row; unknown -> `rows`
            keys, index = np.unique(np.asarray(texts, dtype=object).astype(str), return_index=True)
            return string_table(keys, index.astype(np.int64), rows)

        self.item_table, self.product_table = table(item_texts), table(product_texts)
        self.category = tf.constant(np.append(category, self.categories - 1), tf.int64)
        self.brand = tf.constant(np.append(brand, self.brands - 1), tf.int64)
        self.relative_price = tf.constant(np.append(relative_price, 0.0), tf.float32)
        self.appeal = tf.Variable(tf.zeros([rows + 1]), trainable=False, name="appeal")
        start = {**_START, **dict(zip(_FIXED, view_scales, strict=True))}
        self.weights = tf.Variable(
            [float(start.get(name, 0.0)) for name in WEIGHTS],
            dtype=tf.float32,
            trainable=False,
            name="weights",
        )

    @classmethod
    def from_catalog(cls, catalog: pd.DataFrame, **kwargs):
        """Tables from a catalog frame (`product_id`, `title`, `category`, optional `brand` and
        `price`), with neutral appeal and weights."""
        items, products = catalog_texts(catalog)
        ids = catalog["product_id"]
        category = pd.factorize(catalog["category"].astype(str))[0]
        brands = catalog["brand"] if "brand" in catalog else pd.Series([""] * len(catalog))
        brand = pd.factorize(brands.fillna("").astype(str))[0]
        relative_price = np.zeros(len(catalog))
        if "price" in catalog:
            price = pd.to_numeric(catalog["price"], errors="coerce")
            median = price.groupby(category).transform("median")
            ratio = (price / median).where(lambda r: r > 0)  # no price or a zero one: 0
            relative_price = np.log(ratio).replace([np.inf, -np.inf], np.nan).fillna(0.0)
            relative_price = relative_price.to_numpy()
        return cls(
            [items[p] for p in ids],
            [products[p] for p in ids],
            category,
            brand,
            relative_price,
            **kwargs,
        )

    @classmethod
    def fit(
        cls,
        events,
        catalog,
        before=None,
        history_length=96,
        fit_steps=400,
        fit_learning_rate=0.05,
        log=None,
        **kwargs,
    ):
        """Appeal and weights fitted by MAP on the events before `before`, jointly with the
        tastes of every user (each seen through their last `history_length` events)."""
        model = cls.from_catalog(catalog, **kwargs)
        if before is not None:
            events = events[events["timestamp"] < before]
        index = HistoryIndex(events, catalog_texts(catalog)[0])
        end = events["timestamp"].max() + pd.Timedelta(seconds=1)
        users = events["user_id"].unique()
        contexts = [index.context(u, end, history_length) for u in users]
        history = model.history(tf.constant(contexts or [""]))
        tastes = [tf.Variable(t) for t in model._zero_tastes(tf.shape(history["rows"])[0])]
        appeal = tf.Variable(tf.zeros([model.rows]))
        weights = tf.Variable(model.weights)
        variables = [*tastes, appeal, weights]
        optimizer = tf.keras.optimizers.Adam(fit_learning_rate)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                full = tf.concat([appeal, [0.0]], axis=0)
                loss = tf.reduce_sum(model._negative_log_posterior(tastes, history, full, weights))
                loss += tf.reduce_sum(appeal**2) / (2 * model.prior_sds[3] ** 2)
            grads = tape.gradient(loss, variables)
            grads[-1] = grads[-1] * _LEARNED  # the scales of the views' tastes stay fixed
            optimizer.apply_gradients(zip(grads, variables, strict=True))
            return loss

        for i in range(1, fit_steps + 1):
            loss = step()
            if log and i % 100 == 0:
                log("attribute tastes: step %d, negative log posterior %.1f", i, float(loss))
        model.appeal.assign(tf.concat([appeal, [0.0]], axis=0))
        model.weights.assign(weights)
        return model

    def history(self, contexts):
        """`[U, I]` tensors of each context's catalog items: rows, attributes, what was viewed
        and bought, and per distinct product its views, purchase and bought-before flags."""
        plain, bought, carted = _parse_contexts(contexts)
        rows = self.item_table.lookup(plain.to_tensor(default_value=""))
        valid = tf.cast(rows < self.rows, tf.float32)
        bought = tf.cast(bought.to_tensor(default_value=False), tf.float32) * valid
        carted = tf.cast(carted.to_tensor(default_value=False), tf.float32) * valid
        category, brand = tf.gather(self.category, rows), tf.gather(self.brand, rows)
        same = tf.cast(tf.equal(rows[:, :, None], rows[:, None, :]), tf.float32)
        same *= valid[:, :, None] * valid[:, None, :]
        positions = tf.range(tf.shape(rows)[1])
        earlier = tf.cast(positions[None, :] < positions[:, None], tf.float32)  # j more recent
        first = valid * tf.cast(tf.reduce_sum(same * earlier[None], axis=2) == 0, tf.float32)
        viewed = valid - bought - carted
        views = tf.reduce_sum(same * viewed[:, None, :], axis=2)
        cart = tf.reduce_max(same * carted[:, None, :], axis=2)
        purchased = tf.reduce_max(same * bought[:, None, :], axis=2)
        oldest = tf.reduce_max(same * tf.cast(positions, tf.float32)[None, None, :], axis=2)
        older = tf.cast(
            tf.cast(positions, tf.float32)[None, None, :] > oldest[:, :, None], "float32"
        )
        other_purchase = bought[:, None, :] * older * (1.0 - same)

        def bought_before(attr):
            match = tf.cast(tf.equal(attr[:, :, None], attr[:, None, :]), tf.float32)
            return tf.reduce_max(match * other_purchase, axis=2)

        return {
            "rows": rows,
            "category": category,
            "brand": brand,
            "view": viewed,
            "cart": cart,
            "unit": first,
            "views": tf.maximum(views, 1.0),
            "purchased": purchased,
            "bought_category": bought_before(category),
            "bought_brand": bought_before(brand),
            "bought": bought,
        }

    def _zero_tastes(self, users):
        return (
            tf.zeros([users, self.categories]),
            tf.zeros([users, self.brands]),
            tf.zeros([users]),
        )

    def _buy_terms(self, tastes, rows, category, brand, appeal, w):
        """The category taste, brand taste, appeal and price terms `[U, K]` of the buy logit of
        each user's products `rows` `[U, K]`."""
        category_taste, brand_taste, log_sensitivity = tastes
        sensitivity = tf.exp(log_sensitivity)[:, None]
        return (
            tf.gather(category_taste, category, batch_dims=1),
            tf.gather(brand_taste, brand, batch_dims=1),
            tf.gather(appeal, rows),
            -w[1] * sensitivity * tf.gather(self.relative_price, rows),
        )

    @staticmethod
    def _buy_logit(terms, bought_category, bought_brand, w):
        """Buy logits `[U, K]` from `_buy_terms` and the bought-before flags."""
        return w[0] + tf.add_n(terms) + w[2] * bought_category + w[3] * bought_brand

    def _negative_log_posterior(self, tastes, h, appeal, w):
        """`[U]`: minus the log likelihood of each user's views and purchases, minus log prior."""
        category_taste, brand_taste, log_sensitivity = tastes
        # browsing: a category by taste, then a product in it by brand taste and appeal
        cell = self.category * self.brands + self.brand
        mass = tf.math.unsorted_segment_sum(
            tf.exp(appeal[:-1]), cell[:-1], self.categories * self.brands
        )
        mass = tf.reshape(mass, [self.categories, self.brands])  # [C, B]
        view_brand = w[6] * brand_taste
        log_norm = tf.math.log(tf.matmul(tf.exp(view_brand), mass, transpose_b=True) + _EPS)
        log_category = tf.nn.log_softmax(w[5] * category_taste[:, :-1], axis=1)
        log_category = tf.pad(log_category, [[0, 0], [0, 1]])
        log_pick = (
            tf.gather(log_category, h["category"], batch_dims=1)
            + tf.gather(view_brand, h["brand"], batch_dims=1)
            + tf.gather(appeal, h["rows"])
            - tf.gather(log_norm, h["category"], batch_dims=1)
        )
        explore = tf.sigmoid(w[4])
        log_view = tf.math.log((1 - explore) * tf.exp(log_pick) + explore / self.rows)
        terms = self._buy_terms(tastes, h["rows"], h["category"], h["brand"], appeal, w)
        logit = self._buy_logit(terms, h["bought_category"], h["bought_brand"], w)
        log_none = h["views"] * tf.math.log_sigmoid(-logit)
        log_bought = tf.math.log(1.0 - tf.exp(log_none) + _EPS)
        # not bought: each view was carted anyway with probability cart_rate * P(buy)
        cart_rate = tf.sigmoid(w[7])
        log_none_no_cart = log_none + h["views"] * tf.math.log(
            1.0 - cart_rate * tf.sigmoid(logit) + _EPS
        )
        log_cart = tf.math.log(tf.nn.relu(tf.exp(log_none) - tf.exp(log_none_no_cart)) + _EPS)
        log_unbought = h["cart"] * log_cart + (1.0 - h["cart"]) * log_none_no_cart
        log_units = h["purchased"] * log_bought + (1.0 - h["purchased"]) * log_unbought
        sd = self.prior_sds
        prior = (
            tf.reduce_sum(category_taste**2, axis=1) / (2 * sd[0] ** 2)
            + tf.reduce_sum(brand_taste**2, axis=1) / (2 * sd[1] ** 2)
            + log_sensitivity**2 / (2 * sd[2] ** 2)
        )
        return (
            prior
            - tf.reduce_sum(h["view"] * log_view, axis=1)
            - tf.reduce_sum(h["unit"] * log_units, axis=1)
        )

    def estimate(self, h):
        """MAP tastes of each context's user: `steps` Adam steps from zero with a step size
        decaying linearly to a tenth, in the graph."""
        tastes = self._zero_tastes(tf.shape(h["rows"])[0])
        moments = [tf.zeros_like(t) for t in tastes] * 2
        beta1, beta2 = 0.9, 0.999

        def body(i, tastes, moments):
            with tf.GradientTape() as tape:
                tape.watch(tastes)
                loss = tf.reduce_sum(
                    self._negative_log_posterior(tastes, h, self.appeal, self.weights)
                )
            grads = tape.gradient(loss, tastes)
            t = tf.cast(i + 1, tf.float32)
            first = [beta1 * m + (1 - beta1) * g for m, g in zip(moments[:3], grads, strict=True)]
            second = [
                beta2 * v + (1 - beta2) * g**2 for v, g in zip(moments[3:], grads, strict=True)
            ]
            decay = 1.0 - 0.9 * t / self.steps  # settles onto the optimum in the last steps
            rate = self.learning_rate * decay * tf.sqrt(1 - beta2**t) / (1 - beta1**t)
            tastes = tuple(
                x - rate * m / (tf.sqrt(v) + 1e-8)
                for x, m, v in zip(tastes, first, second, strict=True)
            )
            return i + 1, tastes, first + second

        _, tastes, _ = tf.while_loop(
            lambda i, *_: i < self.steps, body, (tf.constant(0), tastes, moments)
        )
        return tastes

    def covariance(self, h, tastes):
        """`[U, D, D]` Laplace covariance of each user's tastes and log price sensitivity
        (`D` = categories + brands + 1): the inverse Hessian of the negative log posterior."""
        flat = tf.concat([tastes[0], tastes[1], tastes[2][:, None]], axis=1)
        c, b = self.categories, self.brands
        with tf.GradientTape() as outer:
            outer.watch(flat)
            with tf.GradientTape() as inner:
                inner.watch(flat)
                split = (flat[:, :c], flat[:, c : c + b], flat[:, -1])
                loss = tf.reduce_sum(
                    self._negative_log_posterior(split, h, self.appeal, self.weights)
                )
            gradient = inner.gradient(loss, flat)
        hessian = outer.batch_jacobian(gradient, flat)
        size = tf.shape(flat)[1]
        # the prior alone makes the Hessian positive definite; jitter guards round-off
        return tf.linalg.inv(hessian + 1e-4 * tf.eye(size)[None])

    def __call__(self, contexts, context_of, products):
        """`[N, len(COLUMNS)]` for `products` `[N]` and the users of `contexts` `[U]` (pair `n`
        reads context `context_of[n]`): the candidate's buy logit, moderated by the uncertainty
        of the user's tastes (the probit approximation of the posterior mean probability under
        a Laplace approximation), its category taste, brand taste, appeal and price terms, and
        the logit's posterior variance. Products outside the catalog get zeros."""
        h = self.history(contexts)
        user_tastes = self.estimate(h)
        covariance = tf.gather(self.covariance(h, user_tastes), context_of)
        tastes = tuple(tf.gather(t, context_of) for t in user_tastes)
        rows = self.product_table.lookup(products)
        category, brand = tf.gather(self.category, rows), tf.gather(self.brand, rows)

        def bought(attr_items, attr):  # did the user buy in the candidate's category / brand
            hit = tf.cast(tf.equal(tf.gather(attr_items, context_of), attr[:, None]), tf.float32)
            hit = tf.pad(hit * tf.gather(h["bought"], context_of), [[0, 0], [0, 1]])
            return tf.reduce_max(hit, axis=1)

        terms = self._buy_terms(
            tastes, rows[:, None], category[:, None], brand[:, None], self.appeal, self.weights
        )
        logit = self._buy_logit(
            terms,
            bought(h["category"], category)[:, None],
            bought(h["brand"], brand)[:, None],
            self.weights,
        )
        # d logit / d (tastes, log sensitivity): the candidate's category and brand, the price
        direction = tf.concat(
            [
                tf.one_hot(category, self.categories),
                tf.one_hot(brand, self.brands),
                terms[3],
            ],
            axis=1,
        )
        variance = tf.einsum("ni,nij,nj->n", direction, covariance, direction)[:, None]
        moderated = logit / tf.sqrt(1.0 + np.pi * variance / 8.0)
        columns = tf.concat([moderated, *terms, variance], axis=1)
        return tf.where((rows < self.rows)[:, None], columns, 0.0)
