"""Nested forward mode on JAX: `jax.jvp` inside `jax.jvp`, one direction per
input feature, vectorised over the directions with `jax.vmap`.

Forward mode fits the usual shape of the problem (few inputs, a batch of
independent points): the tangent `e_i` broadcast over the batch gives every
point's directional derivative at once. The closure over the model's
variables is differentiable by an outer `jax.grad` (a training step).

Pure partials of order 3 and up, where the caller allows it (`jet=True`:
a model without state updates in its call), are differentiated (a training
step) through a jet instead: `jax.experimental.jet` propagates the k + 1
Taylor terms of `f(x + t v)`, where the nested jvps' 2^k passes are more
than XLA merges in the reverse pass. Evaluated outside any differentiation
they are still nested jvps, faster than a jet (benchmarks/jet_jax.py
measures both); under `jax.grad` or `jax.jvp` the values come with the
jet's (equal to rounding). A jet is used only for functions made of the
primitives in `_JET_SAFE`, whose jet rules agree with their jvps; anything
else (a `custom_jvp` such as `relu` or `softplus`, whose rule a jet
ignores, or a cast of a float to an integer) keeps nested jvps for both.
It needs JAX 0.10 (`jaxprs_in_params`, `jet(factorial_scaled=)`); an older
JAX keeps nested jvps.
"""

import inspect
import math
import threading

import jax
import jax.extend.core
import jax.numpy as jnp
from jax.experimental import jet as jax_jet

# The jet path's JAX API: `jaxprs_in_params` and `take_current_trace` from
# JAX 0.10, `jet(..., factorial_scaled=)` from 0.7.
JET_AVAILABLE = (
    hasattr(jax.extend.core, "jaxprs_in_params")
    and hasattr(jax.extend.core, "take_current_trace")
    and "factorial_scaled" in inspect.signature(jax_jet.jet).parameters
)

# From this order on, a training step through pure partials is faster by a
# jet: benchmarks/jet_jax.py (order 2 is not).
JET_FROM_ORDER = 3

# Primitives whose jet rules give what their jvps give, ties of `max` and
# `abs` at zero included (tests/test_jax_jet.py): linear and structural
# ones, products, smooth elementwise functions, and the comparisons and
# `stop_gradient` that carry no series. Left out: `custom_jvp_call` and
# `custom_vjp_call` (a jet would ignore their rules, and JAX 0.10's fails on
# them: `relu`, `relu6`, `softplus`, `mish`, `log_sigmoid`, `hard_sigmoid`,
# `hard_silu`), `min` (its rule cannot broadcast a scalar: `celu` fails),
# `asinh`/`acosh`/`atanh` (rules by compositions that cancel
# catastrophically), and every primitive without a rule (`tan`, `atan`,
# `asin`, `acos`, `cbrt`, `sort`, control flow). `convert_element_type`
# only where it keeps a float a float (`_eqn_safe`): a jet casts a float's
# series to an integer too (truncating it), where a jvp gives a zero
# tangent. Every other way to an integer or a boolean (comparisons, `sign`,
# `floor`, `round`, ...) has a zero series in both, so integers and
# booleans carry none, and the linear rules on them are exact.
_JET_SAFE = frozenset(
    {
        # linear, structural
        "add", "add_any", "sub", "neg", "convert_element_type", "copy",
        "broadcast_in_dim", "reshape", "squeeze", "expand_dims", "transpose",
        "concatenate", "split", "slice", "dynamic_slice", "gather", "pad",
        "rev", "reduce_sum", "select_n",
        # bilinear, quotients, powers
        "dot_general", "mul", "div", "integer_pow", "square", "sqrt", "rsqrt",
        # smooth elementwise
        "exp", "log", "expm1", "log1p", "tanh", "logistic", "sin", "cos",
        "sinh", "cosh", "erf", "erfc",
        # max with the average at ties (as its jvp), softmax's shift
        "max", "reduce_max", "abs",
        # no series
        "stop_gradient", "eq", "ne", "lt", "le", "gt", "ge", "not", "and",
        "or", "sign", "floor", "ceil", "round", "is_finite",
        # a nested jit: its body is checked
        "jit", "pjit",
    }
)  # fmt: skip


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


def _jet_along(f, x, v, order):
    """`[f, D_v f, ..., D_v^order f]` at `x` by one jet of `f(x + t v)`."""
    zero = jnp.zeros_like(x)
    # Unscaled Taylor coefficients times exact factorials: the scaled
    # default divides by exp(lgamma(k + 1)), 24.00002 for 4! in float32.
    y, terms = jax_jet.jet(
        f, (x,), ((v, *[zero] * (order - 1)),), factorial_scaled=False
    )
    return (y, *[math.factorial(k) * t for k, t in enumerate(terms, 1)])


def _pure_partials(along, f, x, order, wrt):
    """`[y, J, D2, ..., Dk]` along the features `wrt`, vectorised over them."""
    along_all = jax.vmap(lambda v: along(f, x, v, order), out_axes=-1)
    y, *partials = along_all(_basis(x, wrt))
    return [y[..., 0], *partials]


def _jet_safe(jaxpr):
    """Whether every primitive of `jaxpr`, nested jits included, is one
    whose jet rule gives what its jvp gives."""
    for eqn in jaxpr.eqns:
        if not _eqn_safe(eqn):
            return False
        if not all(map(_jet_safe, jax.extend.core.jaxprs_in_params(eqn.params))):
            return False
    return True


def _eqn_safe(eqn):
    """Whether one equation's jet rule gives what its jvp gives."""
    if eqn.primitive.name not in _JET_SAFE or eqn.primitive not in jax_jet.jet_rules:
        return False
    if eqn.primitive.name == "convert_element_type":
        source = eqn.invars[0].aval.dtype
        target = eqn.params["new_dtype"]
        return not jnp.issubdtype(source, jnp.inexact) or jnp.issubdtype(
            target, jnp.inexact
        )
    return True


def _eval_trace_type():
    """The type of the trace outside every transformation, or None if
    unknown: read on a thread of its own (JAX's trace context is per
    thread), so that an import inside a traced function reads it too."""
    found = []

    def read():
        try:
            with jax.extend.core.take_current_trace() as trace:
                found.append(type(trace))
        except AttributeError:  # another JAX: unknown
            pass

    thread = threading.Thread(target=read)
    thread.start()
    thread.join()
    return found[0] if found else None


_EVAL_TRACE = _eval_trace_type()


def _transformed():
    """Whether a JAX transformation (a jit, a grad, a vmap, ...) is tracing
    the current call: else nothing can differentiate its result, and the
    values need no rule. Unsure (another JAX) counts as transformed."""
    if _EVAL_TRACE is None:
        return True
    with jax.extend.core.take_current_trace() as trace:
        return not isinstance(trace, _EVAL_TRACE)


def _trained_by_jet(traced, x, order, wrt):
    """The pure partials of the function `traced` (a closed jaxpr of `x`)
    by nested jvps, and their derivatives by the jvp of a jet.

    Under a jvp (or a grad, through its linearization) the primal outputs
    are the rule's: the jet's values, which agree with nested jvps to
    rounding for the primitives of `_JET_SAFE` (the loss a training step
    reports is the jet's). The jaxpr's constants (the model's variables,
    traced by an outer `jax.grad` in a training step) become arguments, so
    that the custom rule, not nested jvps, is what the outer
    differentiation sees."""

    def partials_by(along):
        def partials(z, *consts):
            closed = jax.extend.core.ClosedJaxpr(traced.jaxpr, consts)
            g = lambda u: jax.extend.core.jaxpr_as_fun(closed)(u)[0]  # noqa: E731
            return _pure_partials(along, g, z, order, wrt)

        return partials

    values = jax.custom_jvp(partials_by(_along))

    @values.defjvp
    def _(primals, tangents):
        return jax.jvp(partials_by(_jet_along), primals, tangents)

    return values(x, *traced.consts)


def _jet_traced(f, x, order, full_hessian):
    """The closed jaxpr of `f` at `x` where a jet differentiates its pure
    partials of `order`, else None."""
    if not JET_AVAILABLE or order < JET_FROM_ORDER or full_hessian:
        return None
    traced = jax.make_jaxpr(f)(x)
    if len(traced.jaxpr.outvars) == 1 and _jet_safe(traced.jaxpr):
        return traced
    return None


def differentiates_by_jet(f, x, order, full_hessian=False):
    """Whether `nested_derivatives(f, x, order, full_hessian, ..., jet=True)`
    is differentiated (in a training step, or by any outer JAX
    transformation) through a jet rather than nested jvps. Its values are
    nested jvps outside any transformation; under a jvp or grad they are
    the jet's, equal to rounding."""
    return _jet_traced(f, jnp.asarray(x), order, full_hessian) is not None


def nested_derivatives(f, x, order, full_hessian, wrt, jet=False):
    x = jnp.asarray(x)
    if jet and JET_AVAILABLE and _transformed():
        traced = _jet_traced(f, x, order, full_hessian)
        if traced is not None:
            return _trained_by_jet(traced, x, order, wrt)
    y, *partials = _pure_partials(_along, f, x, order, wrt)
    if not full_hessian:
        return [y, *partials]
    basis = _basis(x, wrt)

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
