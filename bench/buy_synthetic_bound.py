"""Protocol P5 analysis: what a model of the store's own form reaches from the events alone.

    python bench/buy_synthetic_bound.py                  # buy_demo.yaml's store (seed 0), 1 min
    python bench/buy_synthetic_bound.py --learn-weights  # the equation's weights fitted too
    python bench/buy_synthetic_bound.py --seed 1 --events-per-user 100
    python bench/buy_synthetic_bound.py --reviews        # the review ratings read as well

`bench/buy_synthetic_ceiling.py` bounds event *features* fed to gradient boosting. This script
asks a sharper question: if a model had exactly the form of the simulation (users pick a
category by taste, then a product by brand and material taste and quality; they buy a viewed
product with the logistic buy model of `recsys.data.synthetic_sim`), and estimated every user's
tastes and price sensitivity and every product's quality from the events by maximum a
posteriori, how well would it score the truth pairs? The events are read as a model sees them:
views, carts and purchases grouped into sessions by time (a gap over 30 minutes starts a new
one), purchases seen before a session's week count as bought before. The category, brand,
material and relative price of each product are what the catalog shows. With `--learn-weights`
the weights of the equation (bias, category, price, bought-before terms, the browsing weights
and the exploration share) start from neutral values and are fitted as well, so nothing of the
simulation but its form is given. With `--reviews` the ratings of the store's reviews are read
too, through the simulation's own review equation (a rating is the band of the shopper's
satisfaction with brand, material, quality and price): what ratings could add at most. Prints
JSON with the truth-pair ROC-AUC and its ratio to the Bayes-optimal AUC.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np
import pandas as pd

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.data.synthetic import _positions  # noqa: E402

SESSION_GAP_SECONDS = 1800
_WEEK_SECONDS = 7 * 24 * 3600
_EPS = 1e-7
_SCALES = ("w_category", "view_category", "view_brand", "view_material")


def observed(store):
    """What the events say, as position arrays: `(views, units, bought_before_end)`.

    `views` holds the user and product of every view. `units` has one row per (session,
    product) viewed: user, product, views `k`, whether it was bought or put in the cart in that
    session, and whether the user had bought in its category or brand in an earlier week.
    `bought_before_end` is `(category, brand)` `[users, values]` booleans over all purchases.
    """
    from recsys.data import synthetic_sim as sim

    h = store.hidden
    ev = pd.DataFrame(
        {
            "u": _positions(h.user_ids, store.events["user_id"], "user_id"),
            "p": _positions(h.product_ids, store.events["product_id"], "product_id"),
            "event": store.events["event"].to_numpy(),
            "sec": (store.events["timestamp"] - sim.START).dt.total_seconds().to_numpy(),
        }
    ).sort_values(["u", "sec"], kind="stable")
    gap = np.diff(ev["sec"].to_numpy(), prepend=-np.inf) > SESSION_GAP_SECONDS
    ev["session"] = np.cumsum(gap | (np.diff(ev["u"].to_numpy(), prepend=-1) != 0))
    ev["week"] = ev.groupby("session")["sec"].transform("min") // _WEEK_SECONDS
    views = ev[ev["event"] == "view"]
    units = views.groupby(["session", "u", "p", "week"]).size().rename("k").reset_index()
    for event, column in (("purchase", "buy"), ("cart", "cart")):
        done = ev[ev["event"] == event].set_index(["session", "p"]).index
        units[column] = units.set_index(["session", "p"]).index.isin(done)
    purchases = ev[ev["event"] == "purchase"]
    bought_end = []
    for name, attr in (("category", h.category), ("brand", h.brand)):
        first = purchases.assign(a=attr[purchases["p"]]).groupby(["u", "a"])["week"].min()
        key = pd.MultiIndex.from_arrays([units["u"], attr[units["p"]]])
        units[f"bought_{name}"] = first.reindex(key).fillna(np.inf).to_numpy() < units["week"]
        end = np.zeros((h.user_ids.size, attr.max() + 1), dtype=bool)
        end[purchases["u"], attr[purchases["p"]]] = True
        bought_end.append(end)
    return (views["u"].to_numpy(), views["p"].to_numpy()), units, tuple(bought_end)


def as_tensors(views, units):
    """`observed`'s views and units as the tensors `StoreModel.negative_log_posterior` takes."""
    import tensorflow as tf

    columns = {"u": "u", "p": "p", "buy": "buy", "cart": "cart"}
    columns.update(bc="bought_category", bb="bought_brand")
    tensors = {key: tf.constant(units[column].to_numpy()) for key, column in columns.items()}
    tensors["k"] = tf.constant(units["k"].to_numpy(), tf.float32)
    return tuple(tf.constant(v) for v in views), tensors


def review_ratings(store):
    """The reviews as tensors: user and product positions and the bounds `(low, high)` of the
    satisfaction band each rating stands for (`recsys.data.synthetic_sim.RATING_CUTS`)."""
    import tensorflow as tf

    from recsys.data import synthetic_sim as sim

    h, reviews = store.hidden, store.reviews
    cuts = np.array([-np.inf, *sim.RATING_CUTS, np.inf], np.float32)
    rating = reviews["rating"].to_numpy().astype(np.int64)
    return {
        "u": tf.constant(_positions(h.user_ids, reviews["user_id"], "user_id")),
        "p": tf.constant(_positions(h.product_ids, reviews["product_id"], "product_id")),
        "low": tf.constant(cuts[rating - 1]),
        "high": tf.constant(cuts[rating]),
    }


class StoreModel:
    """The simulation's browsing and buy model with user and product parameters to estimate."""

    def __init__(self, hidden, learn_weights=False, reviews=None):
        import tensorflow as tf

        from recsys.data import synthetic_sim as sim

        self.n_products = hidden.category.size
        self.category = tf.constant(hidden.category)
        self.brand = tf.constant(hidden.brand)
        self.material = tf.constant(hidden.material)
        self.rel_price = tf.constant(hidden.rel_price, tf.float32)
        self.category_onehot = tf.one_hot(self.category, hidden.category_taste.shape[1])
        users = hidden.user_ids.size
        self.tastes = {
            "category": tf.Variable(tf.zeros([users, hidden.category_taste.shape[1]])),
            "brand": tf.Variable(tf.zeros([users, hidden.brand_taste.shape[1]])),
            "material": tf.Variable(tf.zeros([users, hidden.material_taste.shape[1]])),
        }
        self.log_price_sensitivity = tf.Variable(tf.zeros([users]))
        self.quality = tf.Variable(tf.zeros([self.n_products]))
        truth = {
            "bias": sim.BIAS,
            "w_category": sim.W_CATEGORY,
            "w_price": sim.W_PRICE,
            "w_bought_category": sim.W_BOUGHT_CATEGORY,
            "w_bought_brand": sim.W_BOUGHT_BRAND,
            "view_category": sim.VIEW_CATEGORY,
            "view_brand": sim.VIEW_BRAND,
            "view_material": sim.VIEW_MATERIAL,
            "explore_logit": float(np.log(sim.EXPLORE / (1 - sim.EXPLORE))),
        }
        # Learned: the weights that scale a taste stay at 1 with unit priors on every taste,
        # quality and log price sensitivity (a joint MAP fit of those scales is degenerate: the
        # weights grow, the tastes shrink under their priors, and the users' events overfit);
        # the additive weights start neutral (a 5% buy rate, a 50% exploration share).
        start = {k: (1.0 if k.startswith(("w_", "view_")) else 0.0) for k in truth}
        start["bias"] = float(np.log(0.05 / 0.95))
        values = start if learn_weights else truth
        self.weights = {
            k: tf.Variable(v, trainable=learn_weights and k not in _SCALES)
            for k, v in values.items()
        }
        sd = {**sim.TASTE_SD, "price": sim.PRICE_SENSITIVITY_LOG_SD, "quality": sim.QUALITY_SD}
        self.prior_sd = {k: 1.0 for k in sd} if learn_weights else sd
        self.prior_log_price = 0.0 if learn_weights else sim.PRICE_SENSITIVITY_LOG_MEAN
        self.cart_per_probability = sim.CART_PER_PROBABILITY
        if reviews is not None and learn_weights:
            raise ValueError(
                "Reading reviews uses the simulation's review equation, so it needs the "
                "simulation's weights; drop `learn_weights` (`--learn-weights`) or the reviews."
            )
        self.reviews = reviews
        self.variables = [*self.tastes.values(), self.log_price_sensitivity, self.quality]
        self.variables += [v for v in self.weights.values() if v.trainable]

    def logits(self, u, p, bought_category, bought_brand):
        """Buy logits for user and product positions with the given bought-before flags."""
        import tensorflow as tf

        w, t = self.weights, self.tastes

        def taste(name, attr):
            return tf.gather_nd(t[name], tf.stack([u, tf.gather(attr, p)], axis=1))

        return (
            w["bias"]
            + w["w_category"] * taste("category", self.category)
            + taste("brand", self.brand)
            + taste("material", self.material)
            + tf.gather(self.quality, p)
            - w["w_price"]
            * tf.exp(tf.gather(self.log_price_sensitivity, u))
            * tf.gather(self.rel_price, p)
            + w["w_bought_category"] * tf.cast(bought_category, tf.float32)
            + w["w_bought_brand"] * tf.cast(bought_brand, tf.float32)
        )

    def negative_log_posterior(self, views, units):
        """-log p(events | parameters) - log prior (the simulation's priors on tastes)."""
        import tensorflow as tf

        w, t = self.weights, self.tastes
        vu, vp = views
        interest = (
            w["view_brand"] * tf.gather(t["brand"], self.brand, axis=1)
            + w["view_material"] * tf.gather(t["material"], self.material, axis=1)
            + self.quality[None, :]
        )  # [users, products]
        log_norm = tf.math.log(tf.matmul(tf.exp(interest), self.category_onehot))
        category_of = tf.stack([vu, tf.gather(self.category, vp)], axis=1)
        log_pick = (
            tf.gather_nd(tf.nn.log_softmax(w["view_category"] * t["category"], axis=1), category_of)
            + tf.gather_nd(interest, tf.stack([vu, vp], axis=1))
            - tf.gather_nd(log_norm, category_of)
        )
        explore = tf.sigmoid(w["explore_logit"])
        log_views = tf.math.log((1 - explore) * tf.exp(log_pick) + explore / self.n_products)
        buy = tf.sigmoid(self.logits(units["u"], units["p"], units["bc"], units["bb"]))
        k = units["k"]
        no_buy = (1 - buy) ** k
        no_buy_no_cart = ((1 - buy) * (1 - self.cart_per_probability * buy)) ** k
        likelihood = tf.where(
            units["buy"],
            1 - no_buy,
            tf.where(units["cart"], no_buy - no_buy_no_cart, no_buy_no_cart),
        )
        sd = self.prior_sd
        prior = (
            sum(tf.reduce_sum(t[k] ** 2) / (2 * sd[k] ** 2) for k in t)
            + tf.reduce_sum((self.log_price_sensitivity - self.prior_log_price) ** 2)
            / (2 * sd["price"] ** 2)
            + tf.reduce_sum(self.quality**2) / (2 * sd["quality"] ** 2)
        )
        log_likelihood = tf.reduce_sum(log_views) + tf.reduce_sum(tf.math.log(likelihood + _EPS))
        if self.reviews is not None:
            log_likelihood += tf.reduce_sum(self.review_log_likelihood())
        return prior - log_likelihood

    def review_log_likelihood(self):
        """Log chance of each review's rating: its satisfaction band under the simulation's
        review equation, normal noise around brand and material taste, quality and price."""
        import tensorflow as tf

        from recsys.data import synthetic_sim as sim

        r, t = self.reviews, self.tastes
        u, p = r["u"], r["p"]

        def taste(name, attr):
            return tf.gather_nd(t[name], tf.stack([u, tf.gather(attr, p)], axis=1))

        mean = (
            taste("brand", self.brand)
            + taste("material", self.material)
            + sim.REVIEW_QUALITY * tf.gather(self.quality, p)
            - sim.REVIEW_PRICE
            * tf.exp(tf.gather(self.log_price_sensitivity, u))
            * tf.gather(self.rel_price, p)
        )

        def below(bound):  # P(satisfaction < bound)
            return 0.5 * (1.0 + tf.math.erf((bound - mean) / (sim.REVIEW_NOISE * np.sqrt(2.0))))

        return tf.math.log(below(r["high"]) - below(r["low"]) + _EPS)

    def fit(self, views, units, steps=600, learning_rate=0.05, log_every=0):
        """Full-batch Adam on the negative log posterior; returns its final value."""
        import tensorflow as tf

        views, units = as_tensors(views, units)
        optimizer = tf.keras.optimizers.Adam(learning_rate)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss = self.negative_log_posterior(views, units)
            grads = tape.gradient(loss, self.variables)
            optimizer.apply_gradients(zip(grads, self.variables, strict=True))
            return loss

        for i in range(1, steps + 1):
            loss = float(step())
            if log_every and i % log_every == 0:
                print(f"step {i}: {loss:.1f}", file=sys.stderr, flush=True)
        return loss

    def score(self, store, bought_end):
        """Buy probabilities of the truth pairs with the estimated parameters."""
        import tensorflow as tf

        h, truth = store.hidden, store.truth
        u = _positions(h.user_ids, truth["user_id"], "user_id")
        p = _positions(h.product_ids, truth["product_id"], "product_id")
        bc = bought_end[0][u, h.category[p]]
        bb = bought_end[1][u, h.brand[p]]
        return tf.sigmoid(self.logits(tf.constant(u), tf.constant(p), bc, bb)).numpy()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--products", type=int, default=2000)
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--events-per-user", type=float, default=None)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--learn-weights", action="store_true")
    parser.add_argument("--reviews", action="store_true", help="read the review ratings too")
    args = parser.parse_args(argv)
    if args.reviews and args.learn_weights:
        parser.error("--reviews reads ratings with the simulation's weights; drop --learn-weights")
    from recsys.data import synthetic

    started = time.perf_counter()
    target = None if args.events_per_user is None else int(args.users * args.events_per_user)
    store = synthetic.generate(
        products=args.products, users=args.users, seed=args.seed, events_target=target
    )
    views, units, bought_end = observed(store)
    reviews = review_ratings(store) if args.reviews else None
    model = StoreModel(store.hidden, learn_weights=args.learn_weights, reviews=reviews)
    loss = model.fit(views, units, steps=args.steps, log_every=100)
    auc = synthetic._roc_auc(store.truth["label"].to_numpy(), model.score(store, bought_end))
    bayes = store.bayes_optimal_auc()
    result = {
        "protocol": "P5",
        "seed": args.seed,
        "events": len(store.events),
        "learn_weights": args.learn_weights,
        "reviews": len(store.reviews) if args.reviews else 0,
        "negative_log_posterior": round(loss, 1),
        "truth_auc": round(auc, 4),
        "bayes_optimal_auc": round(bayes, 4),
        "ratio": round(auc / bayes, 4),
        "weights": {k: round(float(v.numpy()), 3) for k, v in model.weights.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
