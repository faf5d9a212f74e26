"""Derivatives against closed forms and float64 finite differences.

The oracles are computed in float64 NumPy from the network's weights, not
through Keras. Tolerances: `assert_close` in conftest (float64 on
TensorFlow, float32 rounding on JAX and torch, where Keras computes float64
models in float32).
"""

import sys

import keras
import numpy as np
import pytest
from conftest import assert_close, f64, mlp, numpy_mlp, to_numpy

from keras_deriv import DerivativeModel


def tanh_derivative(z, n):
    """n-th derivative of tanh, closed form (t = tanh z, s = 1 - t²)."""
    t = np.tanh(z)
    s = 1 - t**2
    return [t, s, -2 * t * s, -2 * s * (1 - 3 * t**2), 8 * t * s * (2 - 3 * t**2)][n]


def closed_form(net, x):
    """For y = tanh(x W1 + b1) W2 + b2: y, the pure partials of orders 1-4,
    d^n y_j / dx_i^n = sum_k W2[k, j] tanh^(n)(z_k) W1[i, k]^n, and the full
    Hessian, in float64 NumPy."""
    (w1, b1), (w2, b2) = [[to_numpy(v) for v in lay.weights] for lay in net.layers]
    z = x @ w1 + b1
    y = np.tanh(z) @ w2 + b2
    pure = [
        np.einsum("bk,kj,ik->bji", tanh_derivative(z, n), w2, w1**n)
        for n in range(1, 5)
    ]
    full = np.einsum("bk,kj,ik,lk->bjil", tanh_derivative(z, 2), w2, w1, w1)
    return y, pure, full


@pytest.fixture
def net():
    return mlp(3, [7], 2, seed=3)


@pytest.fixture
def x():
    return np.random.default_rng(1).uniform(-1.5, 1.5, (11, 3))


@pytest.fixture(autouse=True, params=["autodiff", "taylor"])
def engine(request, monkeypatch):
    """Every test here runs with both engines."""
    monkeypatch.setattr(sys.modules[__name__], "ENGINE", request.param)


ENGINE = "autodiff"


def outputs(net, x, **kwargs):
    layer = DerivativeModel(net, dtype="float64", method=ENGINE, **kwargs)
    return [to_numpy(t) for t in layer(f64(x))]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_pure_partials_match_closed_form(net, x, order):
    y_ref, pure_ref, _ = closed_form(net, x)
    got = outputs(net, x, order=order)
    assert len(got) == order + 1
    assert_close(got[0], y_ref, 1e-12, 1e-6)
    for n in range(1, order + 1):
        assert got[n].shape == (11, 2, 3)
        assert_close(got[n], pure_ref[n - 1], 1e-10, 1e-5, f"order {n}")


def test_full_hessian_and_laplacian_match_closed_form(net, x):
    _, pure_ref, full_ref = closed_form(net, x)
    _, dy, hess = outputs(net, x, hessian="full")
    _, _, lap = outputs(net, x, hessian="laplacian")
    assert hess.shape == (11, 2, 3, 3) and lap.shape == (11, 2)
    assert_close(dy, pure_ref[0], 1e-12, 1e-6)
    assert_close(hess, full_ref, 1e-10, 1e-5)
    assert_close(lap, np.trace(full_ref, axis1=2, axis2=3), 1e-10, 1e-5)


def test_hessian_modes_agree(x):
    net = mlp(3, [16, 16], 2, activation="softplus", seed=5)
    _, _, full = outputs(net, x, hessian="full")
    _, _, diag = outputs(net, x, hessian="diagonal")
    _, _, lap = outputs(net, x, hessian="laplacian")
    assert np.abs(full).max() > 1e-2  # a curved net: not a check of 0 == 0
    # Each mode is computed separately; the same operations in another order.
    assert_close(full, np.swapaxes(full, -1, -2), 1e-12, 1e-6)
    assert_close(diag, np.diagonal(full, axis1=2, axis2=3), 1e-12, 1e-6)
    assert_close(lap, np.trace(full, axis1=2, axis2=3), 1e-12, 1e-6)


def central_differences(f, x, i, h):
    """First to fourth derivative along feature i, O(h²) central stencils."""
    e = np.zeros(x.shape[1])
    e[i] = h
    p = {k: f(x + k * e) for k in (-2, -1, 0, 1, 2)}
    return [
        (p[1] - p[-1]) / (2 * h),
        (p[1] - 2 * p[0] + p[-1]) / h**2,
        (p[2] - 2 * p[1] + 2 * p[-1] - p[-2]) / (2 * h**3),
        (p[2] - 4 * p[1] + 6 * p[0] - 4 * p[-1] + p[-2]) / h**4,
    ]


# Step sizes balance truncation (h² |f^(n+2)|) against rounding
# (1e-16 |f| / h^n) in float64; `fd_tol` is a few times the larger of them.
STENCILS = [(1, 1e-5, 1e-8), (2, 1e-4, 1e-6), (3, 2e-3, 1e-4), (4, 1e-2, 3e-3)]


@pytest.mark.parametrize("activation", ["tanh", "softplus", "sigmoid", "silu", "gelu"])
def test_matches_finite_differences(x, activation):
    net = mlp(3, [12, 12], 2, activation=activation, seed=7)
    got = outputs(net, x, order=4)
    forward = numpy_mlp(net)
    # Keras's gelu rounds its constant 1/sqrt(2) to float32: ~1e-8 relative.
    floor = 1e-7 if activation == "gelu" else 0.0
    assert_close(got[0], forward(x), max(1e-12, floor), 1e-6)
    for i in range(3):
        for n, h, fd_tol in STENCILS:
            fds = central_differences(forward, x, i, h)
            assert_close(
                got[n][..., i],
                fds[n - 1],
                max(fd_tol, floor),
                max(fd_tol, 1e-4),
                f"order {n}, feature {i}",
            )


def test_multidimensional_outputs_keep_their_shape():
    inner = keras.Sequential(
        [
            keras.Input((2,), dtype="float64"),
            keras.layers.Dense(6, activation="tanh", dtype="float64"),
            keras.layers.Reshape((2, 3), dtype="float64"),
        ]
    )
    x = np.random.default_rng(0).normal(size=(4, 2))
    y, dy, d2y = outputs(inner, x)
    assert (
        y.shape == (4, 2, 3) and dy.shape == (4, 2, 3, 2) and d2y.shape == (4, 2, 3, 2)
    )
    flat = keras.Sequential(
        [
            keras.Input((2,), dtype="float64"),
            inner,
            keras.layers.Flatten(dtype="float64"),
        ]
    )
    _, dy_flat, d2y_flat = outputs(flat, x)
    assert_close(dy.reshape(4, 6, 2), dy_flat, 1e-14, 1e-6)
    assert_close(d2y.reshape(4, 6, 2), d2y_flat, 1e-14, 1e-6)
    assert np.abs(d2y).max() > 1e-2
    _, _, full = outputs(inner, x, hessian="full")
    assert full.shape == (4, 2, 3, 2, 2)
    assert_close(np.diagonal(full, axis1=-2, axis2=-1), d2y, 1e-14, 1e-6)


@pytest.mark.parametrize("wrt", [[0], [2], [2, 0], [1, 2]])
def test_wrt_selects_features(net, x, wrt):
    full_outputs = outputs(net, x, order=3)
    sub_outputs = outputs(net, x, order=3, wrt=wrt)
    for full, sub in zip(full_outputs[1:], sub_outputs[1:], strict=True):
        assert sub.shape == (11, 2, len(wrt))
        assert_close(sub, full[..., wrt], 1e-14, 1e-6)
    _, _, hess = outputs(net, x, hessian="full")
    _, _, hess_w = outputs(net, x, hessian="full", wrt=wrt)
    assert_close(hess_w, hess[..., wrt, :][..., wrt], 1e-14, 1e-6)
    _, _, lap_w = outputs(net, x, hessian="laplacian", wrt=wrt)
    assert_close(lap_w, full_outputs[2][..., wrt].sum(-1), 1e-14, 1e-6)
