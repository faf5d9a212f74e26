"""Hutchinson's randomized operators: unbiased against closed forms, with the
variance the theory gives (so falling as 1/k), gradients that flow, draws
that advance per call and survive saving, and clear errors.

The references are closed forms of a one-hidden-layer tanh network
f = w2·tanh(W1ᵀx + b1) + b2, computed in NumPy float64: ∇f = W1 (w2 ⊙ t')
and H = W1 diag(w2 ⊙ t'') W1ᵀ with t' = 1 - t², t'' = -2 t (1 - t²).
Means are checked against them within four standard errors of the draws
(the seeds are fixed, so the outcome is too): with up to a dozen means per
test, three standard errors each would fail about 3% of seeds by chance
(one of ~100 means here did, at 3.2), four about 0.1%, while a wrong
scale or sign is off by tens; variances against the
theory, 2 Σ_{i≠j} H_ij² / k for Rademacher directions and 2 Σ_ij H_ij² / k
for Gaussian ones, within 30% (the sample variance of 400 draws has a
relative standard error of about 7–15% here).
"""

import os

import keras
import numpy as np
import pytest
from conftest import (
    BACKEND,
    assert_named_output_trains,
    f64,
    mlp,
    to_numpy,
)

from keras_deriv import DerivativeModel, Hutchinson, laplacian

ENGINES = ("taylor", "autodiff")
DRAWS = 400


def closed_form(net, x):
    """`(gradient (n, d), Hessian (n, d, d))` of a one-hidden-layer tanh
    `mlp` with one output, in float64."""
    (w1, b1), (w2, _) = [
        [to_numpy(v).astype("float64") for v in layer.weights] for layer in net.layers
    ]
    t = np.tanh(np.asarray(x, "float64") @ w1 + b1)
    a1 = w2[:, 0] * (1 - t**2)
    a2 = w2[:, 0] * (-2 * t * (1 - t**2))
    gradient = a1 @ w1.T
    hessian = np.einsum("ij,nj,kj->nik", w1, a2, w1)
    return gradient, hessian


def operator_value(gradient, hessian, operator):
    total = 0.0
    for index, c in operator.items():
        if len(index) == 1:
            total = total + c * gradient[:, index[0]]
        else:
            total = total + c * hessian[:, index[0], index[1]]
    return total


def draws(layer, x, n):
    """`{name: (n, points)}`: n estimates at the points `x`, one draw each
    (predict over n copies of `x`, one batch per copy)."""
    inputs = keras.Input((x.shape[1],), dtype=str(x.dtype))
    model = keras.Model(inputs, layer(inputs))
    out = model.predict(np.tile(x, (n, 1)), batch_size=len(x), verbose=0)
    return {
        k: np.asarray(v, "float64").reshape(n, len(x))
        for k, v in out.items()
        if k != "y"
    }


OPERATORS = {
    "lap": laplacian(5),
    # indefinite, with mixed partials and a first-order part
    "op": {(0, 0): 2.0, (1, 2): 1.0, (3, 3): -0.5, (4,): 0.7, (0, 4): -0.3},
}


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
@pytest.mark.parametrize("method", ENGINES)
def test_the_mean_of_many_draws_is_the_exact_operator(method, distribution):
    net = mlp(5, (12,), 1, dtype="float32", seed=3)
    x = np.random.default_rng(1).uniform(-1, 1, (3, 5)).astype("float32")
    layer = DerivativeModel(
        net,
        partials=OPERATORS,
        estimator=Hutchinson(4, distribution, seed=7),
        method=method,
    )
    got = draws(layer, x, DRAWS)
    assert layer.engine == method
    gradient, hessian = closed_form(net, x)
    for name, operator in OPERATORS.items():
        exact = operator_value(gradient, hessian, operator)
        mean = got[name].mean(0)
        standard_error = got[name].std(0, ddof=1) / np.sqrt(DRAWS)
        assert (standard_error > 1e-5).all(), "the draws do not vary"
        assert (np.abs(mean - exact) <= 4 * standard_error).all(), (
            name,
            mean,
            exact,
            standard_error,
        )


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
def test_the_variance_is_the_theory_over_k(distribution):
    net = mlp(5, (12,), 1, dtype="float32", seed=4)
    x = np.random.default_rng(2).uniform(-1, 1, (2, 5)).astype("float32")
    _, hessian = closed_form(net, x)
    squares = hessian**2
    if distribution == "rademacher":
        squares = squares * (1 - np.eye(5))
    theory = 2 * squares.sum(axis=(1, 2))
    for k in (1, 8):
        layer = DerivativeModel(
            net,
            partials={"lap": laplacian(5)},
            estimator=Hutchinson(k, distribution, seed=k),
        )
        variance = draws(layer, x, DRAWS)["lap"].var(0, ddof=1)
        np.testing.assert_allclose(variance, theory / k, rtol=0.3, err_msg=f"k={k}")


@pytest.mark.parametrize("method", ENGINES)
def test_weight_gradients_of_a_loss_on_a_fixed_draw(method):
    net = mlp(4, (6,), 1, activation="tanh", seed=11)
    x = f64(np.random.default_rng(0).uniform(-1, 1, size=(4, 4)))
    operator = {(0, 0): 1.0, (1, 1): 1.0, (2, 3): 0.5, (0,): 1.0}
    layer = DerivativeModel(
        net,
        partials={"op": operator},
        estimator=Hutchinson(3, seed=5, resample=False),
        method=method,
    )

    first = to_numpy(layer(x)["op"])
    np.testing.assert_array_equal(first, to_numpy(layer(x)["op"]))  # a fixed draw
    assert_named_output_trains(layer, x, "op")


def test_separate_inputs_exact_time_derivative_estimated_laplacian():
    """u_t - Δ_x u on a model with inputs x (3 features) and t: the time
    derivative is exact, the Laplacian estimated."""
    x_in, t_in = keras.Input((3,), name="x"), keras.Input((1,), name="t")
    joined = keras.layers.Concatenate()([x_in, t_in])
    dense = mlp(4, (10,), 1, dtype="float32", seed=6)
    net = keras.Model([x_in, t_in], dense(joined))
    layer = DerivativeModel(
        net,
        partials={"heat": {"t": 1.0, "xx": -1.0, "yy": -1.0, "zz": -1.0}},
        variables={"x": "xyz", "t": "t"},
        estimator=Hutchinson(2, seed=1),
    )
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (3, 3)).astype("float32")
    t = rng.uniform(0, 1, (3, 1)).astype("float32")
    model = keras.Model([x_in, t_in], layer([x_in, t_in]))
    out = model.predict(
        [np.tile(x, (DRAWS, 1)), np.tile(t, (DRAWS, 1))], batch_size=3, verbose=0
    )
    got = np.asarray(out["heat"], "float64").reshape(DRAWS, 3)
    gradient, hessian = closed_form(dense, np.concatenate([x, t], axis=1))
    exact = gradient[:, 3] - np.trace(hessian[:, :3, :3], axis1=1, axis2=2)
    standard_error = got.std(0, ddof=1) / np.sqrt(DRAWS)
    assert (standard_error > 1e-5).all()
    assert (np.abs(got.mean(0) - exact) <= 4 * standard_error).all()


def test_only_the_time_derivative_is_exact_every_draw():
    """An operator of order one has nothing random: every draw is exact."""
    net = mlp(3, (8,), 1, dtype="float32", seed=2)
    x = np.random.default_rng(4).uniform(-1, 1, (4, 3)).astype("float32")
    layer = DerivativeModel(
        net,
        partials={"drift": {(0,): 1.0, (2,): -2.0}, "lap": laplacian(3)},
        estimator=Hutchinson(2, seed=0),
    )
    got = draws(layer, x, 5)
    gradient, _ = closed_form(net, x)
    exact = gradient[:, 0] - 2 * gradient[:, 2]
    np.testing.assert_allclose(got["drift"], np.tile(exact, (5, 1)), atol=1e-5)
    assert np.ptp(got["lap"], axis=0).min() > 0  # the Laplacian is random


def test_draws_advance_per_call_and_a_seed_reproduces_them():
    net = mlp(6, (8,), 1, dtype="float32", seed=1)
    x = np.random.default_rng(5).uniform(-1, 1, (2, 6)).astype("float32")

    def run(estimator):
        layer = DerivativeModel(
            net, partials={"lap": laplacian(6)}, estimator=estimator
        )
        return [to_numpy(layer(x)["lap"]) for _ in range(3)]

    first, again = run(Hutchinson(2, seed=9)), run(Hutchinson(2, seed=9))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], first[1])
    fixed = run(Hutchinson(2, seed=9, resample=False))
    np.testing.assert_array_equal(fixed[0], fixed[2])
    other = run(Hutchinson(2, seed=10))
    assert not np.array_equal(first[0], other[0])


def test_a_model_with_an_estimator_saves_and_resumes_its_draws(tmp_path):
    net = mlp(4, (8,), 1, dtype="float32", seed=2)
    inputs = keras.Input((4,))
    layer = DerivativeModel(
        net,
        partials={"lap": laplacian(4)},
        estimator=Hutchinson(3, "gaussian", seed=4),
    )
    model = keras.Model(inputs, layer(inputs))
    x = np.random.default_rng(6).uniform(-1, 1, (3, 4)).astype("float32")
    model.predict(x, verbose=0)  # one draw: the state has moved
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)  # safe mode, no custom_objects
    inner = next(lay for lay in loaded.layers if isinstance(lay, DerivativeModel))
    assert inner.estimator == Hutchinson(3, "gaussian", seed=4)
    np.testing.assert_array_equal(
        model.predict(x, verbose=0)["lap"], loaded.predict(x, verbose=0)["lap"]
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"order": 2, "estimator": Hutchinson()},
            ValueError,
            "estimates the operators",
        ),
        (
            {"partials": {"b": {(0, 0, 1, 1): 1.0}}, "estimator": Hutchinson()},
            ValueError,
            "order at most two",
        ),
        (
            {"partials": {"l": laplacian(2)}, "estimator": "hutchinson"},
            TypeError,
            "Hutchinson",
        ),
        (
            {
                "partials": {"l": {(0, 0): 1.0, (1, 1): -1.0, (0, 0, 1): 0.0}},
                "estimator": {},
            },
            ValueError,
            "order at most two",
        ),
    ],
)
def test_bad_estimator_options_are_clear_errors(kwargs, error, match):
    net = mlp(2, (4,), 1, dtype="float32")
    with pytest.raises(error, match=match):
        DerivativeModel(net, **kwargs).build((None, 2))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"directions": 0}, ValueError, "at least 1"),
        ({"directions": 2.5}, TypeError, "int >= 1"),
        ({"distribution": "normal"}, ValueError, "distribution"),
        ({"seed": "1"}, TypeError, "seed"),
        ({"resample": 1}, TypeError, "resample"),
    ],
)
def test_bad_hutchinson_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        Hutchinson(**kwargs)


def test_a_dense_mixed_operator_beyond_the_limit_is_refused():
    from keras_deriv.engines import random_directions

    d = random_directions.MAX_DENSE_VARIABLES + 1
    operator = {**laplacian(d), (0, 1): 1.0}
    net = mlp(d, (2,), 1, dtype="float32")
    with pytest.raises(ValueError, match="dense"):
        DerivativeModel(net, partials={"op": operator}, estimator=Hutchinson()).build(
            (None, d)
        )


def test_two_outputs_of_one_operator_are_independent_estimates():
    """Their product's mean is the square of the exact operator (a squared
    single estimate's mean would add its variance)."""
    net = mlp(5, (12,), 1, dtype="float32", seed=8)
    x = np.random.default_rng(7).uniform(-1, 1, (3, 5)).astype("float32")
    layer = DerivativeModel(
        net,
        partials={"a": laplacian(5), "b": laplacian(5)},
        estimator=Hutchinson(2, seed=2),
    )
    got = draws(layer, x, DRAWS)
    _, hessian = closed_form(net, x)
    exact = np.trace(hessian, axis1=1, axis2=2)
    for point in range(3):
        assert abs(np.corrcoef(got["a"][:, point], got["b"][:, point])[0, 1]) < 0.2
    product = got["a"] * got["b"]
    standard_error = product.std(0, ddof=1) / np.sqrt(DRAWS)
    assert (np.abs(product.mean(0) - exact**2) <= 4 * standard_error).all()
    square = got["a"] ** 2  # biased: exact² + variance
    assert (square.mean(0) - exact**2 > 0).all()


def test_derivatives_estimates_per_chunk_and_repeats_a_seeded_call():
    from keras_deriv import derivatives

    net = mlp(5, (12,), 1, dtype="float32", seed=3)
    x = np.random.default_rng(1).uniform(-1, 1, (3, 5)).astype("float32")
    many = np.tile(x, (DRAWS, 1))
    options = {"partials": {"lap": laplacian(5)}, "batch_size": 3, "verbose": 0}
    got = derivatives(net, many, estimator=Hutchinson(4, seed=1), **options)["lap"]
    again = derivatives(net, many, estimator=Hutchinson(4, seed=1), **options)["lap"]
    np.testing.assert_array_equal(got, again)
    got = np.asarray(got, "float64").reshape(DRAWS, 3)
    _, hessian = closed_form(net, x)
    exact = np.trace(hessian, axis1=1, axis2=2)
    standard_error = got.std(0, ddof=1) / np.sqrt(DRAWS)
    assert (standard_error > 1e-5).all()
    assert (np.abs(got.mean(0) - exact) <= 4 * standard_error).all()
    with pytest.raises(ValueError, match="estimates the operators"):
        derivatives(net, x, estimator=Hutchinson())
    exact_run = derivatives(net, x, partials={"lap": laplacian(5)}, precision="highest")
    np.testing.assert_allclose(exact_run["lap"][:, 0], exact, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="a TensorFlow autodiff defect")
def test_no_fallback_to_an_autodiff_engine_known_wrong():
    """LayerNormalization's second derivatives are wrong on TensorFlow's
    autodiff; a rank-3 Dot makes the Taylor engine give up at call time.
    The estimator must refuse, as the exact path does, not fall back."""
    inputs = keras.Input((4,))
    h = keras.layers.Dense(6, activation="tanh")(inputs)
    h = keras.layers.LayerNormalization()(h)
    a = keras.layers.Reshape((2, 3))(h)
    dot = keras.layers.Dot(axes=-1)([a, a])
    net = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(dot)))
    x = np.random.default_rng(0).uniform(-1, 1, (3, 4)).astype("float32")
    for estimator in (None, Hutchinson(4, seed=0)):
        layer = DerivativeModel(
            net, partials={"lap": laplacian(4)}, estimator=estimator
        )
        with pytest.raises(ValueError, match="would compute wrong derivatives"):
            layer(x)


def test_small_coefficients_are_estimated_not_dropped():
    """A mixed operator with coefficients of 1e-13 is 1e-13 times the one
    with coefficients 1, draw for draw (a relative cut-off in the
    factorization, not an absolute one)."""
    net = mlp(3, (8,), 1, dtype="float32", seed=5)
    x = np.random.default_rng(8).uniform(-1, 1, (4, 3)).astype("float32")
    results = []
    for c in (1.0, 1e-13):
        layer = DerivativeModel(
            net,
            partials={"op": {(0, 1): c, (2, 2): c}},
            estimator=Hutchinson(4, seed=3),
        )
        results.append(to_numpy(layer(x)["op"]).astype("float64"))
    assert np.abs(results[0]).max() > 1e-3
    np.testing.assert_allclose(results[1], 1e-13 * results[0], rtol=1e-4)


def test_a_fixed_draw_still_gives_each_output_its_own_directions():
    net = mlp(8, (8,), 1, dtype="float32", seed=6)
    x = np.random.default_rng(9).uniform(-1, 1, (64, 8)).astype("float32")
    layer = DerivativeModel(
        net,
        partials={"a": laplacian(8), "b": laplacian(8)},
        estimator=Hutchinson(4, seed=3, resample=False),
    )
    first, again = layer(x), layer(x)
    np.testing.assert_array_equal(to_numpy(first["a"]), to_numpy(again["a"]))
    assert not np.allclose(to_numpy(first["a"]), to_numpy(first["b"]))


def test_seeds_out_of_every_backends_range_are_refused():
    for seed in (-1, 2**31):
        with pytest.raises(ValueError, match="seed"):
            Hutchinson(seed=seed)
