"""Bad input gets a clear, early error that names the problem and the fix."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_deriv import DerivativeModel, NotDifferentiableError, derivatives


def net(d=2):
    return keras.Sequential(
        [
            keras.Input((d,)),
            keras.layers.Dense(4, activation="tanh"),
            keras.layers.Dense(1),
        ]
    )


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"order": 0}, ValueError, "from 1 to 4"),
        ({"order": 5}, ValueError, "from 1 to 4"),
        ({"order": 2.0}, TypeError, "must be an int"),
        ({"order": True}, TypeError, "must be an int"),
        ({"hessian": "diag"}, ValueError, "Unknown `hessian`='diag'.*'diagonal'"),
        ({"method": "fast"}, ValueError, "Unknown `method`='fast'.*'autodiff'"),
        (
            {"order": 3, "hessian": "full"},
            ValueError,
            'order=3 needs hessian="diagonal"',
        ),
        ({"order": 4, "hessian": "laplacian"}, ValueError, 'needs hessian="diagonal"'),
        ({"wrt": [0, 0]}, ValueError, r"repeats the feature indices \[0\]"),
        ({"wrt": [-1]}, ValueError, "non-negative"),
        ({"wrt": [0.5]}, TypeError, "integer feature indices"),
        ({"wrt": []}, ValueError, "empty"),
    ],
)
def test_bad_options_fail_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        DerivativeModel(net(), **kwargs)


def test_wrt_out_of_range_fails_at_build():
    layer = DerivativeModel(net(2), wrt=[0, 2])
    with pytest.raises(
        ValueError, match=r"beyond the input's 2 features \(valid indices: 0 to 1\)"
    ):
        layer(keras.Input((2,)))


def test_input_of_rank_one_says_how_to_reshape():
    layer = DerivativeModel(net(1))
    with pytest.raises(ValueError, match=r"got shape \(5,\).*reshape\(-1, 1\)"):
        layer(np.ones(5, "float32"))


def test_integer_inputs_are_refused_with_the_cast_to_use():
    with pytest.raises(TypeError, match="dtype int32.*astype\\('float32'\\)"):
        DerivativeModel(net())(np.ones((3, 2), "int32"))
    with pytest.raises(TypeError, match="dtype int32"):
        DerivativeModel(net())(keras.Input((2,), dtype="int32"))


def test_non_layers_and_multi_output_models_are_refused():
    with pytest.raises(TypeError, match="wraps a Keras model or layer"):
        DerivativeModel(lambda x: x)
    inputs = keras.Input((2,))
    two = keras.Model(
        inputs, [keras.layers.Dense(1)(inputs), keras.layers.Dense(1)(inputs)]
    )
    with pytest.raises(ValueError, match="one output tensor"):
        DerivativeModel(two)(inputs)


def test_embedding_is_named():
    model = keras.Sequential(
        [
            keras.Input((3,), dtype="int32"),
            keras.layers.Embedding(10, 4, name="tokens"),
            keras.layers.Flatten(),
            keras.layers.Dense(1),
        ]
    )
    with pytest.raises(NotDifferentiableError, match="'tokens'"):
        DerivativeModel(model)(keras.Input((3,)))


def test_argmax_in_a_functional_model_is_named():
    inputs = keras.Input((3,))
    h = keras.layers.Dense(4)(inputs)
    picked = keras.ops.expand_dims(keras.ops.argmax(h, axis=-1), -1)
    model = keras.Model(
        inputs, keras.layers.Dense(1)(keras.ops.cast(picked, "float32"))
    )
    with pytest.raises(NotDifferentiableError, match="argmax.*outputs int"):
        DerivativeModel(model)(keras.Input((3,)))


@keras.saving.register_keras_serializable(package="keras_deriv_tests")
class Frozen(keras.layers.Layer):
    def call(self, inputs):
        return keras.ops.stop_gradient(inputs)


@keras.saving.register_keras_serializable(package="keras_deriv_tests")
class HardChoice(keras.layers.Layer):
    def call(self, inputs):
        index = keras.ops.argmax(inputs, axis=-1)
        return keras.ops.cast(keras.ops.expand_dims(index, -1), inputs.dtype)


@pytest.mark.parametrize("cut", [Frozen, HardChoice])
def test_a_custom_layer_that_cuts_the_derivative_is_named(cut):
    model = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(4, activation="tanh"),
            cut(name="the_cut"),
            keras.layers.Dense(1),
        ]
    )
    x = np.ones((3, 2), "float32")
    with pytest.raises(NotDifferentiableError, match="at layer 'the_cut'"):
        DerivativeModel(model)(x)
    with pytest.raises(NotDifferentiableError, match="at layer 'the_cut'"):
        derivatives(model, x)


def test_numpy_backend_names_the_backends_that_work():
    code = (
        "import keras_deriv, keras; keras_deriv.DerivativeModel(keras.layers.Dense(1))"
    )
    env = {**os.environ, "KERAS_BACKEND": "numpy"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "cannot differentiate on the Keras backend 'numpy'" in result.stderr
    assert "tensorflow, jax, torch" in result.stderr
