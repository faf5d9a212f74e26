"""Cost of [y, dy, d2y] from DerivativeModel against the plain forward pass,
side by side in one process (medians of repeated runs, interleaved round
by round; ratios).

    KERAS_BACKEND=tensorflow python benchmarks/overhead.py [--points 1000]

Workloads: [y, dy, d2y] of the original question's net (1 -> 1024 relu -> 1)
and of a PINN net (1 -> 64x4 tanh -> 1); the Laplacian of a 10 -> 64x4 tanh
-> 1 net. Each with the autodiff and the Taylor engine. Everything is
compiled as `fit` and `predict` compile it: tf.function on TensorFlow,
jax.jit on JAX; torch runs eagerly. The peers (nested GradientTape, DeepXDE,
...) run in benchmarks/peers.py.
"""

import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_deriv import DerivativeModel  # noqa: E402

BACKEND = keras.backend.backend()


def question_net():
    hidden = keras.layers.Dense(1024, activation="relu")
    return keras.Sequential([keras.Input((1,)), hidden, keras.layers.Dense(1)])


def pinn_net(d=1):
    layers = [keras.Input((d,))]
    layers += [keras.layers.Dense(64, activation="tanh") for _ in range(4)]
    return keras.Sequential([*layers, keras.layers.Dense(1)])


def compiled(model):
    """A compiled inference function of `model` on this backend."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.function(lambda x: model(x, training=False))
    if BACKEND == "jax":
        import jax

        variables = [v.value for v in model.trainable_variables]
        state = [v.value for v in model.non_trainable_variables]
        fn = jax.jit(lambda tv, ntv, x: model.stateless_call(tv, ntv, x)[0])
        return lambda x: fn(variables, state, x)
    import torch

    def run(x):
        with torch.no_grad():
            return model(x)

    return run


def median_ms(fns, x, repeats):
    """Median ms of each function, timed round by round (one call of each
    per round), so that a change of load on a shared machine hits all alike."""

    def run(fn):
        keras.tree.map_structure(keras.ops.convert_to_numpy, fn(x))

    for fn in fns:
        run(fn)  # compile
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, spent in zip(fns, times, strict=True):
            start = time.perf_counter()
            run(fn)
            spent.append(time.perf_counter() - start)
    return [1e3 * float(np.median(t)) for t in times]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    cpu = platform.processor() or platform.machine()
    print(
        f"backend {BACKEND}, keras {keras.__version__}, {cpu}, {os.cpu_count()} "
        f"cores, {args.points} points, median of {args.repeats}"
    )
    print(f"{'workload':<28}{'method':<26}{'ms':>8}{'x forward':>11}")
    workloads = [
        ("question 1-1024relu-1", question_net, 1, "diagonal"),
        ("pinn 1-64x4tanh-1", pinn_net, 1, "diagonal"),
        ("laplacian 10-64x4tanh-1", lambda: pinn_net(10), 10, "laplacian"),
    ]
    for name, make, d, hessian in workloads:
        net = make()
        inputs = keras.Input((d,))
        rows = [("forward", compiled(net))]
        for method in ("autodiff", "taylor"):
            layer = DerivativeModel(net, order=2, hessian=hessian, method=method)
            rows.append((method, compiled(keras.Model(inputs, layer(inputs)))))
        x = keras.ops.convert_to_tensor(
            np.random.default_rng(0).uniform(size=(args.points, d)).astype("float32")
        )
        medians = median_ms([fn for _, fn in rows], x, args.repeats)
        for (label, _), ms in zip(rows, medians, strict=True):
            print(f"{name:<28}{label:<26}{ms:8.3f}{ms / medians[0]:10.2f}x")


if __name__ == "__main__":
    main()
