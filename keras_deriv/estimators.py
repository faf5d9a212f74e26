"""Randomized estimators of second-order operators, for many input features.

An exact Laplacian of a network with d inputs costs d + 2 forward passes'
worth of work (the forward Laplacian), too much at d = 1,000 or 100,000.
Hutchinson's estimator replaces the d coordinate directions by k random
ones v with E[v vᵀ] = I: E[vᵀ H v] = tr H, so the mean of the k second
directional derivatives is an unbiased estimate of the Laplacian, at the
cost of k + 2 passes whatever d is. The Taylor engine propagates the k
directions together (Shi et al., "Stochastic Taylor Derivative Estimator",
NeurIPS 2024; Hu et al., CMAME 2024, for Hutchinson-trace PINNs).
"""

import numbers
import secrets

from keras_deriv.options import check_choice

DISTRIBUTIONS = ("rademacher", "gaussian")


class Hutchinson:
    """Hutchinson's randomized estimate of second-order operators.

    Pass it as `DerivativeModel(..., partials=..., estimator=Hutchinson(k))`
    (or to `derivatives()`): every operator of `partials` of order at most
    two, `Σ a_ij ∂²/∂x_i∂x_j + Σ b_i ∂/∂x_i`, is then computed as

        (1/k) Σ_v D²_v y + Σ_i b_i ∂y/∂x_i

    along k random directions v with E[v vᵀ] = A (v = L ε with A = L Lᵀ and
    ε a random vector with E[ε εᵀ] = I; an indefinite A is split into its
    positive and negative parts, k directions each). The first-order part is
    exact. The estimate is unbiased, and its variance falls as 1/k: for the
    Laplacian with Rademacher ε it is 2 Σ_{i≠j} H_ij² / k, with Gaussian ε
    2 Σ_ij H_ij² / k (H the Hessian of one output at the point). The cost
    does not grow with the number of input features (past the first
    layer's matmul): k + 2 coefficients per layer against d + 2 for the
    exact forward Laplacian.

    The k directions are drawn once per call and shared by every point of
    the batch (the first layer's matmul then costs k rows, not batch × k),
    so the errors of the points of one batch are correlated; each call (each
    training step) draws new ones. Each output of `partials` has k
    directions of its own, so two outputs of the same operator are
    independent estimates: the mean of `(L̂₁u - f)(L̂₂u - f)` is the squared
    residual `(Lu - f)²` exactly, while that of `(L̂u - f)²` adds the
    estimate's variance (a loss on it is biased towards networks whose
    estimate varies less). The draws come from the layer's own seed
    generator: a `seed` makes the sequence of draws reproducible, and it is
    saved with the model, so a resumed run continues the sequence.

    Args:
        directions: k, the number of random directions per call, an int >= 1.
            Defaults to `16`.
        distribution: `"rademacher"` (entries ±1: the least variance for the
            Laplacian) or `"gaussian"` (standard normal entries). Defaults to
            `"rademacher"`.
        seed: an int for a reproducible sequence of draws, or `None` for a
            random one. Defaults to `None`.
        resample: `True` to draw new directions at every call; `False` to use
            one fixed draw (from `seed`) at every call: a deterministic, but
            biased for the given model, estimate (e.g. to compare models on
            one validation set). Defaults to `True`.

    Examples:
        >>> import numpy as np, keras
        >>> from keras_deriv import DerivativeModel, Hutchinson, laplacian
        >>> d = 100
        >>> net = keras.Sequential([keras.Input((d,)),
        ...                         keras.layers.Dense(32, activation="tanh"),
        ...                         keras.layers.Dense(1)])
        >>> layer = DerivativeModel(net, partials={"lap": laplacian(d)},
        ...                         estimator=Hutchinson(16, seed=0))
        >>> out = layer(np.random.rand(8, d).astype("float32"))
        >>> tuple(out["lap"].shape)
        (8, 1)
    """

    def __init__(
        self,
        directions: int = 16,
        distribution: str = "rademacher",
        seed: int | None = None,
        resample: bool = True,
    ):
        if isinstance(directions, bool) or not isinstance(directions, numbers.Integral):
            raise TypeError(
                f"Hutchinson: `directions` is the number of random directions, "
                f"an int >= 1; got {directions!r}."
            )
        if directions < 1:
            raise ValueError(
                f"Hutchinson: `directions` must be at least 1; got {directions}."
            )
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
        ):
            raise TypeError(f"Hutchinson: `seed` is an int or None; got {seed!r}.")
        if seed is not None and not 0 <= seed < 2**31:
            raise ValueError(
                f"Hutchinson: `seed` must be from 0 to 2**31 - 1 (every backend "
                f"takes those); got {seed}."
            )
        if not isinstance(resample, bool):
            raise TypeError(
                f"Hutchinson: `resample` is True or False; got {resample!r}."
            )
        self.directions = int(directions)
        self.distribution = check_choice("distribution", distribution, DISTRIBUTIONS)
        if not resample and seed is None:
            seed = secrets.randbelow(2**31)  # one fixed draw, kept in the config
        self.seed = None if seed is None else int(seed)
        self.resample = resample

    def get_config(self) -> dict:
        return {
            "directions": self.directions,
            "distribution": self.distribution,
            "seed": self.seed,
            "resample": self.resample,
        }

    @classmethod
    def from_config(cls, config: dict) -> "Hutchinson":
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"Hutchinson({args})"

    def __eq__(self, other):
        return isinstance(other, Hutchinson) and other.get_config() == self.get_config()

    def __hash__(self):
        return hash(tuple(self.get_config().items()))


def check_estimator(estimator):
    """`estimator` as a `Hutchinson` (a config dict, as saved, is read), or
    None; anything else is a clear error."""
    if estimator is None or isinstance(estimator, Hutchinson):
        return estimator
    if isinstance(estimator, dict):
        config = estimator.get("config", estimator)
        try:
            return Hutchinson.from_config(config)
        except TypeError as err:
            raise ValueError(
                f"Unreadable `estimator` config {estimator!r}: {err}"
            ) from None
    raise TypeError(
        "`estimator` must be None (exact operators) or "
        f"keras_deriv.Hutchinson(...); got {estimator!r}."
    )


def laplacian(features: int | list) -> dict:
    """The Laplacian Σ_i ∂²/∂x_i² as a `partials` operator.

    Args:
        features: the number d of input features (the Laplacian over
            features 0 to d - 1), or a list of feature indices or variable
            names.

    Returns:
        `{(i, i): 1.0, ...}`, the operator's dict.

    Examples:
        >>> from keras_deriv import laplacian
        >>> laplacian(2)
        {(0, 0): 1.0, (1, 1): 1.0}
        >>> laplacian(["x", "y"])
        {('x', 'x'): 1.0, ('y', 'y'): 1.0}
    """
    if isinstance(features, numbers.Integral) and not isinstance(features, bool):
        if features < 1:
            raise ValueError(f"laplacian(): needs d >= 1 features; got {features}.")
        features = range(int(features))
    elif isinstance(features, str) or not hasattr(features, "__iter__"):
        raise TypeError(
            "laplacian() takes the number of features or a list of feature "
            f"indices or names; got {features!r}."
        )
    return {(f, f): 1.0 for f in features}
