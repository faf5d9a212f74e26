"""`precision="highest"`: full float32 matmuls for the layer's computation,
scoped to it, on each backend. This machine has no GPU, so the tests check
what can be seen on a CPU: the values are unchanged, JAX's compiled step
(gradients included) asks for HIGHEST precision in every matmul, PyTorch's
setting holds inside the call and is restored after, and TensorFlow's
process-wide switch is refused with the fix when it would matter."""

import keras
import numpy as np
import pytest
from conftest import BACKEND, mlp, to_numpy

from keras_deriv import DerivativeModel


def test_highest_precision_leaves_cpu_values_and_training_unchanged():
    x = np.random.default_rng(0).uniform(-1, 1, (16, 2)).astype("float32")
    target = np.zeros((16, 1), "float32")
    start = [to_numpy(v) for v in mlp(2, (8, 8), 1, dtype="float32", seed=2).weights]
    weights = []
    for precision in ("default", "highest"):
        keras.utils.set_random_seed(1)
        net = mlp(2, (8, 8), 1, dtype="float32", seed=2)
        inputs = keras.Input((2,))
        layer = DerivativeModel(
            net,
            partials={"lap": {"xx": 1, "yy": 1}},
            variables="xy",
            precision=precision,
        )
        model = keras.Model(inputs, layer(inputs))
        model.compile(keras.optimizers.SGD(0.1), loss={"y": "mse", "lap": "mse"})
        model.fit(x, {"y": target, "lap": target}, batch_size=8, epochs=2, verbose=0)
        weights.append([to_numpy(v) for v in net.weights])
    moved = max(np.abs(a - b).max() for a, b in zip(weights[0], start, strict=True))
    assert moved > 1e-4  # training did something
    for a, b in zip(*weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


@pytest.mark.skipif(BACKEND != "jax", reason="JAX's compiled step")
def test_jax_every_matmul_of_the_layer_and_of_its_gradient_is_highest():
    import jax

    net = mlp(3, (8,), 1, dtype="float32")
    x = np.ones((4, 3), "float32")

    def dots(precision):
        layer = DerivativeModel(net, order=2, hessian="laplacian", precision=precision)
        layer(x)
        trainable = [v.value for v in layer.trainable_variables]
        frozen = [v.value for v in layer.non_trainable_variables]

        def loss(values):  # the layer's call is inside, the gradient outside
            outputs, _ = layer.stateless_call(values, frozen, x)
            return keras.ops.mean(outputs[2] ** 2)

        text = str(jax.make_jaxpr(jax.grad(loss))(trainable))
        return text.count("dot_general["), text.count("Precision.HIGHEST")

    (matmuls, highest), (_, default) = dots("highest"), dots("default")
    assert matmuls >= 6  # forward jets and their transposes
    assert highest == 2 * matmuls  # both operands of every one
    assert default == 0


@pytest.mark.skipif(BACKEND != "torch", reason="PyTorch's setting")
def test_torch_setting_holds_inside_the_call_and_is_restored():
    import torch

    seen = []

    class Spy(keras.layers.Layer):
        def call(self, x):
            seen.append(torch.get_float32_matmul_precision())
            return x

    inputs = keras.Input((2,))
    hidden = keras.layers.Dense(4, activation="tanh")(inputs)
    net = keras.Model(inputs, keras.layers.Dense(1)(Spy()(hidden)))
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        DerivativeModel(net, order=2, precision="highest")(np.ones((3, 2), "float32"))
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)
    assert seen and set(seen) == {"highest"}, seen


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow's switch")
def test_tensorflow_refuses_when_tf32_would_apply(monkeypatch):
    import tensorflow as tf

    net = mlp(2, (4,), 1, dtype="float32")
    x = np.ones((3, 2), "float32")
    gpu = [tf.config.LogicalDevice("/device:GPU:0", "GPU")]
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: gpu)
    with pytest.raises(
        RuntimeError, match=r"enable_tensor_float_32_execution\(False\)"
    ):
        DerivativeModel(net, precision="highest")(x)
    monkeypatch.setattr(
        tf.config.experimental, "tensor_float_32_execution_enabled", lambda: False
    )
    DerivativeModel(net, precision="highest")(x)  # TF32 off: nothing to do


def test_precision_is_validated_and_saved():
    net = mlp(2, (4,), 1, dtype="float32")
    with pytest.raises(ValueError, match="precision"):
        DerivativeModel(net, precision="fp32")
    layer = DerivativeModel(net, precision="highest")
    assert DerivativeModel.from_config(layer.get_config()).precision == "highest"
