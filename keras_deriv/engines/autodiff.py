"""The autodiff engine: the backend's native nested differentiation.

Works for any differentiable layer. The backend returns the pure partials
(or the full Hessian); the Laplacian is the trace of the Hessian, i.e. the
sum of the pure second partials.
"""

from keras import ops

from keras_deriv import backend


def derivatives(f, x, order, hessian, wrt, piecewise_linear=False, jet=False):
    """`[y, dy, d2y, ...]` of `f: (B, d) -> (B, m)` at `x`, with respect to
    the features `wrt` (d' of them).

    Shapes: `y` `(B, m)`, `dy` `(B, m, d')`; `d2y` `(B, m, d')` for
    `hessian="diagonal"`, `(B, m, d', d')` for `"full"`, `(B, m)` for
    `"laplacian"`; higher orders `(B, m, d')`.

    For a `piecewise_linear` f (a ReLU net) the derivatives beyond the first
    are zero, and nested differentiation returns exact zeros for them, at
    the cost of a reverse pass each: they are made as zeros instead.

    `jet=True` allows the backend to differentiate pure partials through a
    jet (JAX; `f` must update no state in its call).
    """
    if piecewise_linear and order >= 2:
        y, dy = backend.get().nested_derivatives(f, x, 1, False, wrt)
        # 0 * dy, not zeros_like: still connected to the weights (with a
        # zero gradient), so a loss on it alone trains like nested autodiff.
        zeros = 0.0 * dy
        second = {
            "full": ops.expand_dims(zeros, -1) * ops.zeros((len(wrt),), dy.dtype),
            "laplacian": ops.sum(zeros, axis=-1),
        }.get(hessian, zeros)
        return [y, dy, second] + [zeros] * (order - 2)
    levels = backend.get().nested_derivatives(
        f,
        x,
        order,
        full_hessian=(hessian == "full" and order >= 2),
        wrt=wrt,
        jet=jet,
    )
    if hessian == "laplacian" and order >= 2:
        levels[2] = ops.sum(levels[2], axis=-1)
    return levels


def along(f, x, v):
    """`(y, dy)`, both `(B, m)`: `f` and its first derivative at each point
    `x[b]` along its own direction `v[b]`."""

    def line(s):
        return f(x + s * v)

    s = ops.zeros_like(x[:, :1])
    y, dy = backend.get().nested_derivatives(line, s, 1, False, (0,))
    return y, dy[..., 0]


def named(f, x, terms):
    """`[y, *outputs]` of `f: (B, d) -> (B, m)` at `x`, one output per
    operator of `terms` (`{multi-index: coefficient}`, a multi-index a
    sorted tuple of feature indices): Σ coefficient · ∂^index f, `(B, m)`.

    Nested passes along the multi-indices, sharing prefixes: on TensorFlow
    and PyTorch one reverse pass per output component of each node with
    children gives all of its children (u_x, u_xx and u_xxt take three
    passes, u_xy two: the Hessian row of u_x); on JAX one forward pass per
    node (jvp of its parent)."""
    tree, position = _tree(terms)
    levels = backend.get().derivative_tree(f, x, tree)
    outputs = []
    for operator in terms:
        total = None
        for index, coefficient in operator.items():
            term = levels[len(index)][position[index]]
            term = term if coefficient == 1 else coefficient * term
            total = term if total is None else total + term
        outputs.append(total)
    return [levels[0][0], *outputs]


def _tree(terms):
    """The backend's tree of the multi-indices in `terms` and their
    prefixes, and each node's position in its level."""
    nodes = sorted(
        {index[:k] for op in terms for index in op for k in range(1, len(index) + 1)},
        key=lambda index: (len(index), index),
    )
    position = {(): 0}
    tree = [[None]]
    for index in nodes:
        if len(index) == len(tree):
            tree.append([])
        level = tree[len(index)]
        position[index] = len(level)
        level.append((position[index[:-1]], index[-1]))
    return tree, position


def passes(terms, components):
    """What `named` costs for `terms` and an output of `components`
    entries, in the backend's unit: nested reverse passes (one per output
    component of each node with children) on TensorFlow and PyTorch, nested
    forward passes (one per node) on JAX."""
    tree, _ = _tree(terms)
    return backend.get().tree_passes(tree, components)


def along_directions(f, x, directions):
    """`(y, first, second)` of `f: (B, d) -> (B, m)` at `x` along each of the
    directions `(r, d)` (a tensor, the same for every point): `y` `(B, m)`,
    the first and second directional derivatives `(B, m, r)`. Each point is
    copied r times, one nested pass along its direction each."""
    r, d = directions.shape
    copies = ops.reshape(ops.repeat(ops.expand_dims(x, 1), r, axis=1), (-1, d))
    lines = ops.reshape(
        ops.broadcast_to(ops.expand_dims(directions, 0), (ops.shape(x)[0], r, d)),
        (-1, d),
    )

    def line(s):
        return f(copies + s * lines)

    s = ops.zeros_like(copies[:, :1])
    y, first, second = backend.get().nested_derivatives(line, s, 2, False, (0,))

    def per_point(t):  # (B r, m, 1) -> (B, m, r)
        return ops.transpose(ops.reshape(t, (-1, r, t.shape[1])), (0, 2, 1))

    return (
        ops.reshape(y, (-1, r, y.shape[-1]))[:, 0],
        per_point(first),
        per_point(second),
    )
