"""Validation of the options shared by DerivativeModel, derivatives() and
DerivativeLogger: each bad value is a clear error naming the fix."""

import math
import numbers
import operator

HESSIAN_MODES = ("diagonal", "full", "laplacian")
METHODS = ("auto", "autodiff", "taylor")
MAX_ORDER = 4
OUTPUT_KEYS = ("y", "dy", "d2y", "d3y", "d4y")


def check_order(order):
    if isinstance(order, bool) or not isinstance(order, numbers.Integral):
        raise TypeError(
            f"`order` must be an int from 1 to {MAX_ORDER}; got {order!r} "
            f"of type {type(order).__name__}."
        )
    if not 1 <= order <= MAX_ORDER:
        raise ValueError(
            f"`order` must be from 1 to {MAX_ORDER} (1: [y, dy], 2: [y, dy, "
            f"d2y], ...); got {order}."
        )
    return int(order)


def check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(
            f"Unknown `{name}`={value!r}. Expected one of "
            f"{', '.join(repr(c) for c in choices)}."
        )
    return value


def check_method(method):
    return check_choice("method", method, METHODS)


def check_wrt(wrt):
    if wrt is None:
        return None
    if isinstance(wrt, int) and not isinstance(wrt, bool):
        wrt = [wrt]
    try:
        indices = [operator.index(i) for i in wrt]
    except TypeError:
        raise TypeError(
            "`wrt` must be a list of integer feature indices, e.g. wrt=[0]; "
            f"got {wrt!r}."
        ) from None
    if any(isinstance(i, bool) for i in wrt):
        raise TypeError(f"`wrt` must hold integer indices, not booleans; got {wrt!r}.")
    if not indices:
        raise ValueError("`wrt` is empty: name at least one input feature.")
    repeated = sorted({i for i in indices if indices.count(i) > 1})
    if repeated:
        raise ValueError(
            f"`wrt` repeats the feature indices {repeated}; each input "
            "feature may be named once."
        )
    if min(indices) < 0:
        raise ValueError(
            f"`wrt` indices must be non-negative (counted from 0); got {indices}."
        )
    return tuple(indices)


def check_hessian(hessian, order):
    """A known Hessian mode that fits `order` (orders 3 and 4: diagonal)."""
    check_choice("hessian", hessian, HESSIAN_MODES)
    if order >= 3 and hessian != "diagonal":
        raise ValueError(
            f'order={order} needs hessian="diagonal" (orders 3 and 4 are pure '
            f'partials ∂ᵏy/∂x_iᵏ); got hessian="{hessian}".'
        )
    return hessian


def check_batch_size(batch_size):
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
        raise ValueError(f"`batch_size` must be a positive int; got {batch_size!r}.")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int; got {batch_size!r}.")
    return int(batch_size)


def check_smoothing(smoothing):
    """None (exact derivatives) or the resolution σ, a positive finite
    number in the input's units."""
    if smoothing is None:
        return None
    if isinstance(smoothing, bool) or not isinstance(smoothing, numbers.Real):
        raise TypeError(
            "`smoothing` must be None (exact derivatives) or a positive "
            f"number, the resolution σ in input units; got {smoothing!r} of "
            f"type {type(smoothing).__name__}."
        )
    if not math.isfinite(smoothing) or smoothing <= 0:
        raise ValueError(
            "`smoothing` must be a positive finite number (the resolution σ "
            f"in input units, e.g. 0.05), or None for exact derivatives; got "
            f"{smoothing!r}."
        )
    return float(smoothing)


def output_keys(order, smoothing=None):
    """`("y", "dy", ...)`; smoothed derivatives carry `_smoothed`."""
    keys = OUTPUT_KEYS[: order + 1]
    if smoothing is None:
        return keys
    return (keys[0], *(f"{key}_smoothed" for key in keys[1:]))
