"""Nested reverse mode on TensorFlow: one `GradientTape` per order.

The points of a batch are independent, so the gradient of the batch sum of
one output component is that component's derivative at every point (the
"sum trick"). For pure partials, each point is repeated once per input
feature to differentiate (`_tiling`): copy i of a point only ever needs its
derivative along x_i, so one reverse pass per output component serves every direction.
The tapes are nested (the tape of order k records everything below it), so
every level stays differentiable with respect to the weights: a training
step's outer tape sees through them. Nested `ForwardAccumulator`s (what
`keras.ops.jvp` uses here) trained wrongly inside `fit` in our measurements.
"""

import concurrent.futures

import tensorflow as tf

from keras_deriv.errors import NotDifferentiableError

_NOT_CONNECTED = "the output does not depend differentiably on the input"

# Up to this many output components, one reverse pass each; beyond, in a
# compiled graph, `batch_jacobian` vectorises them with pfor (in eager mode
# pfor retraces on every call, ~0.6 s, so the loop is kept there).
_MAX_LOOPED_COMPONENTS = 16


def _gradients(tape, top, xt, sums):
    """`(N, m, d)`: d top[:, j] / d xt for each component j."""
    if sums is None:
        return tape.batch_jacobian(top, xt)
    grads = [tape.gradient(s, xt) for s in sums]
    if all(g is None for g in grads):
        return None
    # A component that does not depend on x has a zero derivative.
    grads = [tf.zeros_like(xt) if g is None else g for g in grads]
    return tf.stack(grads, axis=1)


def _levels(f, xt, direction, wrt, order, full_hessian):
    """`[f, D_1, ..., D_order]` at the tiled points `xt` (N, d), where row r
    is differentiated along `direction[r]` (one-hot): `D_k` is `(N, m)`, or
    the second derivatives along the `wrt` features `(N, m, d')` for
    `full_hessian`."""
    if order == 0:
        return [f(xt)]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(xt)
        lower = _levels(f, xt, direction, wrt, order - 1, full_hessian)
        top = lower[-1]  # inside the tape: it must see what it differentiates
        m = top.shape[-1]
        looped = tf.executing_eagerly() or m <= _MAX_LOOPED_COMPONENTS
        sums = [tf.reduce_sum(top[:, j]) for j in range(m)] if looped else None
    jac = _gradients(tape, top, xt, sums)
    del tape
    if jac is None:
        if order == 1:
            raise NotDifferentiableError(_NOT_CONNECTED)
        # The derivative below is constant in x (a linear map): zero above
        # it, as 0 * top, still connected to the weights (a loss on it
        # trains, with a zero gradient, instead of "No gradients").
        jac = 0.0 * top[..., None] * tf.ones_like(xt)[:, None, :]
    if full_hessian and order == 2:
        return [*lower, tf.gather(jac, wrt, axis=-1)]
    return [*lower, tf.reduce_sum(jac * direction[:, None, :], axis=-1)]


def _tiling(x, wrt):
    """Each point repeated once per differentiated feature, and the one-hot
    direction of each copy."""
    d = x.shape[-1]
    directions = tf.gather(tf.eye(d, dtype=x.dtype), wrt)  # (d', d)
    if len(wrt) == 1:
        return x, tf.tile(directions, [tf.shape(x)[0], 1])
    xt = tf.repeat(x, len(wrt), axis=0)
    return xt, tf.tile(directions, [tf.shape(x)[0], 1])


def nested_derivatives(f, x, order, full_hessian, wrt, jet=False):
    del jet  # JAX's alone (keras_deriv/backend/__init__.py)
    x = tf.convert_to_tensor(x)
    n = len(wrt)
    xt, direction = _tiling(x, list(wrt))
    y, *partials = _levels(f, xt, direction, list(wrt), order, full_hessian)
    m = y.shape[-1]
    results = [y[::n]]
    for k, t in enumerate(partials, start=1):
        if full_hessian and k == 2:  # (B*n, m, n) -> (B, m, n, n)
            t = tf.transpose(tf.reshape(t, (-1, n, m, n)), (0, 2, 1, 3))
        else:  # (B*n, m) -> (B, m, n)
            t = tf.transpose(tf.reshape(t, (-1, n, m)), (0, 2, 1))
        results.append(t)
    return results


def depends_on_input(f, x):
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = f(x)
    if not y.dtype.is_floating:
        return False
    return tape.gradient(y, x) is not None


def run_eagerly(fn):
    """`fn()` executed eagerly, even while a tf.function is being traced.

    Graph building is per thread, so a fresh thread runs eagerly. (Not
    `tf.init_scope()`: it also pauses every gradient tape, `fn`'s own too.)
    """
    if tf.executing_eagerly():
        return fn()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn).result()


def _tree_levels(f, x, tree, depth):
    """The tree's nodes down to `depth`, one list of `(B, m)` per level."""
    if depth == 0:
        return [[f(x)]]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        lower = _tree_levels(f, x, tree, depth - 1)
        parents = sorted({p for p, _ in tree[depth]})
        m = lower[-1][0].shape[-1]
        looped = tf.executing_eagerly() or m <= _MAX_LOOPED_COMPONENTS
        sums = {
            p: [tf.reduce_sum(lower[-1][p][:, j]) for j in range(m)] if looped else None
            for p in parents
        }
    jacobians = {}
    for p in parents:
        jac = _gradients(tape, lower[-1][p], x, sums[p])
        if jac is None:
            if depth == 1:
                raise NotDifferentiableError(_NOT_CONNECTED)
            top = lower[-1][p]  # constant in x: zeros, still connected
            jac = 0.0 * top[..., None] * tf.ones_like(x)[:, None, :]
        jacobians[p] = jac
    del tape
    return [*lower, [jacobians[p][:, :, i] for p, i in tree[depth]]]


def derivative_tree(f, x, tree):
    x = tf.convert_to_tensor(x)
    return _tree_levels(f, x, tree, len(tree) - 1)


def tree_passes(tree, components):
    """Reverse passes of `derivative_tree`: one per output component of
    each node with children."""
    return components * sum(len({p for p, _ in level}) for level in tree[1:])
