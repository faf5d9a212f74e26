"""Probe points for derivative curves: a line along one input feature."""

import math
import numbers

import numpy as np


def slice_points(
    d: int,
    feature: int,
    lo: float,
    hi: float,
    points: int = 200,
    at: "list[float] | np.ndarray | None" = None,
    dtype: str = "float32",
) -> np.ndarray:
    """Points on a line along one input feature, the others held fixed.

    Derivative curves are drawn against one feature; random collocation
    points (x, t) differ in the others too, and their curves zigzag. Probe
    a slice instead: `x[:, feature]` runs from `lo` to `hi`, every other
    feature stays at its value in `at`.

    Args:
        d: the number of input features.
        feature: the feature that varies, from 0 to `d - 1`.
        lo: its first value.
        hi: its last value, above `lo`.
        points: how many points, at least 2. Defaults to `200`.
        at: the values of all `d` features off the slice (the entry for
            `feature` is ignored); `None` for zeros. Defaults to `None`.
        dtype: the points' float dtype. Defaults to `"float32"`.

    Returns:
        An array `(points, d)`.

    Example:
        >>> from keras_deriv import slice_points
        >>> x = slice_points(d=2, feature=0, lo=0.0, hi=1.0, points=5, at=[0, 0.5])
        >>> x.tolist()
        [[0.0, 0.5], [0.25, 0.5], [0.5, 0.5], [0.75, 0.5], [1.0, 0.5]]
    """
    for name, value, least in (("d", d, 1), ("points", points, 2)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"`{name}` must be an int; got {value!r}.")
        if value < least:
            raise ValueError(f"`{name}` must be at least {least}; got {value}.")
    if isinstance(feature, bool) or not isinstance(feature, numbers.Integral):
        raise TypeError(f"`feature` must be an int index; got {feature!r}.")
    if not 0 <= feature < d:
        raise ValueError(f"`feature` must be from 0 to {d - 1}; got {feature}.")
    if not (
        isinstance(lo, numbers.Real)
        and isinstance(hi, numbers.Real)
        and math.isfinite(lo)
        and math.isfinite(hi)
        and lo < hi
    ):
        raise ValueError(
            f"`lo` and `hi` must be finite numbers, lo < hi; got {lo}, {hi}."
        )
    base = np.zeros(d, dtype=dtype) if at is None else np.asarray(at, dtype=dtype)
    if base.shape != (d,):
        raise ValueError(
            f"`at` needs {d} values, one per input feature; got shape {base.shape}."
        )
    if not np.all(np.isfinite(base)):
        raise ValueError("`at` needs finite values.")
    x = np.tile(base, (points, 1))
    x[:, feature] = np.linspace(lo, hi, points, dtype=dtype)
    return x
