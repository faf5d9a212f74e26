"""`derivatives()`: chunked evaluation with one compiled function."""

import keras
import numpy as np
import pytest
from conftest import BACKEND, FLOAT64, mlp

from keras_deriv import derivatives


@keras.saving.register_keras_serializable(package="keras_deriv_tests")
class CountCalls(keras.layers.Layer):
    """Identity that counts how often its Python `call` runs: once per trace
    in a compiled function, once per batch when running eagerly."""

    calls = 0

    def call(self, inputs):
        CountCalls.calls += 1
        return inputs


def counting_net():
    return keras.Sequential(
        [
            keras.Input((2,)),
            CountCalls(),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(1),
        ]
    )


@pytest.fixture
def x():
    return np.random.default_rng(0).uniform(-1, 1, (1000, 2)).astype("float32")


def test_results_do_not_depend_on_batch_size(x):
    net = counting_net()
    whole = derivatives(net, x, order=3)
    for batch_size in (7, 128, 999):
        chunked = derivatives(net, x, order=3, batch_size=batch_size)
        for a, b in zip(whole, chunked, strict=True):
            assert a.shape == b.shape and a.shape[0] == 1000
            # float32 matmuls of different batch sizes may round differently
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(
    BACKEND == "torch", reason="torch predicts eagerly: nothing is traced"
)
def test_one_compiled_function_for_all_chunks(x):
    net = counting_net()
    derivatives(net, x[:10], batch_size=10)
    after_one_chunk = CountCalls.calls
    derivatives(net, x, batch_size=10)  # 100 chunks, same options
    derivatives(net, x[:995], batch_size=10)  # a padded last chunk
    assert CountCalls.calls == after_one_chunk


def test_dtype_is_kept_and_shapes_follow_options(x):
    net = counting_net()
    y, dy, hess = derivatives(net, x, hessian="full", wrt=[1])
    assert (
        y.shape == (1000, 1)
        and dy.shape == (1000, 1, 1)
        and hess.shape == (1000, 1, 1, 1)
    )
    assert y.dtype == np.float32
    if FLOAT64:  # a float64 model gives float64 (TensorFlow: float64 math)
        net64 = mlp(2, [8], 1)
        assert all(a.dtype == np.float64 for a in derivatives(net64, x[:5]))
    y4 = derivatives(net, x, order=4)
    assert len(y4) == 5 and y4[4].shape == (1000, 1, 2)


def test_bad_arguments_are_clear_errors(x):
    net = counting_net()
    with pytest.raises(ValueError, match=r"reshape\(-1, 1\)"):
        derivatives(net, x[:, 0])
    with pytest.raises(TypeError, match="astype"):
        derivatives(net, x.astype("int32"))
    with pytest.raises(ValueError, match="batch_size"):
        derivatives(net, x, batch_size=0)
    with pytest.raises(ValueError, match="no points"):
        derivatives(net, x[:0])
