"""Named partials and operators on each engine: time per call of a compiled
model, interleaved, median of repeats (the docs' Performance page quotes it).

    KERAS_BACKEND=tensorflow python benchmarks/partials_engines.py --repeats 30

Networks: 3 hidden layers of 64 units (tanh, and ReLU), inputs (x, y), 1024
points. Outputs: a mixed partial u_xy, and the biharmonic operator
u_xxxx + 2 u_xxyy + u_yyyy.
"""

import argparse
import statistics
import time

import keras
import numpy as np

from keras_deriv import DerivativeModel

CASES = {
    "u_xy": {"u_xy": "xy"},
    "biharmonic": {"b": {"xxxx": 1, "xxyy": 2, "yyyy": 1}},
}


def net(activation):
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input((2,))]
        + [keras.layers.Dense(64, activation=activation) for _ in range(3)]
        + [keras.layers.Dense(1)]
    )


def compiled(model, partials, method):
    inputs = keras.Input((2,))
    layer = DerivativeModel(model, variables="xy", partials=partials, method=method)
    return keras.Model(inputs, layer(inputs))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    x = np.random.default_rng(0).uniform(-1, 1, (1024, 2)).astype("float32")
    print(f"backend {keras.backend.backend()}; ms per call (median of {args.repeats})")
    print(f"{'network':<8} {'output':<11} {'autodiff':>9} {'taylor':>9} {'ratio':>7}")
    for activation in ("tanh", "relu"):
        model = net(activation)
        for case, partials in CASES.items():
            fns = {m: compiled(model, partials, m) for m in ("autodiff", "taylor")}
            for fn in fns.values():  # compile and check once
                fn.predict_on_batch(x)
            a, b = (fns[m].predict_on_batch(x) for m in ("autodiff", "taylor"))
            for key in a:
                np.testing.assert_allclose(a[key], b[key], rtol=1e-3, atol=1e-3)
            times = {m: [] for m in fns}
            for _ in range(args.repeats):  # interleaved
                for method, fn in fns.items():
                    start = time.perf_counter()
                    fn.predict_on_batch(x)
                    times[method].append(time.perf_counter() - start)
            ms = {m: 1e3 * statistics.median(t) for m, t in times.items()}
            print(
                f"{activation:<8} {case:<11} {ms['autodiff']:9.2f} {ms['taylor']:9.2f} "
                f"{ms['autodiff'] / ms['taylor']:6.2f}x"
            )


if __name__ == "__main__":
    main()
