"""Smoothed derivatives (`smoothing=σ`): the derivatives of the network
smoothed by a Gaussian of width σ along each differentiated feature.

References are independent of the package: closed forms for polynomials
(Gauss–Hermite quadrature is exact for them) and for one-hidden-layer ReLU
networks (whose smoothed derivatives are sums of Gaussians and their
integrals over the kinks), and a NumPy float64 quadrature of the value
form σ⁻ᵏ E[f(x + σε) Heₖ(ε)], a different formula from the package's.
"""

import io

import keras
import numpy as np
import pytest
from conftest import (
    FLOAT64,
    assert_close,
    assert_gradients_match_differences,
    f64,
    mlp,
    numpy_mlp,
    relu_layer_closed_form,
    to_numpy,
    weight_gradients,
)

from keras_deriv import DerivativeLogger, DerivativeModel, derivatives

ENGINES = ("autodiff", "taylor")


class Cubic(keras.layers.Layer):
    """f(x) = (a x + b)³ per feature, summed."""

    def __init__(self, a, b, **kwargs):
        super().__init__(**kwargs)
        self.a, self.b = a, b

    def call(self, x):
        return keras.ops.sum((self.a * x + self.b) ** 3, axis=-1, keepdims=True)


def cubic_model(a, b, d=1, dtype="float64"):
    x = keras.Input((d,), dtype=dtype)
    return keras.Model(x, Cubic(a, b, dtype=dtype)(x))


@pytest.mark.parametrize("sigma", [0.05, 0.3, 1.0])
def test_a_cubic_is_smoothed_exactly(sigma):
    # f = (ax + b)³: f_σ' = f' + 3a³σ², f_σ'' = f'', f_σ''' = f''' = 6a³,
    # f_σ'''' = 0, all exactly (quadrature of polynomials).
    a, b = 1.3, -0.4
    x = np.linspace(-1, 1, 9).reshape(-1, 1)
    y, d1, d2, d3, d4 = (
        to_numpy(t).reshape(len(x))
        for t in DerivativeModel(cubic_model(a, b), order=4, smoothing=sigma)(f64(x))
    )
    u = (a * x + b)[:, 0]
    # Rounding: a custom layer is smoothed by the value form, whose k-th
    # derivative sums values of f (up to ~(a·15σ)³ at the outer nodes)
    # times weights of order 1/σᵏ: the unit (float64 or float32) times
    # that, with a margin.
    tol = 1e-12 if FLOAT64 else 2e-4
    assert_close(y, u**3, 1e-12, 1e-5)  # y is exact
    assert_close(d1, 3 * a * u**2 + 3 * a**3 * sigma**2, 1e-12 / sigma, tol)
    assert_close(d2, 6 * a * a * u, 1e-12 / sigma**2, tol)
    assert_close(d3, np.full_like(u, 6 * a**3), 1e-12 / sigma**3, tol / sigma)
    assert_close(d4, np.zeros_like(u), 1e-12 / sigma**4, tol / sigma**2)
    if FLOAT64 or sigma >= 0.3:  # the σ² term is larger than the tolerance
        assert abs(3 * a**3 * sigma**2) > 10 * tol * np.abs(d1).max()


def test_smoothing_none_is_the_exact_derivative():
    a, b = 1.3, -0.4
    x = np.linspace(-1, 1, 9).reshape(-1, 1)
    _, d1, d2 = DerivativeModel(cubic_model(a, b), order=2, smoothing=None)(f64(x))
    u = a * x + b
    assert_close(to_numpy(d1)[:, 0, 0], 3 * a * u[:, 0] ** 2, 1e-12, 1e-5)
    assert_close(to_numpy(d2)[:, 0, 0], 6 * a * a * u[:, 0], 1e-12, 1e-5)


def test_mixed_partials_and_laplacian_of_a_polynomial():
    # f = x0² x1 + x1³: smoothing along x0 leaves ∂²/∂x0² = 2 x1 exact,
    # along x1 ∂²/∂x1² = 6 x1; ∂0 f = 2 x0 x1 smoothed along x1 gives
    # ∂²/∂x0∂x1 = 2 x0 exactly (and symmetrically); ∂1 f = x0² + 3 x1²
    # smoothed along x1 gains 3σ².
    class Poly(keras.layers.Layer):
        def call(self, x):
            return x[:, :1] ** 2 * x[:, 1:] + x[:, 1:] ** 3

    inputs = keras.Input((2,), dtype="float64")
    net = keras.Model(inputs, Poly(dtype="float64")(inputs))
    p = np.random.default_rng(0).normal(size=(6, 2))
    x0, x1, s = p[:, 0], p[:, 1], 0.3
    hessian = np.stack(
        [np.stack([2 * x1, 2 * x0], -1), np.stack([2 * x0, 6 * x1], -1)], -2
    )
    expected = {
        "full": hessian,
        "diagonal": np.stack([2 * x1, 6 * x1], -1),
        "laplacian": 8 * x1,
    }
    for mode, want in expected.items():
        _, dy, d2y = DerivativeModel(net, hessian=mode, smoothing=s)(f64(p))
        assert_close(to_numpy(d2y)[:, 0], want, 1e-11, 1e-4, mode)
        gradient = np.stack([2 * x0 * x1, x0**2 + 3 * x1**2 + 3 * s**2], -1)
        assert_close(to_numpy(dy)[:, 0], gradient, 1e-11, 1e-4, mode)


def value_form_reference(forward, x, sigma, order, feature, nodes=160):
    """σ⁻ᵏ E[f(x + σε e_i) Heₖ(ε)] by NumPy float64 Gauss–Hermite."""
    t, w = np.polynomial.hermite_e.hermegauss(nodes)
    w = w / w.sum()
    he = np.polynomial.hermite_e.hermeval(t, [0] * order + [1])
    shifted = np.repeat(x[:, None, :], nodes, axis=1).astype("float64")
    shifted[:, :, feature] += sigma * t
    values = forward(shifted.reshape(-1, x.shape[1])).reshape(len(x), nodes, -1)
    return np.einsum("bkm,k->bm", values, w * he) / sigma**order


@pytest.mark.parametrize("method", ENGINES)
@pytest.mark.parametrize("hessian", ["diagonal", "laplacian"])
def test_a_tanh_network_against_a_numpy_quadrature(method, hessian):
    net = mlp(2, (16, 16), 1, activation="tanh", seed=3)
    forward = numpy_mlp(net)
    x = np.random.default_rng(1).uniform(-1, 1, size=(5, 2))
    sigma = 0.2
    layer = DerivativeModel(
        net,
        order=3 if hessian == "diagonal" else 2,
        hessian=hessian,
        smoothing=sigma,
        method=method,
    )
    out = [to_numpy(t) for t in layer(f64(x))]
    for level in range(1, len(out)):
        refs = [value_form_reference(forward, x, sigma, level, i)[:, 0] for i in (0, 1)]
        ref = np.stack(refs, -1)
        got = out[level][:, 0]
        if level == 2 and hessian == "laplacian":
            ref = ref.sum(-1)
        # float32: ~1e-7 per operation, amplified by σ^-(k-1) and the
        # node range
        assert_close(got, ref, 1e-8, 3e-4 * 5 ** (level - 1), f"order {level}")
    assert np.abs(out[2]).max() > 1e-2  # curved: not a check of 0 == 0


@pytest.fixture(scope="module")
def asker_nets():
    """The original question's network trained as asked, on two seeds."""
    from keras_deriv.demo import RECIPES, train

    x = np.linspace(0, 1, 1000, dtype="float32").reshape(-1, 1)
    nets = []
    for seed in (0, 1):
        keras.utils.set_random_seed(seed)
        nets.append(train(RECIPES[0], x, io.StringIO()))
    return nets


def test_the_askers_relu_net_has_a_smoothed_curvature_near_two(asker_nets):
    grid = np.linspace(0.15, 0.85, 141, dtype="float32").reshape(-1, 1)
    for net in asker_nets:
        y, dy, d2y = (v.ravel() for v in derivatives(net, grid))
        assert np.all(d2y == 0)  # the exact answer: piecewise linear
        _, dy_s, d2y_s, d3y_s = (
            v.ravel() for v in derivatives(net, grid, order=3, smoothing=0.05)
        )
        # The band: the truth is 2; a value-only fit in 10 epochs gets the
        # function's curvature to within ~10 % on average (measured 1.84
        # and 1.82 on these seeds).
        assert 1.6 < d2y_s.mean() < 2.2, d2y_s.mean()
        ref_dy, ref_d2y, ref_d3y = relu_layer_closed_form(net, grid, 0.05)
        # 64 quadrature nodes over the kinks of f (the value form): measured
        # 0.1-0.2 % of the largest value pointwise for d2y, more for d3y
        scale = np.abs(ref_d2y).max()
        assert np.abs(d2y_s - ref_d2y).max() < 0.01 * scale
        assert np.abs(dy_s - ref_dy).max() < 0.005 * np.abs(ref_dy).max()
        assert np.abs(d3y_s - ref_d3y).max() < 0.03 * np.abs(ref_d3y).max()


@pytest.mark.parametrize(
    "bad, error",
    [
        (0, ValueError),
        (-0.1, ValueError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        ("0.1", TypeError),
        (True, TypeError),
        ([0.1], TypeError),
    ],
)
def test_bad_smoothing_is_a_clear_error(bad, error):
    net = mlp(1, (4,), 1)
    with pytest.raises(error, match="smoothing"):
        DerivativeModel(net, smoothing=bad)
    with pytest.raises(error, match="smoothing"):
        derivatives(net, np.zeros((2, 1)), smoothing=bad)
    with pytest.raises(error, match="smoothing"):
        DerivativeLogger(np.zeros((2, 1)), smoothing=bad)


def test_outputs_say_they_are_smoothed():
    layer = DerivativeModel(mlp(2, (4,), 1), order=3, smoothing=0.1)
    assert layer.output_keys == ("y", "dy_smoothed", "d2y_smoothed", "d3y_smoothed")
    assert DerivativeModel(mlp(2, (4,), 1)).output_keys == ("y", "dy", "d2y")


def test_random_masks_in_training_are_refused():
    net = keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(1),
        ]
    )
    layer = DerivativeModel(net, smoothing=0.1)
    with pytest.raises(ValueError, match="shifted copies"):
        layer(np.zeros((2, 1), "float32"), training=True)
    layer(np.zeros((2, 1), "float32"), training=False)


@pytest.mark.parametrize("method", ENGINES)
def test_weight_gradients_of_a_loss_on_a_smoothed_output(method):
    # d mean(d2y_smoothed²)/dW by reverse mode against central differences
    # of the same loss in the weights.
    net = mlp(1, (8,), 1, activation="tanh", seed=5)
    x = f64(np.linspace(-0.5, 0.5, 4).reshape(-1, 1))
    layer = DerivativeModel(net, smoothing=0.2, method=method)
    weights = net.trainable_variables
    loss, grads = weight_gradients(layer, x, weights, level=2)
    assert loss > 1e-4
    # float32 central differences: ~1e-7·loss/eps rounding
    assert_gradients_match_differences(
        lambda: np.mean(to_numpy(layer(x)[2]) ** 2),
        weights,
        grads,
        eps=1e-5 if FLOAT64 else 3e-3,
        tol=1e-6 if FLOAT64 else 3e-2,
    )


def test_a_smoothed_output_trains_and_saves(tmp_path):
    net = mlp(1, (16,), 1, activation="tanh", dtype="float32")
    inputs = keras.Input((1,))
    layer = DerivativeModel(net, smoothing=0.05, name="smoothed")
    model = keras.Model(
        inputs, dict(zip(layer.output_keys, layer(inputs), strict=True))
    )
    x = np.linspace(0, 1, 64, dtype="float32").reshape(-1, 1)
    model.compile(keras.optimizers.Adam(1e-2), loss={"d2y_smoothed": "mse"})
    targets = {"d2y_smoothed": np.full((64, 1, 1), 2.0, "float32")}
    history = model.fit(x, targets, epochs=30, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < 0.2 * history.history["loss"][0]
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_layer("smoothed").smoothing == 0.05
    before, after = model.predict(x, verbose=0), loaded.predict(x, verbose=0)
    for key in before:
        np.testing.assert_allclose(after[key], before[key], rtol=1e-6, atol=1e-7)


def test_a_loss_on_a_smoothed_relu_curvature_moves_the_kinks():
    # A ReLU net's first derivative is piecewise constant in its biases: a
    # smoothed derivative built from it would give the kinks no gradient.
    # Built from the values, it does; checked against central differences
    # of the same loss in the first layer's biases (the loss is piecewise
    # smooth in them: small steps stay on one piece).
    net = keras.Sequential(
        [
            keras.Input((1,), dtype="float64"),
            keras.layers.Dense(
                8,
                activation="relu",
                dtype="float64",
                kernel_initializer=keras.initializers.RandomNormal(stddev=2.0, seed=1),
                bias_initializer=keras.initializers.RandomUniform(-1, 1, seed=2),
            ),
            keras.layers.Dense(1, dtype="float64"),
        ]
    )
    x = f64(np.linspace(-0.5, 0.5, 5).reshape(-1, 1))
    layer = DerivativeModel(net, smoothing=0.2)
    weights = net.trainable_variables
    loss, grads = weight_gradients(layer, x, weights, level=2)
    bias, bias_grad = weights[1], grads[1]
    assert np.abs(bias_grad).max() > 1e-2  # the kinks get a gradient
    # float32: a larger step against rounding, small against the pieces
    # (a node of one of the 5 points crosses a kink every ~0.02 in a bias)
    eps = 1e-6 if FLOAT64 else 1e-4
    assert_gradients_match_differences(
        lambda: np.mean(to_numpy(layer(x)[2]) ** 2),
        weights,
        grads,
        eps=eps,
        tol=1e-5 if FLOAT64 else 2e-2,
        entries=[(1, (unit,)) for unit in range(bias.shape[0])],
    )


@pytest.mark.parametrize("method", ENGINES)
def test_several_outputs_a_feature_subset_and_order_four(method):
    net = mlp(3, (12,), 2, activation="tanh", seed=4)
    forward = numpy_mlp(net)
    x = np.random.default_rng(2).uniform(-1, 1, size=(4, 3))
    sigma = 0.3
    out = [
        to_numpy(t)
        for t in DerivativeModel(
            net, order=4, wrt=[2, 0], smoothing=sigma, method=method
        )(f64(x))
    ]
    for level in range(1, 5):
        ref = np.stack(
            [value_form_reference(forward, x, sigma, level, i) for i in (2, 0)], -1
        )
        assert out[level].shape == (4, 2, 2)
        assert_close(out[level], ref, 1e-7, 3e-4 * 4 ** (level - 1), f"order {level}")
    full = DerivativeModel(net, hessian="full", wrt=[2, 0], smoothing=sigma)(f64(x))[2]
    full = to_numpy(full)
    assert full.shape == (4, 2, 2, 2)
    np.testing.assert_allclose(full, np.swapaxes(full, -1, -2))  # symmetrized
    assert_close(np.diagonal(full, axis1=-2, axis2=-1), out[2], 1e-7, 1e-4)


def test_small_sigma_in_float32_warns_about_rounding():
    from keras_deriv import PrecisionWarning

    net = mlp(1, (8,), 1, dtype="float32")
    x = np.linspace(0, 1, 4, dtype="float32").reshape(-1, 1)
    with pytest.warns(PrecisionWarning, match="amplifies float32 rounding"):
        DerivativeModel(net, order=4, smoothing=0.01)(x)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", PrecisionWarning)
        DerivativeModel(net, order=2, smoothing=0.05)(x)
