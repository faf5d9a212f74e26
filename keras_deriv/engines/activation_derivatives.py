"""Derivatives of elementwise activations, up to order 4.

`get(activation, layer)` returns `derivs(z, k) -> [f(z), f'(z), ...,
f^(k)(z)]`, with None for a derivative that is identically zero, or returns
None when the activation has no rule here (the caller then falls back to
the autodiff engine: never a guess). Every rule here is a closed form.
"""

import math

import keras
from keras import ops

# Each closed form is accurate to a few ulps in float32 as in float64, also
# where the activation saturates: no 1 - sigmoid(z), no exp(z) - 1, no
# 1 + erf(z). A float64 input stays float64 on every backend: Keras 3
# computes some float64 ops in float32 (`ops.minimum` and `ops.maximum` on
# torch, `ops.tanh` and `ops.sinh` on JAX), so the rules use none of them.


def _logistic(z):
    """p = sigmoid(z), q = sigmoid(-z), p q and q - p, each to a few ulps.

    From e = exp(-|z|): the larger of p and q is 1 / (1 + e), the smaller
    e / (1 + e), and |q - p| = (1 - e) / (1 + e) with 1 - e = -expm1(-|z|).
    Never 1 - p, which cancels where p is near 1.
    """
    minus_abs = -ops.abs(z)
    e = ops.exp(minus_abs)
    big = 1 / (1 + e)
    small = e * big
    gap = -ops.expm1(minus_abs) * big
    positive = z >= 0
    p = ops.where(positive, big, small)
    q = ops.where(positive, small, big)
    return p, q, small * big, ops.where(positive, -gap, gap)


def _sigmoid_derivatives(z, k):
    # p' = p q and q' = -p q give, with p + q = 1:
    # sigma' = p q, sigma'' = p q (q - p), sigma''' = p q (1 - 6 p q),
    # sigma'''' = p q (q - p) (1 - 12 p q)
    p, _, pq, gap = _logistic(z)
    return [p, pq, pq * gap, pq * (1 - 6 * pq), pq * gap * (1 - 12 * pq)][: k + 1]


def _piecewise_linear(value, slope):
    def derivs(z, k):  # None: a derivative known to be zero everywhere
        return [value(z), slope(z), *([None] * (k - 1))][: k + 1]

    return derivs


def _where(condition, a, b, like):
    return ops.where(condition, ops.zeros_like(like) + a, ops.zeros_like(like) + b)


def _tanh(z, k):
    # With p = sigmoid(2z), q = sigmoid(-2z): tanh z = p - q and
    # tanh' z = 1 - tanh^2 z = 4 p q (1 - t^2 itself cancels for large |z|).
    _, _, pq, gap = _logistic(2 * z)
    t, s = -gap, 4 * pq
    t2 = t * t
    return [t, s, -2 * t * s, -2 * s * (1 - 3 * t2), 8 * t * s * (2 - 3 * t2)][: k + 1]


def _softplus(z, k):
    # log(1 + e^z) = max(z, 0) + log1p(e^-|z|); `ops.softplus` on torch
    # returns z itself above z = 20, which is off by e^-z there.
    value = ops.relu(z) + ops.log1p(ops.exp(-ops.abs(z)))
    return [value, *_sigmoid_derivatives(z, k - 1)][: k + 1]


def _times_z(g, z):
    # (z g)^(j) = j g^(j-1) + z g^(j)
    return [z * g[0]] + [j * g[j - 1] + z * g[j] for j in range(1, len(g))]


def _silu(z, k):
    return _times_z(_sigmoid_derivatives(z, k), z)


_INV_SQRT2 = 1 / math.sqrt(2)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)


def _gelu(z, k):
    # gelu = z Phi(z); with Phi' = phi and phi' = -z phi:
    # gelu' = Phi + z phi, gelu'' = phi (2 - z^2), gelu''' = phi z (z^2 - 4),
    # gelu'''' = phi (-z^4 + 7 z^2 - 4). Phi(z) = erfc(-z / sqrt 2) / 2, not
    # (1 + erf(z / sqrt 2)) / 2, which cancels for z < 0.
    cdf = 0.5 * ops.erfc(-z * _INV_SQRT2)
    z2 = z * z
    pdf = ops.exp(-0.5 * z2) * _INV_SQRT_2PI
    return [
        z * cdf,
        cdf + z * pdf,
        pdf * (2 - z2),
        pdf * z * (z2 - 4),
        pdf * ((7 - z2) * z2 - 4),
    ][: k + 1]


def _elu(alpha, scale=1.0):
    def derivs(z, k):
        positive = z > 0
        # exp of the negative part only, so the branch not taken is finite
        negative = ops.where(positive, ops.zeros_like(z), z)
        value = ops.where(positive, z, alpha * ops.expm1(negative))
        curve = scale * alpha * ops.exp(negative)
        out = [scale * value, ops.where(positive, ops.zeros_like(z) + scale, curve)]
        out += [ops.where(positive, ops.zeros_like(z), curve)] * (k - 1)
        return out[: k + 1]

    return derivs


def _exponential(z, k):
    e = ops.exp(z)
    return [e] * (k + 1)


def _hard_silu(z, k):
    # z * relu6(z + 3) / 6: quadratic on (-3, 3), 0 below, z above
    inside = (z > -3) & (z < 3)
    slope = ops.where(inside, (2 * z + 3) / 6, ops.cast(z >= 3, z.dtype))
    curvature = ops.cast(inside, z.dtype) / 3
    return [keras.activations.hard_silu(z), slope, curvature, None, None][: k + 1]


def _softsign(z, k):
    # z / (1 + |z|): f^(j) = (-1)^(j+1) j! sign(z)^(j+1) / (1 + |z|)^(j+1)
    # (closed form: TensorFlow cannot differentiate its Softsign twice)
    sign, inverse = ops.sign(z), 1 / (1 + ops.abs(z))
    out, power = [keras.activations.softsign(z)], inverse
    for j in range(1, k + 1):
        power = power * inverse
        odd = sign if j % 2 == 0 else 1.0  # sign^(j+1), 1 at z = 0 for odd j
        out.append((-1) ** (j + 1) * math.factorial(j) * odd * power)
    return out


def _log_sigmoid(z, k):
    # log sigmoid(z) = -softplus(-z): f^(j)(z) = (-1)^(j+1) softplus^(j)(-z)
    return [d if j % 2 else -d for j, d in enumerate(_softplus(-z, k))]


def _tanh_shrink(z, k):
    # z - tanh z; its slope 1 - (1 - tanh^2 z) is tanh^2 z, exactly
    t, *higher = _tanh(z, k)
    return [z - t, t * t, *[-d for d in higher[1:]]][: k + 1]


def _sparse_plus(z, k):
    # 0 below -1, (z + 1)^2 / 4 on (-1, 1), z above
    inside = (z > -1) & (z < 1)
    slope = ops.where(inside, (z + 1) / 2, ops.cast(z >= 1, z.dtype))
    curvature = ops.cast(inside, z.dtype) / 2
    return [keras.activations.sparse_plus(z), slope, curvature, None, None][: k + 1]


def _squareplus(z, k):
    # (z + r) / 2 with r = sqrt(z^2 + 4), as 2 / (r - z) for z < 0 (no
    # cancellation: (r + z)(r - z) = 4). f' = (1 + z / r) / 2 = f / r,
    # f'' = 2 / r^3, f''' = -6 z / r^5, f'''' = 24 (z^2 - 1) / r^7.
    r = ops.sqrt(z * z + 4)
    value = ops.where(z >= 0, (z + r) / 2, 2 / (r - z))
    inverse = 1 / r
    cube = inverse * inverse * inverse
    return [
        value,
        value * inverse,
        2 * cube,
        -6 * z * cube * inverse * inverse,
        24 * (z * z - 1) * cube * cube * inverse,
    ][: k + 1]


def _chain(f, g):
    """(f o g)^(j) from f = [f(g), f'(g), ...] and g = [g, g', ...], up to
    the 4th (Faa di Bruno)."""
    g1 = g[1] if len(g) > 1 else None
    terms = [
        lambda: f[1] * g1,
        lambda: f[2] * g1 * g1 + f[1] * g[2],
        lambda: f[3] * g1 * g1 * g1 + 3 * f[2] * g1 * g[2] + f[1] * g[3],
        lambda: (
            f[4] * g1 * g1 * g1 * g1
            + 6 * f[3] * g1 * g1 * g[2]
            + f[2] * (3 * g[2] * g[2] + 4 * g1 * g[3])
            + f[1] * g[4]
        ),
    ]
    return [f[0]] + [term() for term in terms[: len(g) - 1]]


def _mish(z, k):
    # z tanh(softplus(z)), from the rules above, accurate in saturation; there
    # one term of each chain-rule sum dominates, so nothing cancels
    softplus = _softplus(z, k)
    return _times_z(_chain(_tanh(softplus[0], k), softplus), z)


_SELU_ALPHA = 1.6732632423543772
_SELU_SCALE = 1.0507009873554805

BY_NAME = {
    "linear": _piecewise_linear(lambda z: z, ops.ones_like),
    "relu": _piecewise_linear(ops.relu, lambda z: ops.cast(z > 0, z.dtype)),
    "relu6": _piecewise_linear(
        ops.relu6, lambda z: ops.cast((z > 0) & (z < 6), z.dtype)
    ),
    # not keras.activations.leaky_relu: TensorFlow rounds its slope to float32
    "leaky_relu": _piecewise_linear(
        lambda z: ops.where(z > 0, z, 0.2 * z), lambda z: _where(z > 0, 1.0, 0.2, z)
    ),
    "hard_sigmoid": _piecewise_linear(
        keras.activations.hard_sigmoid,
        lambda z: _where((z > -3) & (z < 3), 1 / 6, 0.0, z),
    ),
    "hard_tanh": _piecewise_linear(
        keras.activations.hard_tanh, lambda z: _where((z > -1) & (z < 1), 1.0, 0.0, z)
    ),
    "tanh": _tanh,
    "sigmoid": _sigmoid_derivatives,
    "softplus": _softplus,
    "silu": _silu,
    "gelu": _gelu,
    "elu": _elu(1.0),
    "selu": _elu(_SELU_ALPHA, _SELU_SCALE),
    "exponential": _exponential,
    "hard_silu": _hard_silu,
    "softsign": _softsign,
    "hard_shrink": _piecewise_linear(
        keras.activations.hard_shrink,
        lambda z: ops.cast(ops.abs(z) > 0.5, z.dtype),
    ),
    "soft_shrink": _piecewise_linear(
        keras.activations.soft_shrink,
        lambda z: ops.cast(ops.abs(z) > 0.5, z.dtype),
    ),
    "sparse_sigmoid": _piecewise_linear(
        keras.activations.sparse_sigmoid,
        lambda z: _where((z > -1) & (z < 1), 0.5, 0.0, z),
    ),
    "celu": _elu(1.0),  # with its default alpha = 1, celu is elu
    "log_sigmoid": _log_sigmoid,
    "sparse_plus": _sparse_plus,
    "squareplus": _squareplus,
    "tanh_shrink": _tanh_shrink,
    "mish": _mish,
}


def _name(fn):
    name = getattr(fn, "__name__", None)
    return name if name and getattr(keras.activations, name, None) is fn else None


def get(activation):
    """The derivative rule `derivs(z, k)` of a built-in activation function
    (recognised by identity, not by name), or None."""
    return BY_NAME.get(_name(activation))
