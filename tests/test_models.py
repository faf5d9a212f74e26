"""DerivativeModel inside Sequential, Functional and subclassed models,
through fit, predict and evaluate."""

import keras
import numpy as np
import pytest
from conftest import to_numpy

from keras_deriv import DerivativeModel, derivatives


def small_net(seed=0):
    return keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(
                16,
                activation="tanh",
                kernel_initializer=keras.initializers.GlorotUniform(seed),
            ),
            keras.layers.Dense(
                1, kernel_initializer=keras.initializers.GlorotUniform(seed + 1)
            ),
        ]
    )


@pytest.fixture
def x():
    return np.random.default_rng(0).uniform(-1, 1, (64, 2)).astype("float32")


def test_sequential_predict_matches_direct_call(x):
    inner = small_net()
    model = keras.Sequential([keras.Input((2,)), DerivativeModel(inner, order=2)])
    predicted = model.predict(x, batch_size=16, verbose=0)
    direct = [to_numpy(t) for t in DerivativeModel(inner, order=2)(x)]
    assert len(predicted) == 3
    for p, d in zip(predicted, direct, strict=True):
        np.testing.assert_allclose(p, d, rtol=1e-5, atol=1e-6)


def test_functional_output_shapes_need_no_trace(x):
    inner = small_net()
    inputs = keras.Input((2,))
    y, dy, hess = DerivativeModel(inner, hessian="full")(inputs)
    assert (y.shape, dy.shape, hess.shape) == ((None, 1), (None, 1, 2), (None, 1, 2, 2))
    _, _, lap = DerivativeModel(inner, hessian="laplacian", wrt=[1])(inputs)
    assert lap.shape == (None, 1)


class HeatResidual(keras.Model):
    """A subclassed model: residual u_t - u_xx of u(x, t)."""

    def __init__(self, net, **kwargs):
        super().__init__(**kwargs)
        self.net = net
        self.derivs = DerivativeModel(net, order=2)

    def call(self, inputs):
        _, du, d2u = self.derivs(inputs)
        return du[:, 0, 1] - d2u[:, 0, 0]


def test_subclassed_model_trains_to_a_heat_equation_solution(x):
    # Target residual r(x, t) = 2x + t: the least-squares fit drives the
    # residual of the wrapped net towards it; checked by the loss dropping.
    model = HeatResidual(small_net())
    target = 2 * x[:, 0] + x[:, 1]
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    first = model.evaluate(x, target, verbose=0)
    model.fit(x, target, epochs=60, batch_size=16, verbose=0)
    last = model.evaluate(x, target, verbose=0)
    assert last < 0.05 * first, (first, last)


def test_evaluate_and_predict_on_dict_outputs(x):
    inner = small_net()
    inputs = keras.Input((2,))
    layer = DerivativeModel(inner, order=1)
    model = keras.Model(
        inputs, dict(zip(layer.output_keys, layer(inputs), strict=True))
    )
    model.compile(loss={"dy": "mse"})
    y_ref, dy_ref = derivatives(inner, x, order=1)
    loss = model.evaluate(x, {"dy": dy_ref}, verbose=0)
    assert loss == pytest.approx(0.0, abs=1e-10)
    out = model.predict(x, verbose=0)
    assert set(out) == {"y", "dy"}
    np.testing.assert_allclose(out["y"], y_ref, rtol=1e-5, atol=1e-6)


def test_a_layer_after_the_derivatives_trains_and_predicts(x):
    # A trainable layer after the derivatives trains through them; predict
    # (torch: under no_grad) gives Dense(dy) with dy of `inner` alone.
    inner = small_net()
    inputs = keras.Input((2,))
    _, dy, _ = DerivativeModel(inner)(inputs)
    out = keras.layers.Dense(1)(keras.layers.Flatten()(dy))
    model = keras.Model(inputs, out)
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    target = np.sum(x, axis=1, keepdims=True)
    first = model.evaluate(x, target, verbose=0)
    model.fit(x, target, epochs=30, batch_size=16, verbose=0)
    assert model.evaluate(x, target, verbose=0) < 0.1 * first
    dense = model.layers[-1]
    kernel, bias = (to_numpy(v) for v in dense.weights)
    dy_ref = derivatives(inner, x, order=1)[1].reshape(len(x), -1)
    predicted = model.predict(x, batch_size=16, verbose=0)
    np.testing.assert_allclose(predicted, dy_ref @ kernel + bias, atol=1e-5)
