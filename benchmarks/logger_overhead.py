"""Wall-time overhead of DerivativeLogger on the original question's task.

    KERAS_BACKEND=tensorflow python benchmarks/logger_overhead.py [--epochs 10]

Task (DESIGN.md): 1000 points in [0, 1], y = x², Dense(1024, relu) ->
Dense(1), Adam 1e-3, MSE, 10 epochs, batch 20. The logger evaluates
[y, dy, d2y] on 1000 probe points every epoch (in memory, no files), with
on_zero_curvature="ignore" (the net is ReLU). Fits with and without the
logger alternate in one process; the ratio of medians is reported. Each
fit builds a new model, so each logged fit pays the one-time compilation of
the probe function; more epochs amortise it.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_deriv import DerivativeLogger  # noqa: E402


def fit_seconds(x, callbacks, epochs):
    keras.utils.set_random_seed(0)
    net = keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(1024, activation="relu"),
            keras.layers.Dense(1),
        ]
    )
    net.compile(keras.optimizers.Adam(1e-3), "mse")
    start = time.perf_counter()
    net.fit(x, x**2, epochs=epochs, batch_size=20, verbose=0, callbacks=callbacks)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    x = np.linspace(0, 1, 1000, dtype="float32").reshape(-1, 1)
    fit_seconds(x, [], 1)  # warm up the backend
    plain, logged = [], []
    for _ in range(args.repeats):
        logger = DerivativeLogger(x, on_zero_curvature="ignore")
        plain.append(fit_seconds(x, [], args.epochs))
        logged.append(fit_seconds(x, [logger], args.epochs))
    p, q = np.median(plain), np.median(logged)
    backend = keras.backend.backend()
    print(
        f"backend {backend}, {os.cpu_count()} cores, {args.epochs} epochs, "
        f"median of {args.repeats}"
    )
    print(
        f"fit without logger {p:.2f} s, with logger every epoch {q:.2f} s: "
        f"{q / p:.3f}x ({100 * (q / p - 1):+.1f}%)"
    )


if __name__ == "__main__":
    main()
