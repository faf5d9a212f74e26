"""Distributed training matches one device: TensorFlow's MirroredStrategy
and MultiWorkerMirroredStrategy, JAX's DataParallel and ModelParallel; the
scripts of the distributed-training guide run.

Devices are set up before TensorFlow or JAX starts (two logical CPUs, two
host devices), so each check runs in a fresh process that prints its
measurements as JSON; the tests assert on them. Each runs only under its
own backend. The reference is the same model with the same initial
weights, trained on the same global batches on one device.
"""

import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import BACKEND

ROOT = pathlib.Path(__file__).resolve().parents[1]

# The models and the training shared by both backends' scripts: a 1 -> 16
# x 2 tanh -> 1 network in a Functional model whose outputs are a dict,
# trained on a Sobolev loss (values and second derivatives). Three SGD steps
# on one global batch of 64 points, no shuffling, so a distributed run and
# a one-device run see the same batches. `kind` "outputs" is
# {"y", "dy", "d2y"}; "partials" the named partial {"y", "u_xx"}, its net
# with a custom activation (a plain function, probed by the curvature
# check; a fresh one for each model, so each probe runs where it is built).
COMMON = textwrap.dedent(
    """
    import json
    import time

    import keras
    import numpy as np

    from keras_deriv import DerivativeLogger, DerivativeModel, derivatives

    START = time.perf_counter()
    X = np.linspace(-1, 1, 64, dtype="float32").reshape(-1, 1)
    PROBES = X[::10]  # 7 points: not a multiple of the device count
    SIN = np.sin(np.pi * X)

    def make_swish():
        def swish(z):
            return z * keras.ops.sigmoid(z)
        return swish

    def net(kind, width=16):
        act = make_swish() if kind == "partials" else "tanh"
        seeded = keras.initializers.GlorotUniform
        Dense = keras.layers.Dense
        return keras.Sequential([
            keras.Input((1,)),
            Dense(width, act, kernel_initializer=seeded(1), name="hidden_0"),
            Dense(width, act, kernel_initializer=seeded(2), name="hidden_1"),
            Dense(1, kernel_initializer=seeded(3), name="out"),
        ], name="u")

    def model(kind, width=16):
        inputs = keras.Input((1,))
        if kind == "partials":
            layer = DerivativeModel(
                net(kind, width), partials={"u_xx": "xx"}, variables="x"
            )
            return keras.Model(inputs, layer(inputs))
        layer = DerivativeModel(net(kind, width), order=2)
        return keras.Model(inputs, dict(zip(layer.output_keys, layer(inputs))))

    def second(kind):
        return "u_xx" if kind == "partials" else "d2y"

    def targets(kind):
        d2y = -np.pi**2 * SIN
        return {"y": SIN, second(kind): d2y if kind == "partials" else d2y[..., None]}

    def train(m, kind, initial, lr=0.1, logger=None):
        m.set_weights(initial)
        m.compile(
            keras.optimizers.SGD(lr),
            loss={"y": "mse", second(kind): "mse"},
            loss_weights={"y": 1.0, second(kind): 0.01},
        )
        history = m.fit(
            X, targets(kind), batch_size=64, epochs=3, shuffle=False, verbose=0,
            callbacks=[logger] if logger else [],
        )
        return [w.copy() for w in m.get_weights()], history.history["loss"]

    def compare(one, two, initial, logger_one, logger_two):
        (w1, loss1), (w2, loss2) = one, two
        return {
            "weight_diff": max(float(np.abs(a - b).max()) for a, b in zip(w1, w2)),
            "weight_scale": max(float(np.abs(a).max()) for a in w1),
            "moved": max(float(np.abs(a - b).max()) for a, b in zip(w1, initial)),
            "loss_one": loss1,
            "loss_two": loss2,
            "logged_epochs": [logger_one.epochs, logger_two.epochs],
            "logged_keys": sorted(logger_two.curves),
            "curve_diff": max(
                float(np.abs(np.asarray(a) - np.asarray(b)).max())
                for key in logger_one.curves
                for a, b in zip(logger_one.curves[key], logger_two.curves[key])
            ),
        }

    def report(results):
        results["seconds"] = time.perf_counter() - START
        results["cpu_seconds"] = time.process_time()
        print("RESULTS " + json.dumps(results))
    """
)

# Two logical CPUs, before TensorFlow starts.
TWO_CPUS = textwrap.dedent(
    """
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    """
)

MIRRORED = textwrap.dedent(
    """
    from keras_deriv import find_zero_curvature_activations

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    results = {"replicas": strategy.num_replicas_in_sync}
    for kind in ("outputs", "partials"):
        keras.utils.set_random_seed(0)
        one = model(kind)
        initial = [w.copy() for w in one.get_weights()]
        logger_one = DerivativeLogger(PROBES)
        trained_one = train(one, kind, initial, logger=logger_one)
        with strategy.scope():
            two = model(kind)
        logger_two = DerivativeLogger(PROBES)
        trained_two = train(two, kind, initial, logger=logger_two)
        results[kind] = compare(
            trained_one, trained_two, initial, logger_one, logger_two
        )
        results[kind]["variable_type"] = type(two.trainable_variables[0].value).__name__
        results[kind]["model_replicas"] = two.distribute_strategy.num_replicas_in_sync

    # A short fit converges: 30 epochs of two global batches of 32, Adam.
    keras.utils.set_random_seed(0)
    with strategy.scope():
        fitted = model("outputs")
        fitted.compile(keras.optimizers.Adam(1.5e-2), loss={"y": "mse", "d2y": "mse"},
                       loss_weights={"y": 1.0, "d2y": 0.01})
    history = fitted.fit(X, targets("outputs"), batch_size=32, epochs=30, verbose=0)
    results["converge"] = history.history["loss"]

    # The curvature check probes a custom activation numerically, on a
    # worker thread when called in a traced function. Here it is called in a
    # replica context (strategy.run of a tf.function), with functions never
    # probed before: a swish (curved) and a leaky ReLU (d2 = 0 everywhere).
    @tf.autograph.experimental.do_not_convert
    def leaky(z):
        return keras.ops.maximum(z, 0.1 * z)

    curved = net("partials")
    kinked = keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(4, leaky), keras.layers.Dense(1)]
    )

    @tf.function
    def in_replica():
        d2y = DerivativeModel(curved)(tf.constant(PROBES))[2]
        found = find_zero_curvature_activations(kinked)
        fraction = found[0].zero_fraction if found else -1.0
        return d2y, tf.constant(fraction)

    d2y, fractions = strategy.run(in_replica)
    reference = np.asarray(DerivativeModel(curved)(PROBES)[2])
    results["replica_probe"] = {
        "d2y_diff": [float(np.abs(np.asarray(v) - reference).max())
                     for v in strategy.experimental_local_results(d2y)],
        "d2y_scale": float(np.abs(reference).max()),
        "fractions": [float(v) for v in strategy.experimental_local_results(fractions)],
    }

    # The reference for the two-worker example: its training on one device
    # (the default strategy), one epoch.
    import sys
    sys.path.insert(0, EXAMPLES)
    import multi_worker
    example, _, batches = multi_worker.train(tf.distribute.get_strategy(), epochs=1)
    results["example_one_device"] = [w.tolist() for w in example.get_weights()]
    results["example_one_device_batches"] = batches
    report(results)
    """
)
TENSORFLOW = f"EXAMPLES = {str(ROOT / 'examples')!r}\n" + TWO_CPUS + COMMON + MIRRORED

JAX = COMMON + textwrap.dedent(
    """
    results = {"devices": keras.distribution.list_devices()}
    # One device first (no distribution set), then the same runs under each
    # distribution: the initial weights are copied, and set_weights puts them
    # on the devices where the distribution lays the variables out.
    single = {}
    for kind in ("outputs", "partials"):
        keras.utils.set_random_seed(0)
        one = model(kind)
        initial = [w.copy() for w in one.get_weights()]
        logger = DerivativeLogger(PROBES)
        single[kind] = (initial, train(one, kind, initial, logger=logger), logger)
    keras.utils.set_random_seed(0)
    wide = model("outputs", width=64)
    wide_initial = [w.copy() for w in wide.get_weights()]
    wide_one = train(wide, "outputs", wide_initial)
    derivatives_one = derivatives(wide.layers[1].model, PROBES)

    devices = keras.distribution.list_devices()
    data_parallel = keras.distribution.DataParallel(devices=devices)
    keras.distribution.set_distribution(data_parallel)
    # How fit lays out a global batch of 64: the layout the distribution
    # gives its shape, and the shards of the batch distributed by it.
    layout = data_parallel.get_data_layout(X.shape)
    batch = keras.distribution.distribute_tensor(X, layout)
    results["data_layout"] = {
        "axes": [str(a) for a in layout.axes],
        "shards": sorted(
            [str(s.device), list(s.data.shape)] for s in batch.addressable_shards
        ),
    }
    for kind in ("outputs", "partials"):
        initial, trained_one, logger_one = single[kind]
        two = model(kind)
        logger_two = DerivativeLogger(PROBES)
        trained_two = train(two, kind, initial, logger=logger_two)
        results[kind] = compare(
            trained_one, trained_two, initial, logger_one, logger_two
        )
        sharding = two.trainable_variables[0].value.sharding
        results[kind]["variable_devices"] = len(sharding.device_set)

    # ModelParallel: the hidden units of a 64-wide net split over a "model"
    # axis of the two devices (the kernels by columns, the output kernel by
    # rows); the batch is not split (a "batch" axis of size 1).
    mesh = keras.distribution.DeviceMesh((1, 2), ["batch", "model"], devices)
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map[".*hidden_.*/kernel"] = (None, "model")
    layout_map[".*hidden_.*/bias"] = ("model",)
    layout_map[".*out/kernel"] = ("model", None)
    keras.distribution.set_distribution(
        keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")
    )
    wide = model("outputs", width=64)
    wide_two = train(wide, "outputs", wide_initial)
    derivatives_two = derivatives(wide.layers[1].model, PROBES)
    (w1, _), (w2, _) = wide_one, wide_two
    results["model_parallel"] = {
        "specs": {
            v.path: str(tuple(v.value.sharding.spec)) for v in wide.trainable_variables
        },
        "weight_diff": max(float(np.abs(a - b).max()) for a, b in zip(w1, w2)),
        "weight_scale": max(float(np.abs(a).max()) for a in w1),
        "moved": max(float(np.abs(a - b).max()) for a, b in zip(w1, wide_initial)),
        "derivatives_diff": max(
            float(np.abs(a - b).max()) for a, b in zip(derivatives_one, derivatives_two)
        ),
    }
    report(results)
    """
)


def run_script(script, env_extra, timeout=240):
    """The `RESULTS` JSON a script prints, run in a fresh interpreter."""
    env = {**os.environ, "KERAS_BACKEND": BACKEND, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.update(env_extra)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(
        line for line in proc.stdout.splitlines() if line.startswith("RESULTS ")
    )
    return json.loads(line.removeprefix("RESULTS "))


# Float32 round-off: the replicas' gradients are summed in another order
# than one device sums the batch (measured after three steps: 3e-8, for
# weights up to 0.7). The steps move the weights by 0.03 to 0.3; with the
# learning rate 1% off on the distributed side, the weights differ by 3e-4
# to 1.5e-3 (tried on each backend), so a training that differs at all (a
# gradient counted once per replica, a batch split wrongly) fails here.
RTOL = 1e-5


def assert_same_training(result):
    assert result["moved"] > 1e-2, result  # the steps did change the weights
    assert result["weight_diff"] <= RTOL * result["weight_scale"], result
    np.testing.assert_allclose(result["loss_two"], result["loss_one"], rtol=RTOL)


def assert_same_logs(result, keys):
    assert result["logged_epochs"] == [[1, 2, 3], [1, 2, 3]]
    assert result["logged_keys"] == keys
    # The curves of a network barely trained are of order 1: round-off
    # (measured: at most 1.2e-7).
    assert result["curve_diff"] <= RTOL, result


@pytest.fixture(scope="module")
def tensorflow_results():
    return run_script(TENSORFLOW, {})


@pytest.fixture(scope="module")
def jax_results():
    return run_script(JAX, {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})


tensorflow_only = pytest.mark.skipif(
    BACKEND != "tensorflow", reason="tf.distribute is TensorFlow's"
)
jax_only = pytest.mark.skipif(
    BACKEND != "jax", reason="keras.distribution runs on JAX only (Keras 3.15)"
)


@tensorflow_only
@pytest.mark.parametrize("kind", ["outputs", "partials"])
def test_mirrored_strategy_matches_one_device(tensorflow_results, kind):
    result = tensorflow_results[kind]
    assert tensorflow_results["replicas"] == result["model_replicas"] == 2
    assert result["variable_type"] == "MirroredVariable"
    assert_same_training(result)
    assert_same_logs(result, ["d2y", "dy", "y"])


@tensorflow_only
def test_mirrored_strategy_fit_converges(tensorflow_results):
    losses = tensorflow_results["converge"]
    assert losses[-1] < 0.25 * losses[0], losses


@tensorflow_only
def test_curvature_probe_in_a_replica_context(tensorflow_results):
    probe = tensorflow_results["replica_probe"]
    assert max(probe["d2y_diff"]) <= RTOL * max(1.0, probe["d2y_scale"]), probe
    # The leaky ReLU, probed on both replicas' threads: d2 = 0 on the whole
    # grid (a failed probe would report nothing: -1).
    assert probe["fractions"] == [1.0, 1.0], probe


@tensorflow_only
def test_multi_worker_example_matches_one_device(tensorflow_results, tmp_path):
    """The guide's two-worker example (one epoch: four Adam steps), two
    processes on two free localhost ports: both workers end with the same
    weights, those of the same training on one device."""
    ports = [free_port(), free_port()]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "examples" / "multi_worker.py"),
                str(index),
                *("--ports", *ports),
                *("--epochs", "1"),
                *("--save", str(tmp_path / "model.keras")),
                *("--weights", str(tmp_path / f"worker{index}.npz")),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in (0, 1)
    ]
    try:
        outputs = [proc.communicate(timeout=180) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    for index, (proc, (out, err)) in enumerate(zip(procs, outputs, strict=True)):
        assert proc.returncode == 0, err[-3000:]
        # The cluster formed: two replicas in sync, each step on half of the
        # global batch of 64 (a worker training alone would report 1 and 64,
        # and the same weights as one device).
        found = re.search(
            rf"^worker {index}: replicas_in_sync=(\d+) per_replica_batches=(.*)$",
            out,
            re.M,
        )
        assert found, out
        assert int(found[1]) == 2, out
        assert json.loads(found[2]) == [[32]] * 4, out
    assert (tmp_path / "model.keras").exists()  # saved by the chief
    workers = []
    for index in (0, 1):
        saved = np.load(tmp_path / f"worker{index}.npz")
        workers.append([saved[f"arr_{k}"] for k in range(len(saved.files))])
    # The reference trained on whole global batches, in one process.
    assert tensorflow_results["example_one_device_batches"] == [[64]] * 4
    one = [np.asarray(w) for w in tensorflow_results["example_one_device"]]
    scale = max(float(np.abs(w).max()) for w in one)
    for w0, w1, w in zip(*workers, one, strict=True):
        np.testing.assert_array_equal(w0, w1)
        np.testing.assert_allclose(w0, w, rtol=0, atol=RTOL * scale)


@jax_only
@pytest.mark.parametrize("kind", ["outputs", "partials"])
def test_data_parallel_matches_one_device(jax_results, kind):
    result = jax_results[kind]
    assert jax_results["devices"] == ["cpu:0", "cpu:1"]
    assert result["variable_devices"] == 2
    # fit splits each global batch of 64 over the two devices: 32 points each.
    layout = jax_results["data_layout"]
    assert layout["axes"] == ["batch", "None"], layout
    assert [shape for _, shape in layout["shards"]] == [[32, 1], [32, 1]], layout
    assert len({device for device, _ in layout["shards"]}) == 2, layout
    assert_same_training(result)
    assert_same_logs(result, ["d2y", "dy", "y"])


@jax_only
def test_model_parallel_matches_one_device(jax_results):
    result = jax_results["model_parallel"]
    assert result["specs"] == {
        "u/hidden_0/kernel": "(None, 'model')",
        "u/hidden_0/bias": "('model',)",
        "u/hidden_1/kernel": "(None, 'model')",
        "u/hidden_1/bias": "('model',)",
        "u/out/kernel": "('model', None)",
        "u/out/bias": "(None,)",
    }
    assert result["moved"] > 1e-2, result
    assert result["weight_diff"] <= RTOL * result["weight_scale"], result
    # derivatives() of the sharded net, of order 1 (measured: 1.2e-7).
    assert result["derivatives_diff"] <= RTOL, result


GUIDE = ROOT / "docs" / "guides" / "distributed.md"
# The guide's blocks are titled (so the in-process docs test skips them):
# complete scripts, each run here in a fresh process on its backend, with
# what it prints; and an excerpt of the multi-worker example.
TITLED = re.compile(r'^```python title="([^"]+)"\n(.*?)^```', re.S | re.M)
SCRIPTS = {
    "mirrored_strategy.py": ("tensorflow", ["2\n", "[1, 6]\n"]),
    "data_parallel.py": ("jax", ["['cpu:0', 'cpu:1']\n", "[1, 6]\n"]),
    "model_parallel.py": ("jax", ["u/hidden_0/kernel P(None, 'model')\n"]),
    "torch_ddp.py": ("torch", ["process 0: ", "process 1: "]),
}
EXCERPT = "examples/multi_worker.py (excerpt)"


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return str(s.getsockname()[1])


def test_guide_scripts_are_listed_and_the_excerpt_is_the_example():
    blocks = dict(TITLED.findall(GUIDE.read_text()))
    assert set(blocks) == {*SCRIPTS, EXCERPT}
    example = (ROOT / "examples" / "multi_worker.py").read_text()
    lines = {line.strip() for line in example.splitlines()}
    missing = [
        line for line in blocks[EXCERPT].splitlines() if line.strip() not in lines
    ]
    assert not missing, missing


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_guide_script_runs(name, tmp_path):
    backend, expected = SCRIPTS[name]
    if backend != BACKEND:
        pytest.skip(f"a {backend} script")
    script = tmp_path / name
    script.write_text(dict(TITLED.findall(GUIDE.read_text()))[name])
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MASTER_PORT": free_port()}
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    for text in expected:
        assert text in proc.stdout, proc.stdout
    if name == "torch_ddp.py":
        # Both processes end with the same weights: DistributedDataParallel
        # kept them in step.
        # (The two processes share stdout: their lines may run together.)
        sums = re.findall(r"sum of \|weights\| (\d+\.\d{6})", proc.stdout)
        assert len(sums) == 2 and sums[0] == sums[1], proc.stdout
