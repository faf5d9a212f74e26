"""Error of the derivatives under mixed precision policies, per engine,
against the same network in float32 (the docs' DerivativeModel guide,
'Dtypes', quotes it).

    KERAS_BACKEND=tensorflow python benchmarks/mixed_precision_error.py
"""

import keras
import numpy as np

from keras_deriv import PrecisionWarning, derivatives


def build():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(64, activation="tanh"),
            keras.layers.Dense(64, activation="tanh"),
            keras.layers.Dense(1),
        ]
    )


def main():
    import warnings

    warnings.simplefilter("ignore", PrecisionWarning)
    x = np.random.default_rng(0).uniform(-1, 1, (512, 2)).astype("float32")
    reference_net = build()
    reference = derivatives(reference_net, x)
    weights = reference_net.get_weights()
    print(f"backend {keras.backend.backend()}: max |error| / max |float32 value|")
    print(f"{'policy':<16}{'engine':<10}{'y':>10}{'dy':>10}{'d2y':>10}")
    for policy in ("mixed_float16", "mixed_bfloat16"):
        keras.config.set_dtype_policy(policy)
        try:
            net = build()
            net.set_weights(weights)
            for method in ("autodiff", "taylor"):
                out = derivatives(net, x, method=method)
                errors = [
                    np.abs(o - r).max() / np.abs(r).max()
                    for o, r in zip(out, reference, strict=True)
                ]
                cells = "".join(f"{e:>10.1e}" for e in errors)
                print(f"{policy:<16}{method:<10}{cells}")
        finally:
            keras.config.set_dtype_policy("float32")


if __name__ == "__main__":
    main()
