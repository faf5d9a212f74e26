"""Named partials and linear operators: `DerivativeModel(partials=...,
variables=...)`.

The reference is a closed form: for a one-hidden-layer tanh network
f(x) = Σ_u a_u tanh(w_u·x + b_u) + c, every partial is
∂^α f = Σ_u a_u tanh⁽ᵏ⁾(z_u) Π_j w_uj^α_j with k = |α|, and tanh's
derivatives are polynomials in t = tanh(z) (s = 1 - t²):
s, -2ts, s(6t² - 2), 8ts(2 - 3t²).
"""

import itertools
import math

import keras
import numpy as np
import pytest
from conftest import (
    assert_close,
    assert_named_output_trains,
    f64,
    mlp,
    to_numpy,
)

from keras_deriv import DerivativeModel, derivatives

ENGINES = ("autodiff", "taylor")


def tanh_derivative(z, k):
    t = np.tanh(z)
    s = 1 - t * t
    return [t, s, -2 * t * s, s * (6 * t * t - 2), 8 * t * s * (2 - 3 * t * t)][k]


def closed_form(net, x, counts):
    """∂^counts f at x (float64), `counts` the order per feature; (B, m)."""
    (kernel, bias), (out_kernel, _) = [
        [to_numpy(v).astype("float64") for v in layer.weights] for layer in net.layers
    ]
    z = x @ kernel + bias
    k = sum(counts)
    factor = np.prod([kernel[j] ** c for j, c in enumerate(counts)], axis=0)
    value = (tanh_derivative(z, k) * factor) @ out_kernel
    return value if k else value + to_numpy(net.layers[1].weights[1])


def multi_indices(d, k):
    return list(itertools.combinations_with_replacement(range(d), k))


def counts_of(index, d):
    return tuple(index.count(j) for j in range(d))


# float32 (JAX and torch round float64 to it): ~1e-7 per operation,
# amplified by the order and the interpolation's weights
TOL32 = {1: 2e-5, 2: 5e-5, 3: 2e-4, 4: 1e-3}


@pytest.mark.parametrize("method", ENGINES)
@pytest.mark.parametrize("d", [1, 2, 3])
def test_every_partial_up_to_order_four_against_the_closed_form(method, d):
    net = mlp(d, (6,), 2, activation="tanh", seed=d)
    x = np.random.default_rng(d).uniform(-1, 1, size=(5, d))
    names = "xyz"[:d]
    partials = {
        f"u_{''.join(names[j] for j in index)}": "".join(names[j] for j in index)
        for k in range(1, 5)
        for index in multi_indices(d, k)
    }
    out = DerivativeModel(net, partials=partials, variables=names, method=method)(
        f64(x)
    )
    assert list(out) == ["y", *partials]
    assert_close(to_numpy(out["y"]), closed_form(net, x, (0,) * d), 1e-12, 1e-6)
    for name, spec in partials.items():
        index = tuple(names.index(c) for c in spec)
        ref = closed_form(net, x, counts_of(index, d))
        got = to_numpy(out[name])
        assert got.shape == (5, 2)  # y's shape
        assert_close(got, ref, 1e-10, TOL32[len(index)], name)


@pytest.mark.parametrize("method", ENGINES)
def test_operators_against_the_closed_form(method):
    net = mlp(2, (8,), 1, activation="tanh", seed=7)
    x = np.random.default_rng(1).uniform(-1, 1, size=(6, 2))

    def partial(*counts):
        return closed_form(net, x, counts)

    operators = {
        "heat": ({"t": 1, "xx": -0.1}, partial(0, 1) - 0.1 * partial(2, 0)),
        "laplacian": ({"xx": 1, "tt": 1}, partial(2, 0) + partial(0, 2)),
        "biharmonic": (
            {"xxxx": 1, "xxtt": 2, "tttt": 1},
            partial(4, 0) + 2 * partial(2, 2) + partial(0, 4),
        ),
        "tuples": (
            {("x", "t"): 3.0, (0, 0, 1): -1.0},
            3 * partial(1, 1) - partial(2, 1),
        ),
    }
    layer = DerivativeModel(
        net,
        partials={name: op for name, (op, _) in operators.items()},
        variables="xt",
        method=method,
    )
    out = layer(f64(x))
    for name, (_, ref) in operators.items():
        assert np.abs(ref).max() > 1e-2  # not a check of 0 == 0
        assert_close(to_numpy(out[name]), ref, 1e-10, 2e-3, name)


@pytest.mark.parametrize("method", ENGINES)
@pytest.mark.parametrize(
    "partials",
    [{"r": {"xx": -1.0}}, {"a": {"x": 2.0, "xx": -3.0}, "b": "xx", "c": "x"}],
)
def test_second_order_operators_of_one_variable(method, partials):
    """One variable: one direction, no direction axis to sum over."""
    net = mlp(1, (8,), 1, activation="tanh", seed=5)
    x = np.random.default_rng(4).uniform(-1, 1, size=(7, 1))
    out = DerivativeModel(net, partials=partials, variables="x", method=method)(f64(x))
    for name, spec in partials.items():
        terms = {spec: 1.0} if isinstance(spec, str) else spec
        ref = sum(c * closed_form(net, x, (len(k),)) for k, c in terms.items())
        assert np.abs(ref).max() > 1e-2
        assert_close(to_numpy(out[name]), ref, 1e-10, 5e-5, name)


def test_variables_as_a_list_and_unnamed_features_held_fixed():
    net = mlp(3, (6,), 1, activation="tanh", seed=3)
    x = np.random.default_rng(3).uniform(-1, 1, size=(4, 3))
    out = DerivativeModel(
        net, partials={"u_ab": ("alpha", "beta")}, variables=["alpha", "beta"]
    )(f64(x))
    assert_close(to_numpy(out["u_ab"]), closed_form(net, x, (1, 1, 0)), 1e-10, 5e-5)
    by_index = DerivativeModel(net, partials={"u_02": (0, 2)})(f64(x))
    assert_close(
        to_numpy(by_index["u_02"]), closed_form(net, x, (1, 0, 1)), 1e-10, 5e-5
    )


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (
            {"partials": {"u": "q"}, "variables": "xt"},
            ValueError,
            "unknown variable 'q'",
        ),
        ({"partials": {"u": "xxxxx"}, "variables": "xt"}, ValueError, "order 5"),
        ({"partials": {"u": ""}, "variables": "xt"}, ValueError, "empty"),
        ({"partials": {"u": ()}, "variables": "xt"}, ValueError, "empty"),
        ({"partials": {"y": "x"}, "variables": "xt"}, ValueError, '"y"'),
        ({"partials": {"u": "x"}, "variables": "xx"}, ValueError, "repeats"),
        ({"partials": {"u": "x"}, "variables": "xtz"}, ValueError, "input has 2"),
        (
            {"partials": {"u": "xt"}, "variables": ["x", "t", "xt"]},
            ValueError,
            "ambiguous",
        ),
        ({"partials": {"u": (0, 5)}}, ValueError, "beyond the input"),
        ({"partials": {"u": "x"}}, ValueError, "variables="),
        ({"partials": {"u": {"x": "1"}}, "variables": "xt"}, TypeError, "numbers"),
        ({"partials": {"u": {}}, "variables": "xt"}, ValueError, "no terms"),
        ({"partials": {}, "variables": "xt"}, TypeError, "non-empty dict"),
        ({"partials": ["x"], "variables": "xt"}, TypeError, "non-empty dict"),
        (
            {"partials": {"u": "x"}, "variables": "xt", "order": 2},
            ValueError,
            "`order`",
        ),
        (
            {"partials": {"u": "x"}, "variables": "xt", "hessian": "full"},
            ValueError,
            "hessian",
        ),
        ({"partials": {"u": "x"}, "variables": "xt", "wrt": [0]}, ValueError, "`wrt`"),
        (
            {"partials": {"u": "x"}, "variables": "xt", "smoothing": 0.1},
            ValueError,
            "smoothing",
        ),
        ({"variables": "xt"}, ValueError, "pass `partials`"),
        ({"partials": {"u": "x"}, "variables": 3}, TypeError, "variables"),
        ({"partials": {"u": (1,)}, "variables": "x"}, ValueError, "held fixed"),
    ],
)
def test_bad_partials_are_clear_errors(kwargs, error, match):
    net = mlp(2, (4,), 1)
    with pytest.raises(error, match=match):
        DerivativeModel(net, **kwargs)(f64(np.zeros((2, 2))))


@pytest.mark.parametrize("method", ENGINES)
def test_weight_gradients_of_a_loss_on_a_mixed_partial(method):
    net = mlp(2, (6,), 1, activation="tanh", seed=11)
    x = f64(np.random.default_rng(0).uniform(-1, 1, size=(4, 2)))
    layer = DerivativeModel(net, partials={"u_xt": "xt"}, variables="xt", method=method)
    assert_named_output_trains(layer, x, "u_xt")


def test_a_heat_residual_trains_with_losses_and_sample_weights_by_name(tmp_path):
    # u_t = 0.1 u_xx with u = exp(-0.1 π² t) sin(π x): the residual and the
    # initial condition as two named losses, selected per point.
    keras.utils.set_random_seed(0)
    net = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(32, activation="tanh"),
            keras.layers.Dense(32, activation="tanh"),
            keras.layers.Dense(1),
        ]
    )
    inputs = keras.Input((2,))
    layer = DerivativeModel(
        net, partials={"residual": {"t": 1, "xx": -0.1}}, variables="xt", name="heat"
    )
    model = keras.Model(inputs, layer(inputs))
    rng = np.random.default_rng(0)
    inside = rng.uniform(size=(256, 2)).astype("float32")
    initial = np.c_[rng.uniform(size=64), np.zeros(64)].astype("float32")
    x = np.concatenate([inside, initial])
    at_t0 = np.r_[np.zeros(256), np.ones(64)].astype("float32")
    targets = {
        "y": np.sin(math.pi * x[:, :1]).astype("float32"),
        "residual": np.zeros((len(x), 1), "float32"),
    }
    model.compile(keras.optimizers.Adam(3e-3), loss={"y": "mse", "residual": "mse"})
    history = model.fit(
        x,
        targets,
        sample_weight={"y": 5.0 * at_t0, "residual": 1.0 - at_t0},
        batch_size=64,
        epochs=40,
        verbose=0,
    )
    # both named losses are reported and fall (measured: by 6-8x)
    assert {"y_loss", "residual_loss"} <= set(history.history)
    assert history.history["loss"][-1] < 0.25 * history.history["loss"][0]
    path = tmp_path / "heat.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_layer("heat").output_keys == ("y", "residual")
    before, after = model.predict(x, verbose=0), loaded.predict(x, verbose=0)
    for key in before:
        np.testing.assert_allclose(after[key], before[key], rtol=1e-6, atol=1e-6)


def test_partials_given_as_tuples_and_operators_with_tuple_keys_save(tmp_path):
    net = mlp(2, (4,), 1, activation="tanh", dtype="float32")
    inputs = keras.Input((2,))
    layer = DerivativeModel(
        net,
        partials={"a": ("x", "t"), "b": (0, 0, 1), "c": {("x", "x"): 1.0, "t": 2.0}},
        variables=["x", "t"],
        name="named",
    )
    model = keras.Model(inputs, layer(inputs))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(0).uniform(size=(3, 2)).astype("float32")
    before, after = model.predict(x, verbose=0), loaded.predict(x, verbose=0)
    assert set(after) == {"y", "a", "b", "c"}
    for key in before:
        np.testing.assert_allclose(after[key], before[key], rtol=1e-6, atol=1e-7)


def separate_inputs_net(seed=0):
    """u(x, t) with x and t as two inputs: Concatenate -> tanh -> linear,
    the closed form's network on the concatenated input."""
    x, t = keras.Input((1,), name="x"), keras.Input((1,), name="t")
    h = keras.layers.Concatenate()([x, t])
    dense = keras.layers.Dense(
        8, activation="tanh", kernel_initializer=keras.initializers.GlorotUniform(seed)
    )
    out = keras.layers.Dense(1, kernel_initializer=keras.initializers.GlorotUniform(9))
    model = keras.Model([x, t], out(dense(h)))

    class Layers:  # what closed_form reads: layers[0] and layers[1] weights
        layers = [dense, out]

    return model, Layers


@pytest.mark.parametrize("method", ENGINES)
@pytest.mark.parametrize("structure", ["list", "dict"])
def test_separate_inputs_named_partials_against_the_closed_form(structure, method):
    model, dense_layers = separate_inputs_net()
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(6, 2)).astype("float32")
    inputs = (
        [x[:, :1], x[:, 1:]] if structure == "list" else {"x": x[:, :1], "t": x[:, 1:]}
    )
    layer = DerivativeModel(
        model,
        variables={"x": "x", "t": "t"},
        partials={"u_t": "t", "u_xt": "xt", "heat": {"t": 1, "xx": -0.1}},
        method=method,
    )
    out = layer(inputs)
    assert layer.engine == method
    xd = x.astype("float64")
    cases = {
        "u_t": closed_form(dense_layers, xd, (0, 1)),
        "u_xt": closed_form(dense_layers, xd, (1, 1)),
        "heat": closed_form(dense_layers, xd, (0, 1))
        - 0.1 * closed_form(dense_layers, xd, (2, 0)),
    }
    for name, ref in cases.items():
        assert_close(to_numpy(out[name]), ref, 2e-5, 2e-5, name)  # float32 input


@pytest.mark.parametrize("method", ENGINES)
def test_order_mode_differentiates_only_the_named_inputs(method):
    model, dense_layers = separate_inputs_net(seed=3)
    x = np.random.default_rng(1).uniform(-1, 1, size=(5, 2)).astype("float32")
    layer = DerivativeModel(model, variables={"t": None}, method=method)
    y, dy, d2y = layer([x[:, :1], x[:, 1:]])
    assert tuple(dy.shape) == (5, 1, 1)  # d/dt only
    xd = x.astype("float64")
    assert_close(
        to_numpy(dy)[:, :, 0], closed_form(dense_layers, xd, (0, 1)), 2e-5, 2e-5
    )
    assert_close(
        to_numpy(d2y)[:, :, 0], closed_form(dense_layers, xd, (0, 2)), 2e-5, 2e-5
    )


@pytest.mark.parametrize("method", ENGINES)
def test_a_deeponet_is_differentiated_through_its_trunk_only(method):
    # G(b)(y) = (W_b b + c_b) · tanh(W_t y + c_t): the Laplacian in the
    # trunk's y is Σ_u B_u tanh''(z_u) Σ_j W_t[j, u]², the branch held fixed.
    branch, trunk = keras.Input((3,), name="branch"), keras.Input((2,), name="trunk")
    b_net = keras.layers.Dense(8)
    t_net = keras.layers.Dense(8, activation="tanh")
    deeponet = keras.Model(
        [branch, trunk], keras.layers.Dot(axes=1)([b_net(branch), t_net(trunk)])
    )
    rng = np.random.default_rng(2)
    b = rng.normal(size=(4, 3)).astype("float32")
    y = rng.uniform(-1, 1, size=(4, 2)).astype("float32")
    layer = DerivativeModel(
        deeponet,
        variables={"trunk": "xy"},
        partials={"lap": {"xx": 1, "yy": 1}, "u_xy": "xy"},
        method=method,
    )
    out = layer({"branch": b, "trunk": y})
    wb, cb = (to_numpy(v).astype("float64") for v in b_net.weights)
    wt, ct = (to_numpy(v).astype("float64") for v in t_net.weights)
    coeff = b.astype("float64") @ wb + cb
    z = y.astype("float64") @ wt + ct
    lap = (coeff * tanh_derivative(z, 2) * (wt**2).sum(0)).sum(1, keepdims=True)
    mixed = (coeff * tanh_derivative(z, 2) * wt[0] * wt[1]).sum(1, keepdims=True)
    assert np.abs(lap).max() > 1e-2
    assert_close(to_numpy(out["lap"]), lap, 5e-5, 5e-5, "laplacian")
    assert_close(to_numpy(out["u_xy"]), mixed, 5e-5, 5e-5, "mixed")


def test_dropout_in_training_on_separate_inputs_is_one_random_function():
    """u(a, b) homogeneous of degree 2 in (a, b) for every dropout mask:
    Euler's relations hold at each point only if all its partials come
    from one mask (the Taylor engine shares it across coefficients)."""
    a, b = keras.Input((2,), name="a"), keras.Input((1,), name="b")
    h = keras.layers.Dense(6, use_bias=False)(keras.layers.Concatenate()([a, b]))
    h = keras.layers.Dropout(0.5)(keras.layers.Multiply()([h, h]))
    net = keras.Model([a, b], keras.layers.Dense(1, use_bias=False)(h))
    partials = {"ux": "x", "uy": "y", "uz": "z", "uxx": "xx", "uxy": "xy", "uxz": "xz"}
    layer = DerivativeModel(net, variables={"a": "xy", "b": "z"}, partials=partials)
    x = np.random.default_rng(3).uniform(-1, 1, (64, 3)).astype("float32")
    out = {
        k: to_numpy(v)[:, 0]
        for k, v in layer([x[:, :2], x[:, 2:]], training=True).items()
    }
    scale = np.abs(out["y"]).max()
    assert scale > 0.05
    euler = x[:, 0] * out["ux"] + x[:, 1] * out["uy"] + x[:, 2] * out["uz"]
    np.testing.assert_allclose(euler, 2 * out["y"], atol=1e-5 * 10 * scale)
    second = x[:, 0] * out["uxx"] + x[:, 1] * out["uxy"] + x[:, 2] * out["uxz"]
    np.testing.assert_allclose(second, out["ux"], atol=1e-4)
    inference = to_numpy(layer([x[:, :2], x[:, 2:]], training=False)["y"])[:, 0]
    assert np.abs(out["y"] - inference).max() > 1e-3  # dropout was active
    copies = DerivativeModel(
        net, variables={"a": "xy", "b": "z"}, partials=partials, method="autodiff"
    )
    with pytest.raises(ValueError, match="random mask.*training=False"):
        copies([x[:, :2], x[:, 2:]], training=True)


@pytest.mark.parametrize(
    "variables, match",
    [
        ({"nope": "x"}, "does not have"),
        ({"x": "a", "t": "a"}, "two features"),
        ("xt", "dict from input name"),
        ({"t": "t"}, "held fixed"),
        ({"x": "ab"}, "input has 1"),
    ],
)
def test_bad_variables_of_a_multi_input_model(variables, match):
    model, _ = separate_inputs_net()
    partials = {"u": (0,)} if match == "held fixed" else {"u": "a"}
    with pytest.raises((ValueError, TypeError), match=match):
        DerivativeModel(model, variables=variables, partials=partials)


def test_a_dict_without_an_input_is_a_clear_error():
    model, _ = separate_inputs_net()
    layer = DerivativeModel(model, variables={"x": "x", "t": "t"}, partials={"u": "x"})
    with pytest.raises(ValueError, match=r"expects 2 inputs \('x', 't'\); got 1"):
        layer({"x": np.zeros((2, 1), "float32")})


def test_a_multi_input_derivative_model_saves(tmp_path):
    model, _ = separate_inputs_net()
    x, t = keras.Input((1,), name="x"), keras.Input((1,), name="t")
    layer = DerivativeModel(
        model, variables={"x": "x", "t": "t"}, partials={"res": {"t": 1, "xx": -0.1}}
    )
    outer = keras.Model([x, t], layer([x, t]))
    path = tmp_path / "m.keras"
    outer.save(path)
    loaded = keras.models.load_model(path)
    data = [np.full((3, 1), 0.3, "float32"), np.full((3, 1), 0.7, "float32")]
    before, after = outer.predict(data, verbose=0), loaded.predict(data, verbose=0)
    for key in before:
        np.testing.assert_allclose(after[key], before[key], rtol=1e-6, atol=1e-7)


def test_derivatives_with_partials_in_chunks_against_the_closed_form():
    net = mlp(2, (8,), 1, activation="tanh", seed=11)
    x = np.random.default_rng(5).uniform(-1, 1, size=(23, 2))
    partials = {"u_xy": "xy", "heat": {"y": 1, "xx": -0.1}}
    out = derivatives(net, x, partials=partials, variables="xy", batch_size=5)
    assert list(out) == ["y", "u_xy", "heat"]  # a dict, y first
    refs = {
        "u_xy": closed_form(net, x, (1, 1)),
        "heat": closed_form(net, x, (0, 1)) - 0.1 * closed_form(net, x, (2, 0)),
    }
    for name, ref in refs.items():
        assert out[name].shape == (23, 1)
        assert np.abs(ref).max() > 1e-2
        assert_close(out[name], ref, 1e-10, 5e-5, name)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"partials": {"a": "x"}, "variables": "xy", "order": 3}, "drop order="),
        ({"partials": {"a": "x"}, "variables": "xy", "wrt": [0]}, "drop wrt="),
        (
            {"partials": {"a": "x"}, "variables": "xy", "wrt": np.array([0, 1])},
            "drop wrt=",
        ),
        ({"variables": "xy"}, "without partials=, select features with wrt="),
    ],
)
def test_derivatives_refuses_partials_mixed_with_order_options(kwargs, match):
    net = mlp(2, (4,), 1)
    with pytest.raises(ValueError, match=match):
        derivatives(net, np.zeros((3, 2)), **kwargs)


def test_derivatives_of_a_multi_input_model_says_what_to_use():
    model, _ = separate_inputs_net()
    with pytest.raises(ValueError, match=r"one input; .* has 2\. Wrap it in Deriv"):
        derivatives(model, np.zeros((3, 2), "float32"))


@pytest.mark.parametrize("method", ENGINES)
def test_operators_whose_terms_cancel_or_have_zero_coefficients(method):
    """A PDE coefficient set to 0 or two terms that cancel: zeros, or the
    terms that remain, still connected to the weights."""
    net = mlp(2, (6,), 1, activation="tanh", seed=2)
    x = np.random.default_rng(6).uniform(-1, 1, size=(5, 2))
    cases = [
        ({"z": {"xy": 1, "yx": -1}}, {"z": 0 * closed_form(net, x, (0, 0))}),
        (
            {"a": "xx", "z": {"xy": 1, "yx": -1}},
            {"a": closed_form(net, x, (2, 0)), "z": 0 * closed_form(net, x, (0, 0))},
        ),
        ({"a": {"xx": 0.0, "x": 1.0}}, {"a": closed_form(net, x, (1, 0))}),
        ({"b": {"xxyy": 0.0, "y": 2.0}}, {"b": 2 * closed_form(net, x, (0, 1))}),
    ]
    for partials, refs in cases:
        out = DerivativeModel(net, partials=partials, variables="xy", method=method)(
            f64(x)
        )
        for name, ref in refs.items():
            assert_close(to_numpy(out[name]), ref, 1e-10, 5e-5, f"{partials} {name}")


@pytest.mark.parametrize("layer", ["batch_norm", "normalization"])
def test_a_fixed_input_through_a_normalization_layer(layer):
    """The branch of a DeepONet normalised: held fixed, it carries no
    derivative through the normalisation (the Taylor engine and autodiff
    agree; the Laplacian against the closed form)."""
    branch, trunk = keras.Input((3,), name="branch"), keras.Input((2,), name="trunk")
    if layer == "batch_norm":
        norm = keras.layers.BatchNormalization(
            moving_mean_initializer=keras.initializers.RandomUniform(-1, 1, seed=1),
            moving_variance_initializer=keras.initializers.RandomUniform(1, 2, seed=2),
        )
    else:
        norm = keras.layers.Normalization(
            mean=[0.1, -0.2, 0.3], variance=[1.5, 2.0, 0.5]
        )
    b_net = keras.layers.Dense(8)
    t_net = keras.layers.Dense(8, activation="tanh")
    deeponet = keras.Model(
        [branch, trunk], keras.layers.Dot(axes=1)([b_net(norm(branch)), t_net(trunk)])
    )
    rng = np.random.default_rng(2)
    b = rng.normal(size=(4, 3)).astype("float32")
    y = rng.uniform(-1, 1, size=(4, 2)).astype("float32")
    wt, ct = (to_numpy(v).astype("float64") for v in t_net.weights)
    coeff = to_numpy(b_net(norm(b, training=False))).astype("float64")
    z = y.astype("float64") @ wt + ct
    lap = (coeff * tanh_derivative(z, 2) * (wt**2).sum(0)).sum(1, keepdims=True)
    for method in ENGINES:
        out = DerivativeModel(
            deeponet,
            variables={"trunk": "xy"},
            partials={"lap": {"xx": 1, "yy": 1}, "b": {"xxyy": 1}},
            method=method,
        )({"branch": b, "trunk": y})
        assert np.abs(lap).max() > 1e-2
        assert_close(to_numpy(out["lap"]), lap, 5e-5, 5e-5, method)


def test_a_nested_multi_input_model_called_on_a_dict():
    """keras_deriv cannot match a dict call's tensors to the inner model's
    inputs in order: the Taylor engine declines and autodiff takes it."""
    t, a = keras.Input((1,), name="t"), keras.Input((2,), name="a")
    h = keras.layers.Dense(6, activation="tanh")(keras.layers.Concatenate()([a, t]))
    inner = keras.Model({"t": t, "a": a}, keras.layers.Dense(1)(h))
    a2, t2 = keras.Input((2,), name="a2"), keras.Input((1,), name="t2")
    outer = keras.Model([a2, t2], inner({"a": a2, "t": t2}))
    rng = np.random.default_rng(0)
    xa = rng.uniform(-1, 1, (4, 2)).astype("float32")
    xt = rng.uniform(-1, 1, (4, 1)).astype("float32")
    variables = {"a2": "xy", "t2": "t"}
    layer = DerivativeModel(outer, partials={"u": "xxxt"}, variables=variables)
    out = layer([xa, xt])
    assert layer.engine == "autodiff"
    with pytest.raises(ValueError, match="cannot match"):
        DerivativeModel(
            outer, partials={"u": "xxxt"}, variables=variables, method="taylor"
        )([xa, xt])
    # the reference: u_xxxt of the same function, differentiated by hand
    wt, ct = (to_numpy(v).astype("float64") for v in inner.layers[3].weights)
    wo = to_numpy(inner.layers[4].weights[0]).astype("float64")
    z = np.concatenate([xa, xt], 1).astype("float64") @ wt + ct
    ref = (tanh_derivative(z, 4) * wt[0] ** 3 * wt[2]) @ wo
    assert_close(to_numpy(out["u"]), ref, 1e-4, 1e-4)


def test_auto_weighs_the_engines_by_their_passes():
    """auto: autodiff where its nested passes (per output component on the
    reverse-mode backends) number at most order + 2, else Taylor; a backend
    defect overrides it."""
    keras_backend = keras.backend.backend()

    def engine(net, partials, **kwargs):
        layer = DerivativeModel(net, partials=partials, variables="xy", **kwargs)
        layer.build((None, 2))
        return layer.engine

    net = mlp(2, (8,), 1, activation="tanh")
    assert engine(net, {"u": "xy"}) == "autodiff"  # 2 passes
    assert engine(net, {"u": "xxyy"}) == "autodiff"  # 4 passes
    bih = {"b": {"xxxx": 1, "xxyy": 2, "yyyy": 1}}
    assert engine(net, bih) == "taylor"  # 8 reverse or 10 forward passes
    wide = mlp(2, (8,), 64, activation="tanh")  # 64 output components
    expected = "autodiff" if keras_backend == "jax" else "taylor"
    assert engine(wide, {"u": "xy"}) == expected
    normed = keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(8, activation="tanh")]
        + [keras.layers.LayerNormalization(), keras.layers.Dense(1)]
    )
    if keras_backend == "tensorflow":  # its LayerNormalization defect
        assert engine(normed, {"u": "xy"}) == "taylor"
