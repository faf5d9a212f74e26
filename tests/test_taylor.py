"""The Taylor engine agrees with the autodiff engine, and falls back or
refuses clearly where it has no rule."""

import keras
import numpy as np
import pytest
from conftest import BACKEND, assert_close, to_numpy

from keras_deriv import DerivativeModel

ACTIVATIONS = [
    "tanh",
    "sigmoid",
    "softplus",
    "silu",
    "gelu",
    "elu",
    "selu",
    "relu",
    "leaky_relu",
    "relu6",
    "exponential",
    "linear",
]
if BACKEND != "torch":  # torch's autodiff, the reference, cannot do these twice
    ACTIVATIONS += ["hard_sigmoid", "hard_tanh"]


def random_net(seed, d, out):
    rng = np.random.default_rng(seed)
    layers = [keras.Input((d,))]
    for _ in range(rng.integers(1, 4)):
        act = ACTIVATIONS[rng.integers(len(ACTIVATIONS))]
        layers.append(
            keras.layers.Dense(
                int(rng.integers(3, 12)),
                activation=act,
                bias_initializer="glorot_uniform",
            )
        )
    layers.append(keras.layers.Dense(out))
    return keras.Sequential(layers)


def both(net, x, **kwargs):
    auto = [to_numpy(t) for t in DerivativeModel(net, method="autodiff", **kwargs)(x)]
    fast = [to_numpy(t) for t in DerivativeModel(net, method="taylor", **kwargs)(x)]
    return auto, fast


@pytest.mark.parametrize("seed", range(8))
def test_random_architectures_agree_with_autodiff(seed):
    rng = np.random.default_rng(100 + seed)
    d, out = int(rng.integers(1, 4)), int(rng.integers(1, 3))
    net = random_net(seed, d, out)
    x = rng.uniform(-2, 2, (9, d)).astype("float32")
    order = int(rng.integers(1, 5))
    wrt = sorted(
        rng.choice(d, size=int(rng.integers(1, d + 1)), replace=False).tolist()
    )
    cases = [dict(order=order), dict(order=order, wrt=wrt)]
    if order <= 2:
        cases.append(dict(order=2, hessian="laplacian"))
    for kwargs in cases:
        auto, fast = both(net, x, **kwargs)
        for a, f in zip(auto, fast, strict=True):
            assert a.shape == f.shape
            # the same float32 arithmetic in another order
            assert_close(f, a, 1e-5, 1e-5, str(kwargs))


def test_activation_layers_and_linear_layers_have_rules():
    net = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Rescaling(2.0, offset=-1.0),
            keras.layers.Dense(8),
            keras.layers.Activation("tanh"),
            keras.layers.Dense(8),
            keras.layers.ELU(alpha=0.7),
            keras.layers.Dense(8),
            keras.layers.LeakyReLU(negative_slope=0.1),
            keras.layers.Dense(8),
            keras.layers.ReLU(max_value=1.5, negative_slope=0.05, threshold=0.1),
            keras.layers.Dropout(0.3),
            keras.Sequential([keras.layers.Dense(6, activation="softplus")]),
            keras.layers.Reshape((2, 3)),
            keras.layers.Dense(2),
            keras.layers.Flatten(),
        ]
    )
    x = np.random.default_rng(0).uniform(-1, 1, (11, 2)).astype("float32")
    for kwargs in [dict(order=4), dict(order=2, hessian="laplacian")]:
        auto, fast = both(net, x, **kwargs)
        for a, f in zip(auto, fast, strict=True):
            assert_close(f, a, 1e-5, 1e-5, str(kwargs))
        assert np.abs(auto[2]).max() > 1e-3


def test_dropout_in_training_uses_one_mask_for_all_coefficients():
    # y = x * sum_h w_h m_h v_h and dy = sum_h w_h m_h v_h for a mask m:
    # y == x * dy holds only if y and dy saw the same mask.
    net = keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(64, use_bias=False),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(1, use_bias=False),
        ]
    )
    x = np.linspace(0.5, 1.5, 5, dtype="float32").reshape(-1, 1)
    y, dy = (
        to_numpy(t)
        for t in DerivativeModel(net, order=1, method="taylor")(x, training=True)
    )
    full = to_numpy(net(x))
    assert not np.allclose(y, full)  # units were dropped
    np.testing.assert_allclose(y[:, 0], x[:, 0] * dy[:, 0, 0], rtol=1e-5, atol=1e-6)


def test_auto_falls_back_for_layers_without_rules_and_taylor_names_them():
    net = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.LayerNormalization(name="norm"),
            keras.layers.Dense(1),
        ]
    )
    x = np.random.default_rng(0).uniform(-1, 1, (6, 2)).astype("float32")
    with pytest.raises(
        ValueError, match="'norm' \\(LayerNormalization\\) has no Taylor rule"
    ):
        DerivativeModel(net, method="taylor")(x)
    layer = DerivativeModel(net, method="auto")
    out = layer(x)
    assert layer._engine == "autodiff" and len(out) == 3
    with pytest.raises(ValueError, match='hessian="full"'):
        DerivativeModel(net, method="taylor", hessian="full")(x)
    custom = keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(4, activation=lambda z: z * z)]
    )
    with pytest.raises(ValueError, match="activation of layer"):
        DerivativeModel(custom, method="taylor")(np.ones((2, 1), "float32"))


def test_hard_sigmoid_where_torch_autodiff_cannot_differentiate_twice():
    net = keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(
                1,
                activation="hard_sigmoid",
                kernel_initializer="ones",
                bias_initializer="zeros",
            ),
        ]
    )
    x = np.array([[-4.0], [-1.0], [0.5], [2.0], [5.0]], "float32")
    y, dy, d2y = (to_numpy(t) for t in DerivativeModel(net, method="taylor")(x))
    np.testing.assert_allclose(dy[:, 0, 0], [0, 1 / 6, 1 / 6, 1 / 6, 0], atol=1e-7)
    assert np.all(d2y == 0)


def test_auto_uses_taylor_for_the_laplacian_and_autodiff_otherwise():
    net = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(1),
        ]
    )
    x = np.ones((2, 3), "float32")
    laplacian = DerivativeModel(net, hessian="laplacian")
    diagonal = DerivativeModel(net)
    laplacian(x), diagonal(x)
    assert (laplacian._engine, diagonal._engine) == ("taylor", "autodiff")
