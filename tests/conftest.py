"""Shared test setup. The suite runs once per backend (`KERAS_BACKEND`)."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# JAX runs in its default configuration (32-bit), as users run it; the
# float64 checks that need its 64-bit mode run in a subprocess
# (test_float64.py).

import math  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

BACKEND = keras.backend.backend()
# Keras computes float64 only on TensorFlow: on JAX and torch its type
# promotion turns float64 operands into float32 (keras.backend.result_type).
FLOAT64 = keras.backend.result_type("float64", "float64") == "float64"


def assert_close(got, ref, tol64, tol32, err_msg=""):
    """`got` within `tol * max(1, max|ref|)` of `ref`, absolutely: the
    derivatives cross zero, so a relative tolerance alone means nothing.
    `tol64` where Keras computes in float64, `tol32` where it rounds to
    float32 (about 1e-7 relative per operation, amplified by the depth)."""
    tol = tol64 if FLOAT64 else tol32
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(got, ref, rtol=0, atol=tol * scale, err_msg=err_msg)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """The demo, run once per session: the original question's networks,
    trained as asked (several tests read them; training them is slow)."""
    import io

    from keras_deriv import demo

    out_dir = tmp_path_factory.mktemp("demo")
    stream = io.StringIO()
    keras.utils.clear_session()
    results = demo.run(out_dir=str(out_dir), stream=stream)
    return results, stream.getvalue(), out_dir


@pytest.fixture(autouse=True)
def _fresh_session():
    keras.utils.clear_session()
    keras.utils.set_random_seed(0)
    yield


def f64(x):
    """A float64 backend tensor (Keras would turn a float64 NumPy array into
    float32 on its way in, which spoils float64 reference checks)."""
    return keras.ops.convert_to_tensor(np.asarray(x, dtype="float64"), dtype="float64")


def to_numpy(t):
    return np.asarray(keras.ops.convert_to_numpy(t))


_sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
NUMPY_ACTIVATIONS = {
    "tanh": np.tanh,
    "softplus": lambda z: np.logaddexp(0, z),
    "sigmoid": _sigmoid,
    "silu": lambda z: z * _sigmoid(z),
    "gelu": lambda z: 0.5 * z * (1 + np.vectorize(math.erf)(z / math.sqrt(2))),
    "relu": lambda z: np.maximum(z, 0),
}


def numpy_mlp(net):
    """The float64 NumPy forward pass of an `mlp()` network: an oracle that
    does not go through Keras."""
    params = []
    for layer in net.layers:
        kernel, bias = (to_numpy(v).astype("float64") for v in layer.weights)
        name = keras.activations.serialize(layer.activation)
        params.append((kernel, bias, NUMPY_ACTIVATIONS.get(name, lambda z: z)))

    def forward(x):
        h = np.asarray(x, dtype="float64")
        for kernel, bias, act in params:
            h = act(h @ kernel + bias)
        return h

    return forward


def mlp(d, widths, out, activation="tanh", dtype="float64", seed=0, name=None):
    """A small Sequential MLP with a declared float input and seeded weights."""
    layers = [keras.Input((d,), dtype=dtype)]
    for i, w in enumerate([*widths, out]):
        hidden = i < len(widths)
        layers.append(
            keras.layers.Dense(
                w,
                activation=activation if hidden else None,
                dtype=dtype,
                kernel_initializer=keras.initializers.GlorotUniform(seed + 2 * i),
                bias_initializer=keras.initializers.RandomUniform(
                    -0.5, 0.5, seed=seed + 2 * i + 1
                ),
            )
        )
    return keras.Sequential(layers, name=name)


def weight_gradients(layer, x, weights, level=2):
    """d mean(level²) / d weights by the backend's reverse mode (None: 0),
    with `level` the index of the layer's output (2: d2y)."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = keras.ops.mean(layer(x)[level] ** 2)
        grads = tape.gradient(loss, weights)
    elif BACKEND == "torch":
        import torch

        loss = keras.ops.mean(layer(x)[level] ** 2)
        grads = torch.autograd.grad(loss, [w.value for w in weights], allow_unused=True)
    else:
        import jax

        layer(x)  # built
        assert [id(v) for v in layer.trainable_variables] == [id(w) for w in weights]
        frozen = [v.value for v in layer.non_trainable_variables]

        def mean_square(values):
            outputs, _ = layer.stateless_call(values, frozen, x)
            return keras.ops.mean(outputs[level] ** 2)

        loss, grads = jax.jit(jax.value_and_grad(mean_square))(
            [w.value for w in weights]
        )
    grads = [
        np.zeros(w.shape) if g is None else to_numpy(g)
        for w, g in zip(weights, grads, strict=True)
    ]
    return float(to_numpy(loss)), grads


def relu_layer_closed_form(net, x, sigma):
    """The exact smoothed dy, d2y, d3y of a one-hidden-layer ReLU network
    f = Σ a relu(w x + b) + c: f' = Σ a w 1[w x + b > 0] smooths to
    Σ a w Φ((w x + b)/(|w|σ)), f'' = Σ a |w| δ(x - k) to Σ a |w| φ_σ(x - k)
    at the kinks k = -b/w, f''' to Σ a |w| φ_σ'(x - k)."""

    def ndtr(v):
        return 0.5 * (1 + np.vectorize(math.erf)(v / math.sqrt(2)))

    (kernel, bias), (out_kernel, _) = [
        [to_numpy(v).astype("float64") for v in layer.weights] for layer in net.layers
    ]
    w, b, a = kernel[0], bias, out_kernel[:, 0]
    x = np.asarray(x, "float64").reshape(-1, 1)
    keep = w != 0
    w, b, a = w[keep], b[keep], a[keep]
    z = (x - (-b / w)) / sigma
    phi = np.exp(-0.5 * z**2) / (sigma * math.sqrt(2 * math.pi))
    dy = (a * w * ndtr((w * x + b) / (np.abs(w) * sigma))).sum(1)
    d2y = (a * np.abs(w) * phi).sum(1)
    d3y = (a * np.abs(w) * phi * (-z / sigma)).sum(1)
    return dy, d2y, d3y


def central_difference(loss, variable, index, eps):
    """d loss / d variable[index] by a central difference (float64 NumPy
    arithmetic on the two losses); the variable is restored."""
    value = to_numpy(variable)
    losses = []
    for step in (eps, -eps):
        moved = value.copy()
        moved[index] += step
        variable.assign(moved)
        losses.append(float(loss()))
    variable.assign(value)
    return (losses[0] - losses[1]) / (2 * eps)


def assert_gradients_match_differences(loss, weights, grads, eps, tol, entries=None):
    """Reverse-mode `grads` of `loss()` against central differences in the
    weights: the first and last entry of each (or `entries`: a list of
    `(weight index, entry index)`), relative to max(1, |difference|)."""
    if entries is None:
        entries = [
            (i, np.unravel_index(flat, tuple(w.shape)))
            for i, w in enumerate(weights)
            for flat in (0, math.prod(w.shape) - 1)
        ]
    for i, index in entries:
        fd = central_difference(loss, weights[i], index, eps)
        got = grads[i][index]
        assert abs(got - fd) <= tol * max(1.0, abs(fd)), (
            weights[i].path,
            index,
            got,
            fd,
        )


def assert_named_output_trains(layer, x, name):
    """Weight gradients of mean(output `name`²) of a `DerivativeModel` with
    `partials` (a dict of outputs) against central differences in the
    weights of its wrapped network."""

    class AsList(keras.layers.Layer):
        """The layer's outputs as a list, `name` at index 2, for the helper."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def call(self, x):
            out = self.inner(x)
            return [out["y"], out["y"], out[name]]

    weights = layer.model.trainable_variables
    loss, grads = weight_gradients(AsList(layer), x, weights, level=2)
    assert loss > 1e-3
    assert_gradients_match_differences(
        lambda: np.mean(to_numpy(layer(x)[name]) ** 2),
        weights,
        grads,
        eps=1e-5 if FLOAT64 else 3e-3,
        tol=1e-6 if FLOAT64 else 3e-2,  # float32 central differences
    )
