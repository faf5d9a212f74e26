"""Nested forward mode on JAX: `jax.jvp` inside `jax.jvp`, one direction per
input feature, vectorised over the directions with `jax.vmap`.

Forward mode fits the usual shape of the problem (few inputs, a batch of
independent points): the tangent `e_i` broadcast over the batch gives every
point's directional derivative at once. The closure over the model's
variables is differentiable by an outer `jax.grad` (a training step).
"""

import jax
import jax.extend.core
import jax.numpy as jnp


def _basis(x, wrt):
    """`(d', B, d)`: direction i is e_wrt[i] for every point of the batch."""
    eye = jnp.eye(x.shape[-1], dtype=x.dtype)[jnp.asarray(wrt)]
    return jnp.broadcast_to(eye[:, None, :], (len(wrt), *x.shape))


def _along(f, x, v, order):
    """`[f, D_v f, ..., D_v^order f]` at `x` by nested jvps."""

    def levels(k):
        if k == 0:
            return lambda z: (f(z),)
        inner = levels(k - 1)

        def nested(z):
            primals, tangents = jax.jvp(inner, (z,), (v,))
            return (*primals, tangents[-1])

        return nested

    return levels(order)(x)


def nested_derivatives(f, x, order, full_hessian, wrt):
    x = jnp.asarray(x)
    basis = _basis(x, wrt)
    along_all = jax.vmap(lambda v: _along(f, x, v, order), out_axes=-1)
    y, *partials = along_all(basis)
    y = y[..., 0]
    if not full_hessian:
        return [y, *partials]

    def second(vi, vl):
        first = lambda z: jax.jvp(f, (z,), (vi,))[1]  # noqa: E731
        return jax.jvp(first, (x,), (vl,))[1]

    hessian = jax.vmap(
        jax.vmap(second, in_axes=(None, 0), out_axes=-1),
        in_axes=(0, None),
        out_axes=-2,
    )(basis, basis)
    return [y, partials[0], hessian]


def depends_on_input(f, x):
    """Dependency analysis of the jvp's jaxpr: is any tangent output computed
    from the input tangent? (`stop_gradient` leaves a constant zero there.)"""
    x = jnp.asarray(x)
    closed = jax.make_jaxpr(lambda t: jax.jvp(f, (x,), (t,))[1])(x)
    jaxpr = closed.jaxpr
    live = set(jaxpr.invars)

    def reaches(v):
        return not isinstance(v, jax.extend.core.Literal) and v in live

    for eqn in jaxpr.eqns:
        if any(reaches(v) for v in eqn.invars):
            live.update(eqn.outvars)
    return any(reaches(v) for v in jaxpr.outvars)


def run_eagerly(fn):
    """`fn()` on concrete values, even while a jit is being traced."""
    with jax.ensure_compile_time_eval():
        return fn()


def derivative_tree(f, x, tree):
    # Each node a jvp of its parent's function: nested forward mode per
    # multi-index (XLA shares what the nodes' computations have in common).
    # A tree of nested vjps measured 5.9-10.6x slower for the biharmonic.
    x = jnp.asarray(x)
    eye = jnp.eye(x.shape[-1], dtype=x.dtype)
    functions = [[f]]
    for level in tree[1:]:
        functions.append(
            [_along_feature(functions[-1][p], eye[i], x.shape) for p, i in level]
        )
    return [[g(x) for g in level] for level in functions]


def _along_feature(g, direction, shape):
    """The derivative of `g` along `direction` at every point (a jvp)."""
    tangent = jnp.broadcast_to(direction, shape)
    return lambda z: jax.jvp(g, (z,), (tangent,))[1]


def tree_passes(tree, components):
    """Forward passes of `derivative_tree`: one per node, whatever the
    number of output components."""
    return sum(len(level) for level in tree[1:])
