"""float64 end to end on every backend. JAX needs 64-bit mode, which is
global state: it runs in a subprocess, so the rest of the suite runs JAX in
its default configuration, as users do."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import BACKEND

SCRIPT = textwrap.dedent(
    """
    import json
    import keras
    import numpy as np
    from keras_deriv import DerivativeModel

    def net(activation):
        rng = np.random.default_rng(0)
        layers = [keras.Input((2,), dtype="float64")]
        for w in (6, 6):
            layers.append(keras.layers.Dense(w, activation=activation, dtype="float64"))
        layers.append(keras.layers.Dense(1, dtype="float64"))
        model = keras.Sequential(layers)
        for v in model.weights:
            v.assign(rng.uniform(-1, 1, v.shape))
        return model

    def reference(model, x, act, dact, ddact):
        # y, dy/dx0 and d2y/dx0^2 in float64 NumPy, forward mode by hand
        h, dh, ddh = x, np.zeros_like(x), np.zeros_like(x)
        dh[:, 0], ddh[:, 0] = 1.0, 0.0
        layers = model.layers
        for i, layer in enumerate(layers):
            w, b = (np.asarray(keras.ops.convert_to_numpy(v)) for v in layer.weights)
            z, dz, ddz = h @ w + b, dh @ w, ddh @ w
            if i < len(layers) - 1:
                h, dh = act(z), dact(z) * dz
                ddh = dact(z) * ddz + ddact(z) * dz * dz
            else:
                h, dh, ddh = z, dz, ddz
        return h, dh, ddh

    sig = lambda z: 1 / (1 + np.exp(-z))
    acts = {
        "sigmoid": (sig, lambda z: sig(z) * sig(-z),
                    lambda z: sig(z) * sig(-z) * (sig(-z) - sig(z))),
        "tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2,
                 lambda z: -2 * np.tanh(z) * (1 - np.tanh(z) ** 2)),
    }
    import warnings
    warnings.simplefilter("always")
    x = np.random.default_rng(1).uniform(-1, 1, (16, 2))
    out = {}
    for name, fns in acts.items():
        model = net(name)
        ref = reference(model, x, *fns)
        for method in ("autodiff", "taylor"):
            with warnings.catch_warnings(record=True) as record:
                got = DerivativeModel(model, method=method)(
                    keras.ops.convert_to_tensor(x, dtype="float64"))
            warned = any("float32-accurate" in str(w.message) for w in record)
            dtypes = [keras.backend.standardize_dtype(t.dtype) for t in got]
            got = [np.asarray(keras.ops.convert_to_numpy(t)) for t in got]
            errors = [
                float(np.abs(got[0] - ref[0]).max()),
                float(np.abs(got[1][:, :, 0] - ref[1]).max()),
                float(np.abs(got[2][:, :, 0] - ref[2]).max()),
            ]
            out[f"{name}/{method}"] = {
                "dtypes": dtypes, "errors": errors, "warned": warned}
    print(json.dumps(out))
    """
)


def run_float64():
    env = {**os.environ, "KERAS_BACKEND": BACKEND, "JAX_ENABLE_X64": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def results():
    return run_float64()


# Keras 3.15 computes some float64 ops in float32: on JAX ops.tanh, on
# torch ops.matmul (so every Dense). The autodiff engine runs the model's
# own layers, so it inherits that: float32 round-off, ~1e-7, bounded here
# and announced by a PrecisionWarning. The Taylor engine's own formulas
# avoid those ops: float64 round-off through three layers, ~1e-15; 1e-12
# leaves room for the depth.
AUTODIFF_FLOAT32 = {"jax": {"tanh"}, "torch": {"sigmoid", "tanh"}}


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
@pytest.mark.parametrize("method", ["autodiff", "taylor"])
def test_float64_in_float64_out(results, name, method):
    result = results[f"{name}/{method}"]
    assert result["dtypes"] == ["float64"] * 3
    limited = method == "autodiff" and name in AUTODIFF_FLOAT32.get(BACKEND, ())
    tolerance = 1e-5 if limited else 1e-12
    assert max(result["errors"]) < tolerance, result["errors"]
    assert result["warned"] == (BACKEND != "tensorflow")


@pytest.mark.skipif(BACKEND != "jax", reason="JAX's 64-bit mode is global state")
def test_activation_derivatives_in_64_bit_jax():
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_ENABLE_X64": "1"}
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-k",
            "float64",
            os.path.join(here, "test_activation_derivatives.py"),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout
