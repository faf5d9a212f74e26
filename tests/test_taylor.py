"""The Taylor engine agrees with the autodiff engine, and falls back or
refuses clearly where it has no rule."""

import keras
import numpy as np
import pytest
from conftest import BACKEND, FLOAT64, assert_close, f64, to_numpy

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
    "celu",
    "log_sigmoid",
    "mish",
    "softsign",
    "sparse_plus",
    "squareplus",
    "tanh_shrink",
    "hard_silu",
    "hard_shrink",
    "soft_shrink",
    "sparse_sigmoid",
]
if BACKEND != "torch":  # torch's autodiff, the reference, cannot do these twice
    ACTIVATIONS += ["hard_sigmoid", "hard_tanh"]
if BACKEND == "tensorflow":  # nor TensorFlow's this one
    ACTIVATIONS.remove("softsign")


SMOOTH = ["tanh", "sigmoid", "softplus", "silu", "gelu", "mish", "exponential"]


def random_net(seed, d, out):
    """Random widths and activations, one of them smooth: on an all
    piecewise-linear net, comparing second derivatives is 0 == 0."""
    rng = np.random.default_rng(seed)
    layers = [keras.Input((d,))]
    depth = int(rng.integers(1, 4))
    smooth_at = int(rng.integers(depth))
    for i in range(depth):
        act = ACTIVATIONS[rng.integers(len(ACTIVATIONS))]
        if i == smooth_at:
            act = SMOOTH[rng.integers(len(SMOOTH))]
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


# Eager JAX dispatches slowly (5 s a net): fewer nets there keep CI short.
@pytest.mark.parametrize("seed", range(8 if BACKEND == "jax" else 16))
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
        cases.append(dict(order=2, hessian="full", wrt=wrt))
    for kwargs in cases:
        auto, fast = both(net, x, **kwargs)
        assert np.abs(auto[-1]).max() > 1e-6  # the highest order is not 0 == 0
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


def test_softmax_glu_and_prelu_agree_with_autodiff():
    net = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(6, activation="softmax"),
            keras.layers.Dense(4, activation="log_softmax"),
            keras.layers.PReLU(alpha_initializer=keras.initializers.Constant(0.3)),
            keras.layers.Dense(5),
            keras.layers.Softmax(),
            keras.layers.Dense(2),
        ]
    )
    x = np.random.default_rng(0).uniform(-2, 2, (9, 3)).astype("float32")
    for kwargs in CASES:
        layer = DerivativeModel(net, method="taylor", **kwargs)
        fast = [to_numpy(t) for t in layer(x)]
        auto = [
            to_numpy(t) for t in DerivativeModel(net, method="autodiff", **kwargs)(x)
        ]
        for k, (a, f) in enumerate(zip(auto, fast, strict=True)):
            assert k < 2 or np.abs(a).max() > 1e-4  # curved
            assert_close(f, a, 1e-5, 1e-5, f"{kwargs} level {k}")


def test_glu_jet_agrees_with_autodiff():
    # Keras infers the wrong output shape for glu inside a model (it halves
    # the features), so its jet rule is checked on its own: y = glu(x W).
    from keras_deriv import backend
    from keras_deriv.engines import jets, vector_activations

    w = keras.ops.convert_to_tensor(
        np.random.default_rng(0).normal(size=(1, 6)).astype("float32")
    )
    x = keras.ops.convert_to_tensor(np.linspace(-2, 2, 7, dtype="float32")[:, None])
    jet = [keras.ops.matmul(x, w), w, None, None, None]
    fast = vector_activations.glu(jet, jets.Mode("directions", 1))
    auto = backend.get().nested_derivatives(
        lambda t: keras.activations.glu(keras.ops.matmul(t, w)),
        x,
        4,
        full_hessian=False,
        wrt=(0,),
    )
    for k in range(5):
        ref = to_numpy(auto[k]).reshape(7, 3)
        assert_close(to_numpy(jets.batched(fast[k], x)), ref, 1e-5, 1e-5, str(k))


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
            keras.layers.UnitNormalization(name="norm"),
            keras.layers.Dense(1),
        ]
    )
    x = np.random.default_rng(0).uniform(-1, 1, (6, 2)).astype("float32")
    with pytest.raises(
        ValueError, match="'norm' \\(UnitNormalization\\) has no Taylor rule"
    ):
        DerivativeModel(net, method="taylor")(x)
    layer = DerivativeModel(net, method="auto")
    out = layer(x)
    assert layer.engine == "autodiff" and len(out) == 3
    custom = keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(4, activation=lambda z: z * z)]
    )
    with pytest.raises(ValueError, match="activation of layer"):
        DerivativeModel(custom, method="taylor")(np.ones((2, 1), "float32"))


def test_functional_ops_and_shared_layers_fall_back_to_autodiff():
    inputs = keras.Input((2,))
    shared = keras.layers.Dense(2, activation="tanh", name="shared")
    twice = keras.Model(inputs, shared(shared(inputs)))
    inputs = keras.Input((2,))
    op = keras.Model(inputs, keras.ops.sin(keras.layers.Dense(3)(inputs)))
    x = np.random.default_rng(0).uniform(-1, 1, (5, 2)).astype("float32")
    for net, why in [(twice, "shared"), (op, "has no Taylor rule")]:
        with pytest.raises(ValueError, match=why):
            DerivativeModel(net, method="taylor")(x)
        layer = DerivativeModel(net)
        auto = [to_numpy(t) for t in layer(x)]
        assert layer.engine == "autodiff"
        ref = [to_numpy(t) for t in DerivativeModel(net, method="autodiff")(x)]
        for a, r in zip(auto, ref, strict=True):
            np.testing.assert_array_equal(a, r)


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


def test_auto_picks_the_engine_the_benchmarks_favour():
    def net(d, activation):
        hidden = keras.layers.Dense(8, activation=activation)
        return keras.Sequential([keras.Input((d,)), hidden, keras.layers.Dense(1)])

    cases = [
        (net(3, "tanh"), dict(hessian="laplacian"), "taylor"),
        (net(3, "relu"), dict(hessian="laplacian"), "taylor"),
        (net(3, "tanh"), dict(), "taylor"),
        (net(3, "relu"), dict(), "autodiff"),  # piecewise linear
        (net(3, "relu"), dict(order=1), "autodiff"),
        (net(3, "tanh"), dict(hessian="full"), "taylor"),
        (net(6, "tanh"), dict(hessian="full"), "autodiff"),  # d'(d'+1)/2 pairs
        (net(6, "tanh"), dict(hessian="full", wrt=[0, 5]), "taylor"),
    ]
    for model, kwargs, engine in cases:
        layer = DerivativeModel(model, **kwargs)
        layer(np.ones((2, model.input_shape[-1]), "float32"))
        assert layer.engine == engine, (kwargs, engine)


def dense(units, activation=None, seed=0):
    return keras.layers.Dense(
        units,
        activation=activation,
        dtype="float64",
        kernel_initializer=keras.initializers.GlorotUniform(seed),
        bias_initializer=keras.initializers.RandomUniform(-0.5, 0.5, seed=seed + 1),
    )


def randomize(layer, seed):
    """Give every weight of `layer` (gamma, beta, moving statistics) a
    non-trivial value, so that no term of its rule is tested against 1 or 0."""
    rng = np.random.default_rng(seed)
    for v in layer.weights:
        value = rng.uniform(0.5, 1.5, v.shape)
        if "beta" in v.path or "mean" in v.path:
            value -= 1.0
        v.assign(value)
    return layer


def graph_net(d=3, moments=True):
    """A Functional model with every merge, the norms (several options), a
    nested Sequential and a Functional model nested in a Sequential."""
    f64 = dict(dtype="float64")
    x = keras.Input((d,), dtype="float64")
    a = dense(6, "tanh", 0)(x)
    b = dense(6, "silu", 2)(x)
    c = dense(6, "softplus", 4)(x)
    merged = [
        keras.layers.Add(**f64)([a, b, c]),
        keras.layers.Subtract(**f64)([a, b]),
        keras.layers.Multiply(**f64)([a, b, c]),
        keras.layers.Average(**f64)([b, c]),
    ]
    h = keras.layers.Concatenate(**f64)(merged)  # (B, 24)
    if moments:  # the layers TensorFlow's autodiff gets wrong
        h = keras.layers.LayerNormalization(**f64)(h)
    h = dense(8, "tanh", 6)(h)  # not gelu: TF's float64 gelu is off by 5e-9
    if moments:
        h = keras.layers.GroupNormalization(groups=2, **f64)(h)
    h = keras.layers.BatchNormalization(**f64)(h)
    inner_x = keras.Input((8,), dtype="float64")
    inner = keras.Model(inner_x, keras.layers.RMSNormalization(**f64)(inner_x))
    h = keras.Sequential([dense(8, "sigmoid", 8), inner])(h)
    h = keras.layers.Reshape((2, 4), **f64)(h)
    if moments:
        h = keras.layers.LayerNormalization(axis=[1, 2], **f64)(h)
    h = keras.layers.Flatten(**f64)(h)
    h = keras.layers.Concatenate(**f64)([h, x])  # a concatenated input: no d2
    net = keras.Model(x, dense(2, None, 10)(h))
    for i, layer in enumerate(net._flatten_layers()):
        if "normalization" in type(layer).__name__.lower():
            randomize(layer, i)
    return net


CASES = [  # few: eager JAX takes seconds per case on the graph below
    dict(order=4, wrt=[0, 2]),
    dict(order=2, hessian="laplacian"),
    dict(order=2, hessian="full", wrt=[2, 1]),
]


@pytest.mark.parametrize("kwargs", CASES, ids=str)
def test_functional_graphs_with_merges_and_norms_agree_with_autodiff(kwargs):
    # TensorFlow's autodiff gets layer norms wrong, torch's beyond order 2
    # (the next tests)
    right = {"tensorflow": 1, "jax": 4, "torch": 2}[BACKEND]
    net = graph_net(moments=kwargs["order"] <= right)
    x = f64(np.random.default_rng(0).uniform(-1, 1, (7, 3)))
    auto = [
        to_numpy(t)
        for t in DerivativeModel(net, method="autodiff", dtype="float64", **kwargs)(x)
    ]
    layer = DerivativeModel(net, method="taylor", dtype="float64", **kwargs)
    fast = [to_numpy(t) for t in layer(x)]
    assert layer.engine == "taylor"
    for k, (a, f) in enumerate(zip(auto, fast, strict=True)):
        assert a.shape == f.shape
        assert k < 2 or np.abs(a).max() > 1e-2  # curved: not a check of 0 == 0
        # float64: the same arithmetic in another order. float32 on JAX and
        # torch: the 4th derivative of a layer norm amplifies rounding.
        assert_close(f, a, 1e-9, 2e-3, f"level {k}")


@pytest.mark.skipif(not FLOAT64, reason="finite differences need float64")
def test_functional_graph_with_layer_norms_matches_finite_differences():
    net = graph_net()
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (5, 3))
    _, dy, hess = (
        to_numpy(t)
        for t in DerivativeModel(net, method="taylor", hessian="full", dtype="float64")(
            f64(x)
        )
    )
    h = 1e-4
    eye = np.eye(3) * h

    def y(z):
        return to_numpy(net(f64(z)))

    for i in range(3):
        # a step h / 10: truncation (h/10)^2 y^(3) / 6, with y^(3) in the 100s
        fd = (y(x + eye[i] / 10) - y(x - eye[i] / 10)) / (0.2 * h)
        np.testing.assert_allclose(dy[..., i], fd, atol=1e-7)
        for j in range(3):
            fd2 = (
                y(x + eye[i] + eye[j])
                - y(x + eye[i] - eye[j])
                - y(x - eye[i] + eye[j])
                + y(x - eye[i] - eye[j])
            ) / (4 * h * h)
            # truncation h^2 y^(4) / 6 ~ 1e-5 relative, rounding eps / h^2
            np.testing.assert_allclose(hess[..., i, j], fd2, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["autodiff", "taylor"])
def test_batch_normalization_runs_in_inference_mode_only(method):
    x = keras.Input((2,))
    h = keras.layers.BatchNormalization(name="bn")(keras.layers.Dense(4)(x))
    net = keras.Model(x, keras.layers.Dense(1, activation="tanh")(h))
    randomize(net.get_layer("bn"), 0)
    points = np.random.default_rng(0).uniform(-1, 1, (8, 2)).astype("float32")
    layer = DerivativeModel(net, method=method)
    with pytest.raises(ValueError, match="'bn' .*batch statistics.*trainable = False"):
        layer(points, training=True)
    inference = [to_numpy(t) for t in layer(points, training=False)]
    net.get_layer("bn").trainable = False  # the fix the error suggests
    frozen = [to_numpy(t) for t in layer(points, training=True)]
    for a, b in zip(inference, frozen, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert np.abs(inference[2]).max() > 1e-3


@pytest.mark.skipif(BACKEND == "jax", reason="JAX differentiates it right")
def test_wrong_autodiff_of_layer_norm_is_refused_and_taylor_used():
    """TensorFlow's second and PyTorch's third derivatives of a layer norm
    are wrong; finite differences show TensorFlow's (float64)."""
    x = keras.Input((2,), dtype="float64")
    h = keras.layers.LayerNormalization(name="norm", dtype="float64")(
        dense(4, "tanh", 0)(x)
    )
    net = keras.Model(x, dense(1, None, 2)(h))
    randomize(net.get_layer("norm"), 0)
    points = np.random.default_rng(0).uniform(-1, 1, (6, 2))
    order = 2 if BACKEND == "tensorflow" else 3  # the first wrong order
    layer = DerivativeModel(net, order=order, dtype="float64")
    fast = to_numpy(layer(f64(points))[order])
    assert layer.engine == "taylor"
    # The defect itself: the framework's nested differentiation is far off.
    from keras_deriv import backend

    wrong = backend.get().nested_derivatives(
        net, f64(points), order, full_hessian=False, wrt=(0, 1)
    )[order]
    assert np.abs(to_numpy(wrong) - fast).max() > 0.1 * np.abs(fast).max()
    with pytest.raises(ValueError, match="wrong derivatives .* 'norm'"):
        DerivativeModel(net, order=order, method="autodiff")(f64(points))
    lower = DerivativeModel(net, order=order - 1, method="autodiff", dtype="float64")
    assert len(lower(f64(points))) == order  # the orders below are right
    if FLOAT64:  # and Taylor's is right: finite differences
        step = np.array([1e-4, 0.0])
        fd = (
            to_numpy(net(f64(points + step)))
            - 2 * to_numpy(net(f64(points)))
            + to_numpy(net(f64(points - step)))
        ) / 1e-8
        np.testing.assert_allclose(fast[:, 0, 0], fd[:, 0], atol=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(order=3, wrt=[1]), dict(hessian="full"), dict(hessian="laplacian")],
    ids=str,
)
def test_piecewise_linear_nets_skip_the_passes_that_give_zeros(kwargs):
    """For a ReLU net the autodiff engine computes [y, dy] and makes the
    higher derivatives zeros: the same numbers nested differentiation gives,
    with less work."""
    from keras_deriv import backend

    net = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(8, activation="leaky_relu"),
            keras.layers.Dense(2),
        ]
    )
    x = np.random.default_rng(0).uniform(-1, 1, (10, 2)).astype("float32")
    layer = DerivativeModel(net, method="autodiff", **kwargs)
    fast = [to_numpy(t) for t in layer(x)]
    assert layer.curvature == "piecewise_linear"
    order, wrt = kwargs.get("order", 2), kwargs.get("wrt", [0, 1])
    full = backend.get().nested_derivatives(
        net, keras.ops.convert_to_tensor(x), order, kwargs.get("hessian") == "full", wrt
    )
    full = [to_numpy(t) for t in full]
    if kwargs.get("hessian") == "laplacian":
        full[2] = full[2].sum(-1)
    for f, r in zip(fast, full, strict=True):
        assert f.shape == r.shape
        np.testing.assert_array_equal(f, r)
    assert np.abs(fast[1]).max() > 0.1 and not fast[2].any()


def test_softsign_at_zero():
    # f'(0) = 1 and f'''(0) = 6: the sign of 0 must not zero them
    net = keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(
                1,
                activation="softsign",
                kernel_initializer=keras.initializers.Constant(-0.5),
            ),
        ]
    )
    x = np.zeros((2, 1), "float32")
    y, dy, d2y, d3y = (
        to_numpy(t) for t in DerivativeModel(net, order=3, method="taylor")(x)
    )
    np.testing.assert_allclose(dy[:, 0, 0], -0.5)
    np.testing.assert_allclose(d3y[:, 0, 0], 6 * (-0.5) ** 3)


def test_wrapped_and_subclassed_models_are_not_taken_at_their_word():
    from keras_deriv import backend

    x = np.random.default_rng(0).uniform(-1, 1, (5, 3)).astype("float32")
    # A wrapper hides a smooth layer from the piecewise-linear verdict's walk:
    # no shortcut, the real (nonzero) second derivative.
    wrapped = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(6, activation="relu"),
            keras.layers.Reshape((6, 1)),
            keras.layers.TimeDistributed(keras.layers.Dense(4, activation="tanh")),
            keras.layers.Flatten(),
            keras.layers.Dense(1),
        ]
    )
    layer = DerivativeModel(wrapped)
    d2y = to_numpy(layer(x)[2])
    assert layer.engine == "autodiff" and not layer.curvature == "piecewise_linear"
    ref = backend.get().nested_derivatives(
        wrapped, keras.ops.convert_to_tensor(x), 2, False, (0, 1, 2)
    )[2]
    np.testing.assert_allclose(d2y, to_numpy(ref), rtol=1e-6, atol=1e-7)
    assert np.abs(d2y).max() > 1e-3

    # A Functional subclass that overrides call is not its graph.
    class Doubled(keras.Model):
        def call(self, inputs):
            return 2.0 * super().call(inputs)

    inputs = keras.Input((3,))
    doubled = Doubled(inputs, keras.layers.Dense(1, activation="tanh")(inputs))
    layer = DerivativeModel(doubled)
    fast = [to_numpy(t) for t in layer(x)]
    assert layer.engine == "autodiff"
    ref = [
        to_numpy(t)
        for t in backend.get().nested_derivatives(
            doubled, keras.ops.convert_to_tensor(x), 2, False, (0, 1, 2)
        )
    ]
    for f, r in zip(fast, ref, strict=True):
        np.testing.assert_allclose(f, r, rtol=1e-6, atol=1e-7)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="a TensorFlow defect")
def test_defects_are_found_on_bare_and_wrapped_layers():
    x = np.random.default_rng(0).uniform(-1, 1, (5, 4)).astype("float32")
    bare = keras.layers.LayerNormalization(name="norm")
    with pytest.raises(ValueError, match="wrong derivatives.*'norm'"):
        DerivativeModel(bare, method="autodiff")(x)
    # a bare layer is a graph of one step: auto takes it through Taylor
    layer = DerivativeModel(bare)
    layer(x)
    assert layer.engine == "taylor"
    wrapped = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Reshape((2, 2)),
            keras.layers.TimeDistributed(keras.layers.LayerNormalization(name="norm")),
        ]
    )
    with pytest.raises(ValueError, match="wrong derivatives.*norm'"):
        DerivativeModel(wrapped)(x)
    # Taylor has no rule for a multi-axis Softmax: an error, not wrong numbers
    inputs = keras.Input((4,))
    h = keras.layers.LayerNormalization(name="norm")(keras.layers.Dense(4)(inputs))
    h = keras.layers.Softmax(axis=(1, 2))(keras.layers.Reshape((2, 2))(h))
    with pytest.raises(ValueError, match="softmax over several axes"):
        DerivativeModel(keras.Model(inputs, h))(x)
