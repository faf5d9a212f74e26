"""Derivatives of elementwise activations, up to order 4.

`get(activation, layer)` returns `derivs(z, k) -> [f(z), f'(z), ...,
f^(k)(z)]`, with None for a derivative that is identically zero, or returns
None when the activation has no rule here (the caller then falls back to
the autodiff engine: never a guess). Closed forms for the common ones; the
other built-in elementwise activations are differentiated by the backend's
nested autodiff, which for an elementwise function costs one pass per order
over a column of all the values.
"""

import math

import keras
from keras import ops

from keras_deriv import backend


def _poly(s, coefficients):
    """sum_i coefficients[i] * s**i (Horner)."""
    out = ops.zeros_like(s) + coefficients[-1]
    for c in reversed(coefficients[:-1]):
        out = out * s + c
    return out


# sigma^(k) as polynomials in s = sigma(z): d/dz p(s) = p'(s) * (s - s^2).
_SIGMOID = [
    [0, 1],
    [0, 1, -1],
    [0, 1, -3, 2],
    [0, 1, -7, 12, -6],
    [0, 1, -15, 50, -60, 24],
]


def _sigmoid_derivatives(z, k):
    s = ops.sigmoid(z)
    return [_poly(s, c) for c in _SIGMOID[: k + 1]]


def _piecewise_linear(value, slope):
    def derivs(z, k):  # None: a derivative known to be zero everywhere
        return [value(z), slope(z), *([None] * (k - 1))]

    return derivs


def _where(condition, a, b, like):
    return ops.where(condition, ops.zeros_like(like) + a, ops.zeros_like(like) + b)


def _tanh(z, k):
    t = ops.tanh(z)
    s = 1 - t * t
    return [t, s, -2 * t * s, -2 * s * (1 - 3 * t * t), 8 * t * s * (2 - 3 * t * t)][
        : k + 1
    ]


def _softplus(z, k):
    return [ops.softplus(z), *_sigmoid_derivatives(z, k - 1)]


def _silu(z, k):
    sig = _sigmoid_derivatives(z, k)
    # (z s)^(j) = j s^(j-1) + z s^(j)
    return [z * sig[0]] + [j * sig[j - 1] + z * sig[j] for j in range(1, k + 1)]


def _gelu(z, k):
    phi = ops.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    z2 = z * z
    return [
        keras.activations.gelu(z, approximate=False),
        0.5 * (1 + ops.erf(z / math.sqrt(2))) + z * phi,
        phi * (2 - z2),
        phi * (z2 * z - 4 * z),
        phi * (-z2 * z2 + 7 * z2 - 4),
    ][: k + 1]


def _elu(alpha, scale=1.0):
    def derivs(z, k):
        e = scale * alpha * ops.exp(ops.minimum(z, 0.0))
        positive = z > 0
        out = [
            scale * ops.where(positive, z, alpha * (ops.exp(ops.minimum(z, 0.0)) - 1))
        ]
        out.append(ops.where(positive, ops.zeros_like(z) + scale, e))
        out += [ops.where(positive, ops.zeros_like(z), e)] * (k - 1)
        return out

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


def _by_autodiff(fn):
    def derivs(z, k):
        column = ops.reshape(z, (-1, 1))
        levels = backend.get().nested_derivatives(
            fn, column, k, full_hessian=False, wrt=(0,)
        )
        return [ops.reshape(level, ops.shape(z)) for level in levels]

    return derivs


_SELU_ALPHA = 1.6732632423543772
_SELU_SCALE = 1.0507009873554805

BY_NAME = {
    "linear": _piecewise_linear(lambda z: z, ops.ones_like),
    "relu": _piecewise_linear(ops.relu, lambda z: ops.cast(z > 0, z.dtype)),
    "relu6": _piecewise_linear(
        ops.relu6, lambda z: ops.cast((z > 0) & (z < 6), z.dtype)
    ),
    "leaky_relu": _piecewise_linear(
        keras.activations.leaky_relu, lambda z: _where(z > 0, 1.0, 0.2, z)
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
}
BY_NAME.update(
    (name, _by_autodiff(getattr(keras.activations, name)))
    for name in [
        "celu",
        "log_sigmoid",
        "mish",
        "sparse_plus",
        "squareplus",
        "tanh_shrink",
    ]
)


def _name(fn):
    name = getattr(fn, "__name__", None)
    return name if name and getattr(keras.activations, name, None) is fn else None


def _relu_layer(layer):
    slope = float(layer.negative_slope)
    top = layer.max_value
    threshold = float(layer.threshold)

    def slope_fn(z):
        inside = z > threshold
        if top is not None:
            inside = inside & (z < float(top))
            below = z <= threshold
            return _where(inside, 1.0, 0.0, z) + _where(below, slope, 0.0, z)
        return _where(inside, 1.0, slope, z)

    return _piecewise_linear(layer, slope_fn)


def get(activation, layer=None):
    """The derivative rule of `activation` (a function), or of an activation
    layer (`ReLU`, `LeakyReLU`, `ELU`) when `activation` is None."""
    kind = type(layer).__name__ if layer is not None else None
    if activation is None:
        if kind == "ReLU":
            return _relu_layer(layer)
        if kind == "LeakyReLU":
            slope = float(layer.negative_slope)
            return _piecewise_linear(layer, lambda z: _where(z > 0, 1.0, slope, z))
        if kind == "ELU":
            return _elu(float(layer.alpha))
        if kind == "Activation":
            return None
        return BY_NAME["linear"]
    return BY_NAME.get(_name(activation))
