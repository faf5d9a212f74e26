"""Pure partials of order 3 and up on JAX's autodiff engine are
differentiated through `jax.experimental.jet` where the caller allows it
(`jet=True`: DerivativeModel, for models of registered layers): values
nested jvps outside a transformation, the jet's under one;
keras_deriv/backend/jax.py. Checked against closed forms, float64
finite differences in the weights, nested jvps, and by convergence."""

import math

import keras
import numpy as np
import pytest
from conftest import BACKEND, to_numpy
from keras import ops

from keras_deriv import DerivativeModel

pytestmark = pytest.mark.skipif(BACKEND != "jax", reason="a JAX engine")

if BACKEND == "jax":
    import jax
    import jax.numpy as jnp

    from keras_deriv.backend import jax as engine


# -- closed forms --------------------------------------------------------


def tanh_derivatives(u):
    """tanh and its first four derivatives, in terms of u = tanh(s)."""
    v = 1 - u**2
    return [u, v, -2 * u * v, -2 * v * (1 - 3 * u**2), 8 * u * v * (2 - 3 * u**2)]


def faa_di_bruno(g, h):
    """The first four derivatives of g(h(t)) from those of g (at h) and h."""
    return [
        g[1] * h[1],
        g[2] * h[1] ** 2 + g[1] * h[2],
        g[3] * h[1] ** 3 + 3 * g[2] * h[1] * h[2] + g[1] * h[3],
        g[4] * h[1] ** 4
        + 6 * g[3] * h[1] ** 2 * h[2]
        + g[2] * (4 * h[1] * h[3] + 3 * h[2] ** 2)
        + g[1] * h[4],
    ]


def sin_tanh_closed_form(w1, b1, w2, b2, x):
    """y = tanh(sum_j w2_j sin(x . w1_j + b1_j) + b2) and its pure partials
    `[y, D1, ..., D4]`, `(B, 1, d)` each (y `(B, 1)`), in float64."""
    theta = x @ w1 + b1  # (B, n)
    u = np.tanh(np.sin(theta) @ w2 + b2)  # (B, 1)
    g = tanh_derivatives(u)
    levels = [[] for _ in range(4)]
    for i in range(x.shape[1]):
        # d^k/dx_i^k sin(theta_j) = w1_ij^k sin(theta_j + k pi / 2)
        h = [None] + [
            (w1[i] ** k * np.sin(theta + k * np.pi / 2)) @ w2 for k in range(1, 5)
        ]
        for k, level in enumerate(faa_di_bruno(g, h)):
            levels[k].append(level)
    return [u, *[np.stack(level, -1) for level in levels]]


SIN_TANH = {
    "w1": np.array([[0.9, -1.3, 0.4], [0.6, 0.8, -1.1]]),
    "b1": np.array([0.1, -0.3, 0.5]),
    "w2": np.array([[0.7], [-0.5], [1.2]]),
    "b2": np.array([0.2]),
}


def sin_tanh_net():
    net = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(3, activation=ops.sin),
            keras.layers.Dense(1, activation="tanh"),
        ]
    )
    net.set_weights([SIN_TANH[k].astype("float32") for k in ("w1", "b1", "w2", "b2")])
    return net


def points(n=16, d=2, seed=0):
    x = np.random.default_rng(seed).uniform(-1.5, 1.5, (n, d)).astype("float32")
    x[0] = 0.0  # exact zeros: ties of max and abs, zero preactivations
    return x


def close(got, ref, tol, err_msg=""):
    """Within `tol` of `ref`'s scale (at least 1), absolutely: the
    derivatives cross zero, so a relative tolerance means nothing there."""
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(got, ref, rtol=0, atol=tol * scale, err_msg=err_msg)


def jet_levels(f, x, order, wrt, tangent):
    """`nested_derivatives`'s levels as its jet computes them (the primal
    of a jvp, which the custom rule makes by a jet), and their tangents."""
    return jax.jvp(
        lambda z: engine.nested_derivatives(f, z, order, False, wrt, jet=True),
        (x,),
        (tangent,),
    )


# float32 through a few operations, fourth derivatives of weights of order 1
TOL32 = 2e-5


@pytest.mark.parametrize("order", [3, 4])
def test_sin_tanh_partials_match_the_closed_form(order):
    net = sin_tanh_net()
    x = points()
    ref = sin_tanh_closed_form(**SIN_TANH, x=x.astype("float64"))
    f = lambda z: net(z)  # noqa: E731
    assert engine.differentiates_by_jet(f, x, order)
    values = DerivativeModel(net, order=order, method="autodiff")(x)
    by_jet, tangents = jet_levels(f, jnp.asarray(x), order, (0, 1), jnp.zeros_like(x))
    for k in range(order + 1):
        close(to_numpy(values[k]), ref[k], TOL32, f"values, order {k}")
        close(np.asarray(by_jet[k]), ref[k], TOL32, f"jet, order {k}")


def test_the_jets_tangents_are_the_next_partials():
    """What a training step differentiates: the jvp of each level along
    e_i is the next pure partial along x_i (the last against the closed
    form of order 4)."""
    net = sin_tanh_net()
    x = points()
    ref = sin_tanh_closed_form(**SIN_TANH, x=x.astype("float64"))
    f = lambda z: net(z)  # noqa: E731
    for i in range(2):
        tangent = jnp.zeros_like(x).at[:, i].set(1.0)
        _, tangents = jet_levels(f, jnp.asarray(x), 3, (i,), tangent)
        close(np.asarray(tangents[0]), ref[1][..., i], TOL32, f"dy/dx{i}")
        for k in range(1, 4):
            close(np.asarray(tangents[k][..., 0]), ref[k + 1][..., i], TOL32, f"{k}")


def test_fourth_derivative_of_a_quartic_is_exact():
    """A jet's own factorial scaling (exp(lgamma(5)) = 24.00002 in float32)
    is not used: D^4 x^4 is 24 to float32 rounding."""
    x = jnp.asarray(points(d=1))
    by_jet, _ = jet_levels(lambda z: z**4, x, 4, (0,), jnp.zeros_like(x))
    np.testing.assert_allclose(np.asarray(by_jet[4]), 24.0, rtol=1e-7)
    np.testing.assert_allclose(np.asarray(by_jet[3])[..., 0], 24 * x, rtol=1e-6)


# -- training ------------------------------------------------------------


def mlp64(activation, seed=0):
    """A 2 -> 8 -> 8 -> 1 network as a function of its float64 weights."""
    rng = np.random.default_rng(seed)
    shapes = [(2, 8), (8,), (8, 8), (8,), (8, 1), (1,)]
    params = [jnp.asarray(rng.normal(0, 0.8, s), jnp.float64) for s in shapes]

    def net(params, z):
        w1, b1, w2, b2, w3, b3 = params
        h = activation(activation(z @ w1 + b1) @ w2 + b2)
        return h @ w3 + b3

    return net, params


@pytest.mark.parametrize("order", [3, 4])
@pytest.mark.parametrize(
    "activation,by_jet", [("tanh", True), ("sin", True), ("softplus", False)]
)
def test_weight_gradients_match_float64_finite_differences(order, activation, by_jet):
    """A loss on d2y, d3y (and d4y): its gradient in the weights, through
    the jet (or nested jvps for softplus, a custom_jvp), against central
    differences in float64 (64-bit JAX only inside this test)."""
    fn = {"tanh": jnp.tanh, "sin": jnp.sin, "softplus": jax.nn.softplus}[activation]
    with jax.enable_x64(True):
        net, params = mlp64(fn)
        x = jnp.asarray(points(n=12), jnp.float64)

        def loss(params):
            f = lambda z: net(params, z)  # noqa: E731
            levels = engine.nested_derivatives(f, x, order, False, (0, 1), jet=True)
            return sum(jnp.mean(t**2) for t in levels[2:])

        assert (
            engine.differentiates_by_jet(lambda z: net(params, z), x, order) is by_jet
        )
        grad = jax.grad(loss)(params)
        rng = np.random.default_rng(1)
        for _ in range(3):
            u = [jnp.asarray(rng.normal(size=p.shape)) for p in params]

            def slope(h, u=u):
                plus = loss([p + h * d for p, d in zip(params, u, strict=True)])
                minus = loss([p - h * d for p, d in zip(params, u, strict=True)])
                return float((plus - minus) / (2 * h))

            # Richardson: the h^2 error of central differences cancels; left
            # are ~h^4 times the fifth derivative and rounding ~1e-16 |L| / h.
            h = 2e-4
            fd = (4 * slope(h / 2) - slope(h)) / 3
            exact = sum(float(jnp.vdot(g, d)) for g, d in zip(grad, u, strict=True))
            assert abs(exact - fd) <= 1e-8 * max(1.0, abs(fd)), (exact, fd)


def test_a_keras_training_step_matches_nested_jvps():
    """The weight gradient of a loss on d3y through DerivativeModel in a
    stateless call (as Keras's JAX trainer takes it) equals the one
    through nested jvps written out here."""
    keras.utils.set_random_seed(0)
    net = keras.Sequential(
        [keras.Input((2,))]
        + [keras.layers.Dense(16, activation="tanh") for _ in range(2)]
        + [keras.layers.Dense(1)]
    )
    inputs = keras.Input((2,))
    model = keras.Model(
        inputs, DerivativeModel(net, order=3, method="autodiff")(inputs)
    )
    x = jnp.asarray(points())
    weights = [v.value for v in model.trainable_variables]

    def through_library(weights):
        levels = model.stateless_call(weights, [], x)[0]
        return jnp.mean(levels[3] ** 2) + jnp.mean(levels[2] ** 2)

    def through_nested_jvps(weights):
        f = lambda z: net.stateless_call(weights, [], z)[0]  # noqa: E731

        def along(g, v):
            return lambda z: jax.jvp(g, (z,), (v,))[1]

        loss = 0.0
        for i in range(2):
            v = jnp.zeros_like(x).at[:, i].set(1.0)
            d2 = along(along(f, v), v)
            d3 = along(d2, v)
            loss += (jnp.sum(d3(x) ** 2) + jnp.sum(d2(x) ** 2)) / (2 * x.shape[0])
        return loss

    got = jax.jit(jax.grad(through_library))(weights)
    ref = jax.grad(through_nested_jvps)(weights)
    for g, r in zip(got, ref, strict=True):
        close(np.asarray(g), np.asarray(r), 1e-5)


def test_fit_on_a_third_derivative_converges():
    """y = sin(x) learned from y and y''' = -cos(x) through the jet."""
    keras.utils.set_random_seed(0)
    inner = keras.Sequential(
        [keras.Input((1,))]
        + [keras.layers.Dense(24, activation="tanh") for _ in range(2)]
        + [keras.layers.Dense(1)]
    )
    inputs = keras.Input((1,))
    layer = DerivativeModel(inner, order=3, method="autodiff")
    outputs = dict(zip(layer.output_keys, layer(inputs), strict=True))
    model = keras.Model(inputs, {"y": outputs["y"], "d3y": outputs["d3y"]})
    x = np.linspace(-1, 1, 64, dtype="float32").reshape(-1, 1)
    targets = {"y": np.sin(x), "d3y": -np.cos(x)[..., None]}
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    history = model.fit(x, targets, batch_size=32, epochs=80, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.05 * losses[0]
    assert engine.differentiates_by_jet(inner, x, 3) and layer._traceable_once()


# -- which layers a jet takes --------------------------------------------


def with_activation(activation, normalize=False):
    keras.utils.set_random_seed(0)
    layers = [keras.Input((3,)), keras.layers.Dense(6, activation=activation)]
    if normalize:
        layers.append(keras.layers.LayerNormalization())
    return keras.Sequential([*layers, keras.layers.Dense(1, activation="tanh")])


JET_TAKES = [
    "tanh",
    "sigmoid",
    "gelu",
    keras.activations.gelu,  # approximate=False: erf
    "silu",
    "elu",
    "selu",
    "softsign",
    "exponential",
    "softmax",
    "log_softmax",
    "linear",
]
# custom_jvp functions (a jet ignores their rules), `min` with a scalar
# (`celu`: its jet rule cannot broadcast), primitives without a jet rule
JET_CANNOT = [
    "relu",
    "relu6",
    "softplus",
    "mish",
    "log_sigmoid",
    "hard_sigmoid",
    "hard_silu",
    "celu",
    ops.arctan,
    ops.tan,
]


def approximate_gelu(z):
    return keras.activations.gelu(z, approximate=True)


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("activation", [*JET_TAKES, approximate_gelu])
def test_layers_a_jet_takes_agree_with_nested_jvps(activation, normalize):
    """Where the engine differentiates through a jet, the jet's values are
    the nested jvps' (zeros of the preactivations included: the first
    point is the origin, and the biases start at zero)."""
    net = with_activation(activation, normalize)
    x = jnp.asarray(points(d=3))
    if normalize:
        # At the origin the normalized units all vanish: a variance of 0,
        # where fourth derivatives of rsqrt(variance + 1e-3) reach 3e8, and
        # either method's float32 rounding ~0.1 of the output's scale.
        x = x[1:]
    f = lambda z: net(z)  # noqa: E731
    assert engine.differentiates_by_jet(f, x, 4)
    values = engine.nested_derivatives(f, x, 4, False, (0, 1, 2))
    by_jet, _ = jet_levels(f, x, 4, (0, 1, 2), jnp.zeros_like(x))
    for k, (a, b) in enumerate(zip(values, by_jet, strict=True)):
        close(np.asarray(b), np.asarray(a), 1e-4, f"order {k}")


@pytest.mark.parametrize("activation", JET_CANNOT)
def test_layers_a_jet_cannot_take_keep_nested_jvps(activation):
    net = with_activation(activation)
    x = jnp.asarray(points(d=3))
    f = lambda z: net(z)  # noqa: E731
    assert not engine.differentiates_by_jet(f, x, 3)
    values = engine.nested_derivatives(f, x, 3, False, (0, 1, 2))
    again, _ = jet_levels(f, x, 3, (0, 1, 2), jnp.zeros_like(x))
    for a, b in zip(values, again, strict=True):
        np.testing.assert_array_equal(np.asarray(b), np.asarray(a))


def test_lower_orders_and_the_full_hessian_keep_nested_jvps():
    f = lambda z: jnp.tanh(z)  # noqa: E731
    x = points(d=2)
    assert engine.JET_FROM_ORDER == 3
    assert not engine.differentiates_by_jet(f, x, 2)
    assert not engine.differentiates_by_jet(f, x, 2, full_hessian=True)
    assert engine.differentiates_by_jet(f, x, 3)
    assert math.isclose(
        float(engine.nested_derivatives(f, x, 3, False, (0,))[3][1, 0, 0]),
        float(-2 * (1 - np.tanh(x[1, 0]) ** 2) * (1 - 3 * np.tanh(x[1, 0]) ** 2)),
        rel_tol=1e-5,
    )


def bucketed(w):
    """tanh(z w) (1 + q) with q = int(3 z_0): a float cast to an integer,
    whose jet truncates the series where its jvp gives zero."""

    def f(z):
        q = ops.cast(ops.cast(3.0 * z[:, :1], "int32"), "float32")
        return jnp.tanh(z @ w) * (1.0 + q)

    return f


def test_a_cast_to_an_integer_keeps_nested_jvps():
    w = jnp.array([[0.7], [-0.4]])
    x = jnp.array([[0.2, 0.1], [0.5, -0.3]], jnp.float32)
    assert not engine.differentiates_by_jet(bucketed(w), x, 3)
    # Casts that keep floats floats, or make floats of booleans, do not.
    smooth = lambda z: ops.cast(jnp.tanh(z), "float16") * (z > 0)  # noqa: E731
    assert engine.differentiates_by_jet(smooth, x, 3)

    def loss(w, jet):
        levels = engine.nested_derivatives(bucketed(w), x, 3, False, (0, 1), jet=jet)
        return jnp.sum(levels[3] ** 2)

    got, ref = jax.grad(loss)(w, True), jax.grad(loss)(w, False)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(ref))
    assert np.all(np.isfinite(np.asarray(ref))) and np.any(np.asarray(ref) != 0)


def test_values_outside_a_transformation_are_nested_jvps():
    f = lambda z: jnp.tanh(z) * jnp.sin(z)  # noqa: E731
    x = jnp.asarray(points())
    got = engine.nested_derivatives(f, x, 3, False, (0, 1), jet=True)
    ref = engine.nested_derivatives(f, x, 3, False, (0, 1))
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


class Counter(keras.layers.Layer):
    """Counts its calls in a variable: a state update in `call`."""

    def build(self, shape):
        self.n = self.add_weight(shape=(), initializer="zeros", trainable=False)

    def call(self, z):
        self.n.assign(self.n + 1.0)
        return z


def fit_third_derivative(first):
    keras.utils.set_random_seed(0)
    net = keras.Sequential(
        [keras.Input((2,)), first, keras.layers.Dense(1, activation="tanh")]
    )
    inputs = keras.Input((2,))
    layer = DerivativeModel(net, order=3, method="autodiff")
    model = keras.Model(inputs, layer(inputs)[3])
    model.compile("adam", "mse")
    x = points(n=32)
    history = model.fit(
        x, np.zeros((32, 1, 2), "float32"), epochs=2, batch_size=16, verbose=0
    )
    assert not layer._traceable_once()
    return history.history["loss"]


def test_layers_that_update_their_state_train_by_nested_jvps():
    """A jet replays one trace of the model, without its state updates:
    models with layers of their own (where such updates live) keep nested
    jvps, and train as at order 2."""
    spectral = keras.layers.SpectralNormalization(
        keras.layers.Dense(8, activation="tanh")
    )
    assert all(np.isfinite(fit_third_derivative(spectral)))
    counter = Counter()
    assert all(np.isfinite(fit_third_derivative(counter)))
    # Its updates reach the variable (a jet's trace would have leaked them).
    assert float(counter.n.value) > 0
