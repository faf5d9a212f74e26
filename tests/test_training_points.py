"""`point_sets`: several kinds of training points as one `fit`'s arrays."""

import keras
import numpy as np
import pytest

from keras_deriv import DerivativeModel, point_sets


def pinn(d=1, **options):
    net = keras.Sequential(
        [
            keras.Input((d,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(1),
        ]
    )
    inputs = keras.Input((d,))
    layer = DerivativeModel(net, **options)
    return keras.Model(inputs, dict(zip(layer.output_keys, layer(inputs), strict=True)))


def test_targets_and_weights_select_each_sets_points():
    model = pinn(order=2)
    inside = np.linspace(0.1, 0.9, 5).reshape(-1, 1)
    rhs = np.arange(5.0).reshape(-1, 1, 1)
    x, y, w = point_sets(
        model,
        interior=(inside, {"d2y": rhs}),
        boundary=(np.array([[0.0], [1.0]]), {"y": 1.5}, 10.0),
    )
    np.testing.assert_array_equal(x[:, 0], np.r_[inside[:, 0], 0.0, 1.0])
    assert set(y) == set(w) == {"y", "d2y"}  # no target, no loss: dy is left out
    np.testing.assert_array_equal(w["d2y"], [1, 1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(w["y"], [0, 0, 0, 0, 0, 10, 10])
    np.testing.assert_array_equal(y["d2y"][:5], rhs)
    np.testing.assert_array_equal(y["y"][5:], [[1.5], [1.5]])
    assert y["d2y"].shape == (7, 1, 1) and y["y"].shape == (7, 1)
    model.compile("adam", loss={"y": "mse", "d2y": "mse"})
    model.fit(x, y, sample_weight=w, epochs=1, verbose=0)


def test_named_partials_and_several_inputs():
    u = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(1),
        ]
    )
    xin, tin = keras.Input((1,), name="x"), keras.Input((1,), name="t")
    joined = keras.Model([xin, tin], u(keras.layers.Concatenate()([xin, tin])))
    a, b = keras.Input((1,), name="x"), keras.Input((1,), name="t")
    layer = DerivativeModel(
        joined, variables={"x": "x", "t": "t"}, partials={"res": {"t": 1, "xx": -0.1}}
    )
    model = keras.Model([a, b], layer([a, b]))
    inside = [np.full((4, 1), 0.5), np.linspace(0.1, 1, 4).reshape(-1, 1)]
    start = [np.linspace(0, 1, 3).reshape(-1, 1), np.zeros((3, 1))]
    x, y, w = point_sets(
        model,
        interior=(inside, {"res": 0.0}),
        initial=(start, {"y": np.sin(np.pi * start[0])}, 5.0),
    )
    assert [p.shape for p in x] == [(7, 1), (7, 1)]
    np.testing.assert_array_equal(w["y"], [0, 0, 0, 0, 5, 5, 5])
    model.compile("adam", loss={"y": "mse", "res": "mse"})
    model.fit(x, y, sample_weight=w, epochs=1, verbose=0)


@pytest.mark.parametrize(
    "sets, match",
    [
        ({}, "at least one"),
        ({"a": (np.zeros((2, 1)), {"nope": 0.0})}, "does not output"),
        ({"a": (np.zeros((2, 1)), {"y": 0.0}, -1.0)}, "weight"),
        ({"a": (np.zeros((2, 1)), {})}, "dict from output name"),
        ({"a": np.zeros((2, 1))}, "must be"),
        ({"a": (np.zeros((2, 1)), {"y": np.zeros(3)})}, "target for 'y'"),
        ({"a": (np.zeros((2, 1)), {"y": None})}, "None"),
        ({"a": (np.zeros((2, 1)), {"y": 0.0}, float("nan"))}, "finite"),
        (
            {
                "a": (np.zeros((2, 1)), {"y": 0.0}),
                "b": ([np.zeros((2, 1))], {"y": 0.0}),
            },
            "same structure",
        ),
    ],
)
def test_bad_point_sets_are_clear_errors(sets, match):
    with pytest.raises((ValueError, TypeError), match=match):
        point_sets(pinn(order=2), **sets)


def test_a_model_without_named_outputs_is_refused():
    net = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    with pytest.raises(TypeError, match="must return a dict"):
        point_sets(net, a=(np.zeros((2, 1)), {"y": 0.0}))


def test_per_point_targets_are_never_broadcast_across_points():
    # an output of width 3 and 3 points: a (3,) target is ambiguous and refused
    net = keras.Sequential([keras.Input((1,)), keras.layers.Dense(3)])
    inputs = keras.Input((1,))
    model = keras.Model(inputs, {"y": net(inputs)})
    with pytest.raises(ValueError, match=r"one value per point: shape \(3, 3\)"):
        point_sets(model, a=(np.zeros((3, 1)), {"y": np.array([1.0, 2.0, 3.0])}))
    _, y, _ = point_sets(pinn(order=1), a=(np.zeros((3, 1)), {"y": np.arange(3.0)}))
    np.testing.assert_array_equal(y["y"][:, 0], [0, 1, 2])  # one feature: per point
