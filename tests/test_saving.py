"""Saving and loading models that contain DerivativeModel."""

import json

import keras
import numpy as np
import pytest
from conftest import to_numpy

from keras_deriv import DerivativeModel


def build(order, hessian, wrt):
    inner = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(8, activation="softplus"),
            keras.layers.Dense(2),
        ]
    )
    inputs = keras.Input((3,))
    layer = DerivativeModel(inner, order=order, hessian=hessian, wrt=wrt, name="derivs")
    return keras.Model(inputs, dict(zip(layer.output_keys, layer(inputs), strict=True)))


@pytest.mark.parametrize(
    "order, hessian, wrt",
    [
        (2, "diagonal", None),
        (2, "full", [2, 0]),
        (2, "laplacian", [1]),
        (4, "diagonal", None),
    ],
)
def test_round_trip_in_safe_mode_gives_identical_outputs(tmp_path, order, hessian, wrt):
    model = build(order, hessian, wrt)
    x = np.random.default_rng(0).normal(size=(10, 3)).astype("float32")
    # Train a little so the saved weights are not the initial ones.
    model.compile(keras.optimizers.Adam(1e-2), loss={"y": "mse"})
    model.fit(x, {"y": np.ones((10, 2), "float32")}, epochs=2, verbose=0)
    before = model.predict(x, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # safe_mode=True, no custom_objects
    after = loaded.predict(x, verbose=0)
    assert set(after) == set(before)
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])
    layer = loaded.get_layer("derivs")
    assert (layer.order, layer.hessian, layer.wrt) == (
        order,
        hessian,
        tuple(wrt) if wrt else None,
    )


def test_config_holds_no_callables():
    model = build(2, "diagonal", None)
    text = json.dumps(model.get_config())
    assert "Lambda" not in text and "lambda" not in text
    config = model.get_layer("derivs").get_config()
    assert config["model"]["class_name"] == "Sequential"
    clone = DerivativeModel.from_config(config)
    assert clone.get_config() == config


def test_wrapped_layer_weights_are_the_wrappers():
    model = build(2, "diagonal", None)
    layer = model.get_layer("derivs")
    assert len(layer.trainable_weights) == 4
    assert {id(w) for w in layer.trainable_weights} == {
        id(w) for w in layer.model.trainable_weights
    }
    x = np.ones((2, 3), "float32")
    np.testing.assert_allclose(
        to_numpy(layer(x)[0]), to_numpy(layer.model(x)), rtol=1e-6
    )
