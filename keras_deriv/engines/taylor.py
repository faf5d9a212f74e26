"""The Taylor engine: forward propagation of jets along the walk.

Each known layer's Taylor rule (registered with its facts in
`graph/known_layers.py`, the math in `taylor_rules.py`) maps the jets of
its inputs to the jet of its output. Sequential and Functional models,
nested, are propagated step by step; a model with any other step is not
supported and `taylor_gap` says why (the caller falls back to autodiff or
raises, never guesses).

Costs per Dense layer: 1 + k·d' matmuls for order k pure partials, d' + 2
for the Laplacian (the forward Laplacian of Li et al. 2023), 1 + d' +
d'(d'+1)/2 for the full Hessian — against a nested reverse pass per order
and per output for autodiff.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_deriv.engines import jets
from keras_deriv.engines.taylor_rules import Unsupported, activation_rule
from keras_deriv.graph.walk import KNOWN, MODEL, Graph, effective_training

__all__ = ["Unsupported", "derivatives", "taylor_gap"]


def taylor_gap(graph: Graph) -> str | None:
    """Why the Taylor engine cannot propagate through `graph`, or None."""
    if graph.problem is not None:
        return graph.problem
    for step in graph.steps:
        kind = type(step.layer).__name__
        if step.kind == MODEL:
            inner = step.inner[0]
            if inner.input_keys and not (
                isinstance(step.inputs, list)
                and len(step.inputs) == len(inner.input_keys)
            ):
                return (
                    f"model {step.path!r} is called on inputs that keras_deriv "
                    "cannot match to its own (a dict of tensors)"
                )
            gap = taylor_gap(inner)
            if gap is not None:
                return gap
            continue
        if step.kind != KNOWN or step.facts.taylor is None:
            what = kind
            if not isinstance(step.layer, keras.layers.Layer):
                what = f"{kind}, a keras.ops operation"
            return f"layer {step.path!r} ({what}) has no Taylor rule"
        if isinstance(step.inputs, list) != step.facts.merge:
            return f"layer {step.path!r} ({kind}) is called on a list of tensors"
        gap = step.facts.taylor_gap(step.layer)
        if gap is not None:
            return gap
        activation = step.facts.activation(step.layer)
        if activation is not None and step.facts.taylor is not None:
            if activation is not step.layer and activation_rule(activation) is None:
                return (
                    f"the activation of layer {step.path!r} has no Taylor rule "
                    "(a custom activation)"
                )
    return None


def _propagate(graph, jet, mode, training):
    """The output jet of `graph` given the jet of its input (a list of
    jets, one per input, for a graph with several)."""
    if graph.input_keys:
        values = dict(zip(graph.input_keys, jet, strict=True))
    else:
        values = {graph.input_key: jet}
    for step in graph.steps:
        if isinstance(step.inputs, list):
            inputs = [values[k] for k in step.inputs]
        else:
            inputs = values[step.inputs]
        active = effective_training(step, training)
        if step.kind == MODEL:
            values[step.output] = _propagate(step.inner[0], inputs, mode, active)
        else:
            values[step.output] = step.facts.taylor(step.layer, inputs, mode, active)
    return values[graph.output_key]


def derivatives(
    graph: Graph,
    x,
    order,
    hessian,
    wrt,
    training=None,
    directions=None,
    collapse=None,
    slots=None,
    support=None,
):
    """`[y, dy, d2y, ...]` as the autodiff engine returns them: `y` `(B, m)`,
    derivatives `(B, m, d')`, the Laplacian `(B, m)`, the full Hessian
    `(B, m, d', d')`; and the shape of one point's output. With
    `directions` (an array `(r, d)`), the derivatives along those
    directions instead of the features `wrt`, as `(B, m, r)`; with
    `collapse` too (an array `(q, r)`), the highest order only as those q
    weighted sums over the directions, `(B, m, q)` (collapsed Taylor mode:
    one propagated coefficient per sum instead of one per direction); for
    order two, `collapse` may be `(q, r, r)`: symmetric matrices C, the
    second order as Σ_ij C_ij ∂_i∂_j along the directions.

    `directions` may be a tensor (drawn at run time, e.g. random); then
    `support` (a boolean array over the features) says which features they
    may move, and `collapse` is `(q, r)`.

    A model with several inputs takes `x` flat, every input's features side
    by side; `slots` (each with `offset`, `size` and `shape`) says where
    each input sits. An input no direction moves is held fixed."""
    d = x.shape[-1]
    if directions is None:
        directions = np.eye(d)[list(wrt)]
    else:
        hessian = "diagonal"
    drawn = not isinstance(directions, (np.ndarray, list, tuple))
    if drawn:  # a tensor: directions drawn at run time (random ones)
        support = np.ones(d, dtype=bool) if support is None else support
    else:
        directions = np.asarray(directions, dtype="float64")
        support = directions.any(axis=0)
    if collapse is not None and order == 1:
        # The first derivative is linear in the direction: differentiate
        # along the weighted sums themselves.
        directions = np.asarray(collapse) @ directions
        collapse = None
    n = directions.shape[0]
    scale = None
    if collapse is not None and n == 1:
        # One direction has no direction axis to sum over: its highest
        # coefficient, scaled by each sum's one weight.
        scale = np.asarray(collapse).reshape(len(collapse), -1)[:, 0]
        collapse = None
    if collapse is not None:
        collapse = np.asarray(collapse, dtype="float64")
        if drawn and collapse.shape == (1, n) and (collapse == 1).all():
            collapse = None  # a plain sum, as the forward Laplacian's: (B, m)
        mode = jets.Mode("collapsed", n, top=order, weights=collapse)
    else:
        kind = {"laplacian": "laplacian", "full": "hessian"}.get(hessian, "directions")
        mode = jets.Mode(kind if order >= 2 else "directions", n)
    # The input's first coefficient is the same at every point: a batch of
    # one, which broadcasts, until a point-dependent factor multiplies it
    # (the first layer's matmul then costs n rows, not B * n). With one
    # direction there is no direction axis at all (fewer ops).
    if drawn:
        rows = ops.cast(directions, x.dtype)
        rows = rows if n == 1 else ops.expand_dims(rows, 0)
    else:
        rows = directions if n == 1 else directions[None]
        rows = ops.convert_to_tensor(rows, x.dtype)
    if slots is None:
        jet = [x, rows] + [None] * (order - 1)
    else:
        jet = [_input_jet(x, rows, slot, order, support) for slot in slots]
    out = _propagate(graph, jet, mode, training)
    value = out[0]
    m = math.prod(value.shape[1:])
    if out[1] is None:
        raise Unsupported("the output does not depend on the input")
    first = jets.batched(out[1], value)
    levels = [ops.reshape(value, (-1, m))]
    for k, c in enumerate(out[1:], start=1):
        if c is None:  # identically zero (e.g. d2y of a ReLU net)
            c = _connected_zeros(first, mode, k)
        else:
            c = jets.batched(c, value)
        levels.append(_level(c, mode, k, hessian, n, m))
    if scale is not None:
        levels[-1] = levels[-1] * ops.convert_to_tensor(scale, levels[-1].dtype)
    return levels, tuple(value.shape[1:])


def _input_jet(x, rows, slot, order, support):
    """The jet of one input of a model with several: its value and
    directions (x is linear in each), in its own shape. `support`: the
    features some direction moves."""
    end = slot.offset + slot.size
    value = ops.reshape(x[:, slot.offset : end], (-1, *slot.shape))
    if not support[slot.offset : end].any():  # held fixed
        return [value] + [None] * order
    part = rows[..., slot.offset : end]
    c1 = ops.reshape(part, (*part.shape[:-1], *slot.shape))
    return [value, c1] + [None] * (order - 1)


def _connected_zeros(first, mode, k):
    """Zeros in the layout of coefficient k, computed as 0 * (the first
    coefficient): still connected to the weights (with a zero gradient), so
    a loss on them alone trains as nested autodiff would, where
    `zeros_like` would leave "No gradients provided"."""
    zero = 0.0 * first  # (B, n, *F), or (B, *F) for one direction
    if mode.n == 1:
        return zero
    if k == 2 and mode.kind == "hessian":
        return ops.take(zero, mode.first, axis=1)
    if k == 2 == mode.top:
        return mode.pair(zero, zero)
    return mode.reduce(k, zero)


def _level(c, mode, k, hessian, n, m):
    """One coefficient in the autodiff engine's layout."""
    if k == mode.top:
        if mode.weights is None:  # the Laplacian
            return ops.reshape(c, (-1, m))
        q = len(mode.weights)
        return ops.transpose(ops.reshape(c, (-1, q, m)), (0, 2, 1))
    if mode.n == 1:
        level = ops.reshape(c, (-1, m))
        if k == 2 and hessian == "laplacian":
            return level
        level = ops.expand_dims(level, -1)
        return ops.expand_dims(level, -1) if k == 2 and hessian == "full" else level
    if k == 2 and mode.kind == "hessian":
        index = {pair: p for p, pair in enumerate(mode.pairs)}
        square = [index[min(i, j), max(i, j)] for i in range(n) for j in range(n)]
        full = ops.take(ops.reshape(c, (-1, len(index), m)), square, axis=1)
        return ops.transpose(ops.reshape(full, (-1, n, n, m)), (0, 3, 1, 2))
    return ops.transpose(ops.reshape(c, (-1, n, m)), (0, 2, 1))


def along(graph: Graph, x, v, training=None):
    """`(y, dy, shape)`: the value and the first derivative of each point
    `x[b]` along its own direction `v[b]` (`v` `(B, d)`), both `(B, m)`, and
    the shape of one point's output."""
    out = _propagate(graph, [x, v], jets.Mode("directions", 1), training)
    value = out[0]
    if out[1] is None:
        raise Unsupported("the output does not depend on the input")
    m = math.prod(value.shape[1:])
    first = jets.batched(out[1], value)
    shape = tuple(value.shape[1:])
    return ops.reshape(value, (-1, m)), ops.reshape(first, (-1, m)), shape
