"""Laplacian of a 10 -> width x 4 tanh -> 1 network on JAX: keras_deriv's
engines against folx's forward Laplacian and jax.hessian, side by side in one
process, with the error of each against a float64 reference.

    KERAS_BACKEND=jax python benchmarks/laplacian_jax.py --points 100000 --width 512

Workload W6 of issue 5 on a GPU (and W3-like on a CPU with smaller sizes).
Matmuls run at full float32 precision (`jax.default_matmul_precision
("highest")`): on GPUs the default TF32 rounding makes second derivatives
wrong by about 1e-3 (DESIGN.md). The reference is a float64 jax.hessian on
the first 1000 points, with the weights cast to float64 (this script
enables JAX's 64-bit mode for that; the library never does).
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ["JAX_ENABLE_X64"] = "1"  # only for the float64 reference

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_deriv import DerivativeModel  # noqa: E402


def build(d, width, depth=4):
    layers = [keras.Input((d,))]
    layers += [keras.layers.Dense(width, activation="tanh") for _ in range(depth)]
    return keras.Sequential([*layers, keras.layers.Dense(1)])


def pure_function(net, dtype):
    """The same network as a pure JAX function of one point `(d,)`."""
    params = [
        (
            jnp.asarray(layer.kernel.numpy(), dtype),
            jnp.asarray(layer.bias.numpy(), dtype),
        )
        for layer in net.layers
    ]

    def f(x):
        h = x
        for w, b in params[:-1]:
            h = jnp.tanh(h @ w + b)
        w, b = params[-1]
        return (h @ w + b)[0]

    return f


def timed(fn, x, repeats):
    jax.block_until_ready(fn(x))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(x))
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--d", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    net = build(args.d, args.width)
    x = jnp.asarray(
        np.random.default_rng(0).uniform(-1, 1, (args.points, args.d)), "float32"
    )
    f32 = pure_function(net, jnp.float32)

    def keras_laplacian(method):
        layer = DerivativeModel(net, order=2, hessian="laplacian", method=method)
        inputs = keras.Input((args.d,))
        model = keras.Model(inputs, layer(inputs))
        tv = [v.value for v in model.trainable_variables]
        ntv = [v.value for v in model.non_trainable_variables]
        run = jax.jit(lambda x: model.stateless_call(tv, ntv, x)[0][2][:, 0])
        return run

    import folx

    methods = {
        "forward": jax.jit(jax.vmap(f32)),
        "keras_deriv taylor": keras_laplacian("taylor"),
        "keras_deriv autodiff": keras_laplacian("autodiff"),
        "folx forward_laplacian": jax.jit(
            jax.vmap(lambda p: folx.forward_laplacian(f32)(p).laplacian)
        ),
        "jax.hessian trace": jax.jit(
            jax.vmap(lambda p: jnp.trace(jax.hessian(f32)(p)))
        ),
    }
    f64 = pure_function(net, jnp.float64)
    n_ref = min(1000, args.points)
    reference = np.asarray(
        jax.vmap(lambda p: jnp.trace(jax.hessian(f64)(p)))(
            jnp.asarray(x[:n_ref], jnp.float64)
        )
    )
    print(
        f"{jax.devices()[0].device_kind}, {args.points} points, d={args.d}, "
        f"width {args.width}x4 tanh, float32, matmul precision highest, "
        f"median of {args.repeats}"
    )
    print(f"{'method':<26}{'ms':>10}{'x forward':>11}{'x folx':>9}{'max rel err':>14}")
    with jax.default_matmul_precision("highest"):
        results = {name: timed(fn, x, args.repeats) for name, fn in methods.items()}
        errors = {}
        for name, fn in methods.items():
            if name == "forward":
                continue
            got = np.asarray(fn(x))[:n_ref]
            errors[name] = float(
                np.max(np.abs(got - reference)) / np.max(np.abs(reference))
            )
    base, folx_ms = results["forward"], results["folx forward_laplacian"]
    for name, ms in results.items():
        err = f"{errors[name]:.1e}" if name in errors else ""
        print(f"{name:<26}{ms:10.3f}{ms / base:10.2f}x{ms / folx_ms:8.2f}x{err:>14}")


if __name__ == "__main__":
    main()
