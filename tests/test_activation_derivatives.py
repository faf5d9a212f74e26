"""The elementwise activation rules against an independent reference: each
activation's definition in mpmath, differentiated numerically by
`mpmath.diffs` at raised precision, on a grid over [-30, 30] that reaches
well into saturation."""

import functools

import keras
import numpy as np
import pytest

from keras_deriv.engines.activation_derivatives import BY_NAME

mpmath = pytest.importorskip("mpmath")

ORDER = 4
GRID = np.unique(
    np.concatenate([np.linspace(-30, 30, 201), [-1, -0.5, -1e-4, 1e-4, 0.5, 1]])
).astype("float32")  # float32 values, exact in float64 too: one reference


class _Complement:
    """x - f(x), whose derivatives are taken from f's: `mpmath.diffs` is
    accurate relative to the size of the function it differentiates, and
    gelu's higher derivatives at z = 30 are 1e-190 of gelu itself."""

    def __init__(self, f):
        self.f = f

    def diffs(self, x):
        d = list(mpmath.diffs(self.f, x, ORDER))
        return [x - d[0], 1 - d[1], *(-v for v in d[2:])]


class _Polynomial:
    """c[0] + c[1] x + ..., differentiated exactly: numerical differentiation
    leaves noise where a derivative is zero (1e-86 for x / 5)."""

    def __init__(self, *c):
        self.c = [mpmath.mpf(v) for v in c]

    def diffs(self, x):
        c, out = self.c, []
        for _ in range(ORDER + 1):
            out.append(mpmath.polyval(c[::-1], x) if c else mpmath.mpf(0))
            c = [i * v for i, v in enumerate(c)][1:]
        return out


def _sigmoid(x):
    return 1 / (1 + mpmath.exp(-x))


_INF = mpmath.inf
_SELU_ALPHA = mpmath.mpf("1.6732632423543772848170429916717")
_SELU_SCALE = mpmath.mpf("1.0507009873554804934193349852946")
_ZERO, _ONE, _X = _Polynomial(), _Polynomial(1), _Polynomial(0, 1)

# name -> pieces (lo, hi, f): the activation is f on [lo, hi]. At a boundary
# shared by two pieces, an order whose one-sided derivatives differ is not
# checked (a kink: the rule may take either side).
DEFINITIONS = {
    "linear": [(-_INF, _INF, _X)],
    "relu": [(-_INF, 0, _ZERO), (0, _INF, _X)],
    "relu6": [(-_INF, 0, _ZERO), (0, 6, _X), (6, _INF, _Polynomial(6))],
    "leaky_relu": [(-_INF, 0, _Polynomial(0, "0.2")), (0, _INF, _X)],
    "hard_sigmoid": [
        (-_INF, -3, _ZERO),
        (-3, 3, _Polynomial(mpmath.mpf(1) / 2, mpmath.mpf(1) / 6)),
        (3, _INF, _ONE),
    ],
    "hard_tanh": [(-_INF, -1, _Polynomial(-1)), (-1, 1, _X), (1, _INF, _ONE)],
    "tanh": [(-_INF, _INF, mpmath.tanh)],
    "sigmoid": [(-_INF, _INF, _sigmoid)],
    "softplus": [(-_INF, _INF, lambda x: mpmath.log1p(mpmath.exp(x)))],
    "silu": [(-_INF, _INF, lambda x: x * _sigmoid(x))],
    # x Phi(x), for x > 0 as x - x Phi(-x)
    "gelu": [
        (-_INF, 0, lambda x: x * mpmath.ncdf(x)),
        (0, _INF, _Complement(lambda x: x * mpmath.ncdf(-x))),
    ],
    "elu": [(-_INF, 0, mpmath.expm1), (0, _INF, _X)],
    "selu": [
        (-_INF, 0, lambda x: _SELU_SCALE * _SELU_ALPHA * mpmath.expm1(x)),
        (0, _INF, _Polynomial(0, _SELU_SCALE)),
    ],
    "exponential": [(-_INF, _INF, mpmath.exp)],
    "hard_silu": [
        (-_INF, -3, _ZERO),
        (-3, 3, _Polynomial(0, mpmath.mpf(1) / 2, mpmath.mpf(1) / 6)),
        (3, _INF, _X),
    ],
    "softsign": [(-_INF, 0, lambda x: x / (1 - x)), (0, _INF, lambda x: x / (1 + x))],
    "hard_shrink": [(-_INF, -0.5, _X), (-0.5, 0.5, _ZERO), (0.5, _INF, _X)],
    "soft_shrink": [
        (-_INF, -0.5, _Polynomial("0.5", 1)),
        (-0.5, 0.5, _ZERO),
        (0.5, _INF, _Polynomial("-0.5", 1)),
    ],
    "sparse_sigmoid": [
        (-_INF, -1, _ZERO),
        (-1, 1, _Polynomial("0.5", "0.5")),
        (1, _INF, _ONE),
    ],
    "celu": [(-_INF, 0, mpmath.expm1), (0, _INF, _X)],
    "log_sigmoid": [(-_INF, _INF, lambda x: -mpmath.log1p(mpmath.exp(-x)))],
    "sparse_plus": [
        (-_INF, -1, _ZERO),
        (-1, 1, _Polynomial("0.25", "0.5", "0.25")),
        (1, _INF, _X),
    ],
    "squareplus": [(-_INF, _INF, lambda x: (x + mpmath.sqrt(x * x + 4)) / 2)],
    "tanh_shrink": [(-_INF, _INF, lambda x: x - mpmath.tanh(x))],
    "mish": [(-_INF, _INF, lambda x: x * mpmath.tanh(mpmath.log1p(mpmath.exp(x))))],
}


def _diffs(f, x):
    if hasattr(f, "diffs"):
        return f.diffs(x)
    return list(mpmath.diffs(f, x, ORDER))


def _reference_at(name, z):
    x = mpmath.mpf(float(z))
    sides = [_diffs(f, x) for lo, hi, f in DEFINITIONS[name] if lo <= x <= hi]
    out = []
    for values in zip(*sides, strict=True):
        same = all(abs(v - values[0]) <= 1e-25 * (1 + abs(values[0])) for v in values)
        out.append(float(values[0]) if same else np.nan)
    return out


@functools.cache
def reference(name):
    """(len(GRID), ORDER + 1): f, f', ..., f'''' on GRID; NaN at kinks."""
    with mpmath.workdps(30):
        return np.array([_reference_at(name, z) for z in GRID])


# err <= rtol |ref| + atol(z). float32: 1e-5 relative is some 150 ulps
# (2^-24 = 6e-8), room for the few roundings of each closed form and for the
# conditioning of exp and erfc at large |z| (rounding z^2 / 2 and z / sqrt 2
# moves gelu's phi and Phi by up to z^2 2^-24 relative: 1e-5 at |z| = 13).
# Every derivative crosses zero somewhere in |z| < 6 (silu'''' near z = -4.4),
# where relative error means nothing: there, where the values are O(1), an
# absolute 1e-6. Beyond, only underflow: values under 1e-30 (gelu's Gaussian
# tail past |z| = 11.5, near float32's smallest normal 1e-38 by |z| = 13).
# float64: the same with 1e-12, 1e-14 and 1e-300. Saturation is where the old
# polynomials in sigmoid(z) failed: sigma'''' was 46% off at z = 12 in float32.
TOLERANCES = {
    "float32": (1e-5, 1e-6, 1e-30),
    "float64": (1e-12, 1e-14, 1e-300),
}


def _check(name, dtype):
    rtol, atol_center, atol_tail = TOLERANCES[dtype]
    z = keras.ops.convert_to_tensor(GRID.astype(dtype), dtype=dtype)
    got = BY_NAME[name](z, ORDER)
    assert len(got) == ORDER + 1
    ref = reference(name)
    atol = np.where(np.abs(GRID) < 6, atol_center, atol_tail)
    for k, value in enumerate(got):
        if value is None:  # a derivative that is zero everywhere
            value = np.zeros(GRID.shape)
        else:
            assert keras.backend.standardize_dtype(value.dtype) == dtype, (name, k)
            assert tuple(value.shape) == GRID.shape, (name, k)
            value = np.asarray(keras.ops.convert_to_numpy(value), dtype="float64")
        r, checked = ref[:, k], np.isfinite(ref[:, k])
        err = np.abs(value - r)
        bad = checked & ~(err <= rtol * np.abs(r) + atol)
        assert not bad.any(), (
            f"{name}^({k}) in {dtype} at z = {GRID[bad][:5]}: "
            f"{value[bad][:5]} vs {r[bad][:5]}"
        )


@pytest.fixture(autouse=True)
def _fresh_session():
    """No model is built here: skip conftest's per-test `clear_session()`,
    which would take most of this file's time."""
    yield


def test_every_rule_has_a_reference():
    assert set(BY_NAME) == set(DEFINITIONS)


@pytest.mark.parametrize("name", sorted(DEFINITIONS))
def test_float32(name):
    _check(name, "float32")


@pytest.mark.parametrize("name", sorted(DEFINITIONS))
def test_float64(name):
    """float64 in, float64 out, to float64 accuracy: on JAX (with
    JAX_ENABLE_X64) and torch too, where some Keras ops compute float64
    operands in float32."""
    probe = keras.ops.convert_to_tensor(np.zeros(1), dtype="float64")
    if keras.backend.standardize_dtype(probe.dtype) != "float64":
        pytest.skip("this backend has no float64 (JAX without JAX_ENABLE_X64)")
    _check(name, "float64")


@pytest.mark.parametrize("name", sorted(DEFINITIONS))
def test_orders(name):
    z = keras.ops.convert_to_tensor(GRID[::20])
    for k in range(ORDER + 1):
        assert len(BY_NAME[name](z, k)) == k + 1
