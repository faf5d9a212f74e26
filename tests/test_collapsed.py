"""Collapsed Taylor mode: the highest order of named partials and operators
propagated as weighted sums over directions, through every kind of rule
(products, normalisation, softmax, concatenation with a fixed part).

The reference is independent of Keras: the same network written in NumPy
(float64), differentiated by tensor-product central differences with one
Richardson step: error O(h⁴), measured 3e-7 relative for the fourth
derivatives at h = 0.01 (where rounding, ~eps/h⁴, starts to dominate) and
below 2e-8 for the lower orders at h = 0.005.
"""

import warnings

import keras
import numpy as np
import pytest
from conftest import assert_close, f64, to_numpy

from keras_deriv import DerivativeModel, ZeroCurvatureWarning

# The stencils of the n-th derivative, second-order accurate, on offsets
# -2..2 (times h^-n).
STENCILS = {
    0: [0, 0, 1, 0, 0],
    1: [0, -0.5, 0, 0.5, 0],
    2: [0, 1, -2, 1, 0],
    3: [-0.5, 1, 0, -1, 0.5],
    4: [1, -4, 6, -4, 1],
}


def network(d, seed=0, normalize=True):
    """Dense tanh times Dense sigmoid, layer-normalised (unless not
    `normalize`: TensorFlow's and PyTorch's own higher derivatives of
    LayerNormalization are wrong, so the autodiff engine refuses it),
    concatenated with the input itself, a softmax layer, a linear output."""
    init = keras.initializers.GlorotUniform

    def dense(units, activation, i):
        return keras.layers.Dense(
            units,
            activation=activation,
            dtype="float64",
            kernel_initializer=init(seed + i),
            bias_initializer=keras.initializers.RandomUniform(-0.5, 0.5, seed + 9 + i),
        )

    x = keras.Input((d,), dtype="float64")
    h = dense(6, "tanh", 0)(x)
    g = dense(6, "sigmoid", 1)(x)
    p = keras.layers.Multiply(dtype="float64")([h, g])
    if normalize:
        p = keras.layers.LayerNormalization(
            dtype="float64",
            gamma_initializer=keras.initializers.RandomUniform(0.5, 1.5, seed + 20),
            beta_initializer=keras.initializers.RandomUniform(-0.5, 0.5, seed + 21),
        )(p)
    c = keras.layers.Concatenate(dtype="float64")([p, x])
    s = dense(4, "softmax", 2)(c)
    return keras.Model(x, dense(2, None, 3)(s))


def numpy_network(model):
    """The float64 NumPy forward pass of `network()`."""
    w = {
        layer.name: [to_numpy(v).astype("float64") for v in layer.weights]
        for layer in model.layers
    }
    dense = [
        layer.name for layer in model.layers if isinstance(layer, keras.layers.Dense)
    ]
    norm = next(
        (
            layer
            for layer in model.layers
            if isinstance(layer, keras.layers.LayerNormalization)
        ),
        None,
    )

    def forward(x):
        (k0, b0), (k1, b1), (k2, b2), (k3, b3) = (w[name] for name in dense)
        p = np.tanh(x @ k0 + b0) / (1 + np.exp(-(x @ k1 + b1)))
        if norm is not None:
            mean = p.mean(-1, keepdims=True)
            var = ((p - mean) ** 2).mean(-1, keepdims=True)
            gamma, beta = w[norm.name]
            p = (p - mean) / np.sqrt(var + norm.epsilon) * gamma + beta
        z = np.concatenate([p, x], -1) @ k2 + b2
        e = np.exp(z - z.max(-1, keepdims=True))
        return (e / e.sum(-1, keepdims=True)) @ k3 + b3

    return forward


def difference(f, x, counts, h):
    """∂^counts f at the rows of x, by the tensor product of the stencils."""
    total = 0.0
    d = x.shape[1]
    grids = np.meshgrid(*[np.arange(-2, 3)] * d, indexing="ij")
    for offsets in zip(*(g.ravel() for g in grids), strict=True):
        weight = np.prod(
            [STENCILS[c][o + 2] for c, o in zip(counts, offsets, strict=True)]
        )
        if weight:
            total = total + weight * f(x + h * np.asarray(offsets, "float64"))
    return total / h ** sum(counts)


def reference(f, x, counts, h4=0.01):
    """One Richardson step on the second-order differences: O(h⁴)."""
    h = h4 if sum(counts) == 4 else 0.005
    return (4 * difference(f, x, counts, h / 2) - difference(f, x, counts, h)) / 3


# float32 (JAX and torch round float64 to it): ~1e-7 per operation,
# amplified by the order and the interpolation's weights
TOL32 = {1: 2e-5, 2: 5e-5, 3: 2e-4, 4: 1e-3}

CASES = {
    "a mixed second partial": {"u_xy": "xy"},
    "two operators of order two": {"lap": {"xx": 1, "yy": 1}, "u_xy": "xy"},
    "a second-order operator with first-order terms": {
        "h": {"x": 1.0, "xy": 2.0, "yy": -1.0},
        "u_y": "y",
        "u_xx": "xx",
    },
    "order three with a first-order term": {
        "u_xxy": "xxy",
        "heat": {"y": 1.0, "xx": -0.1},
    },
    "the biharmonic and a mixed fourth partial": {
        "b": {"xxxx": 1, "xxyy": 2, "yyyy": 1},
        "u_xxyy": "xxyy",
        "u_x": "x",
    },
    "first order only": {"grad_sum": {"x": 1.0, "y": -2.0}, "u_y": "y"},
}


def counts(spec, names):
    return tuple(spec.count(c) for c in names)


def expected(f, x, partials, names, h4=0.01):
    out = {}
    for name, spec in partials.items():
        terms = {spec: 1.0} if isinstance(spec, str) else spec
        out[name] = sum(
            c * reference(f, x, counts(s, names), h4) for s, c in terms.items()
        )
    return out


@pytest.mark.parametrize("method", ["taylor", "autodiff"])
@pytest.mark.parametrize("case", list(CASES))
def test_partials_against_float64_differences(case, method):
    partials = CASES[case]
    model = network(2, normalize=method == "taylor")
    x = np.random.default_rng(1).uniform(-1, 1, size=(5, 2))
    layer = DerivativeModel(model, partials=partials, variables="xy", method=method)
    out = layer(f64(x))
    plan, scheme = layer._plan, layer._plan.taylor
    if (
        method == "taylor" and plan.order == 2
    ):  # one direction per variable, not per pair
        assert len(scheme.directions) == 2 < len(plan.directions)
    elif method == "taylor" and plan.order > 2:  # the collapsed highest order
        assert scheme.collapse is not None
        assert len(scheme.collapse) < len(plan.directions)
    refs = expected(numpy_network(model), x, partials, "xy")
    assert_close(to_numpy(out["y"]), numpy_network(model)(x), 1e-12, 1e-6)
    for name, ref in refs.items():
        assert np.abs(ref).max() > 1e-2, name  # not a check of 0 == 0
        spec = partials[name]
        order = len(spec) if isinstance(spec, str) else max(map(len, spec))
        # the differences' own error: below 2e-8 to order three, ~4e-6
        # (absolute) at order four
        tol64 = 1e-5 if order == 4 else 1e-6
        assert_close(to_numpy(out[name]), ref, tol64, TOL32[order], name)


def test_collapsed_in_three_variables():
    """d = 3: the biharmonic's six terms collapse into one coefficient."""
    model = network(3, seed=4)
    x = np.random.default_rng(2).uniform(-1, 1, size=(4, 3))
    bih = {"xxxx": 1, "yyyy": 1, "zzzz": 1, "xxyy": 2, "xxzz": 2, "yyzz": 2}
    partials = {"b": bih, "u_xyz": "xyz"}
    layer = DerivativeModel(model, partials=partials, variables="xyz", method="taylor")
    out = layer(f64(x))
    assert layer._plan.collapse is not None
    # 125-point stencils round more: h = 0.02 is best here (2e-7 relative)
    refs = expected(numpy_network(model), x, partials, "xyz", h4=0.02)
    for name, ref in refs.items():
        assert np.abs(ref).max() > 1e-2, name
        assert_close(to_numpy(out[name]), ref, 1e-6, TOL32[4], name)


@pytest.mark.parametrize(
    "partials", [{"u_xy": "xy"}, {"b": {"xxxx": 1, "xxyy": 2, "yyyy": 1}}]
)
def test_a_loss_on_zero_partials_of_a_relu_network_trains(partials):
    """Exact zeros (u_xy of a ReLU net) still train as nested autodiff
    would: a loss on them alone gives zero gradients, not "No gradients"."""
    net = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(4, activation="relu"),
            keras.layers.Dense(1),
        ]
    )
    inputs = keras.Input((2,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ZeroCurvatureWarning)
        layer = DerivativeModel(net, partials=partials, variables="xy", method="taylor")
        out = layer(inputs)
    name = next(iter(partials))
    model = keras.Model(inputs, {name: out[name]})
    model.compile("adam", {name: "mse"})
    x = np.random.default_rng(0).uniform(-1, 1, size=(8, 2)).astype("float32")
    history = model.fit(x, {name: np.ones((8, 1), "float32")}, epochs=1, verbose=0)
    assert history.history["loss"][0] == 1.0  # u_xy is 0: the loss is (0 - 1)²


@pytest.mark.parametrize("d, count", [(2, 3), (3, 6)])
def test_the_biharmonic_is_taken_along_a_spherical_design(d, count):
    """Δ² along 3 directions in 2-D and 6 in 3-D (interpolation takes 5 and
    12); its values are checked above (3-D) and against the closed form in
    test_partials (2-D)."""
    names = "xyz"[:d]
    bih = {a * 4: 1 for a in names}
    bih.update({a * 2 + b * 2: 2 for i, a in enumerate(names) for b in names[i + 1 :]})
    layer = DerivativeModel(network(d), partials={"b": bih}, variables=names)
    layer.build((None, d))
    assert len(layer._plan.directions) == count
    # an operator the design cannot represent keeps the interpolation
    u_xxyy = names[0] * 2 + names[1] * 2
    layer = DerivativeModel(network(d), partials={"u": u_xxyy}, variables=names)
    layer.build((None, d))
    assert len(layer._plan.directions) == 5
