"""Pure partials on JAX: nested `jax.jvp` against `jax.experimental.jet`, for
evaluation and for a training step, interleaved, median of repeats.

    KERAS_BACKEND=jax python benchmarks/jet_jax.py --repeats 15

Network: d -> 64x4 tanh -> 1 built with Keras, 1000 points, float32, called
through `stateless_call` inside `jax.jit`. Outputs: `[y, J, D2, ..., Dk]`
along each of the d features (the Hessian diagonal for k = 2), both
contenders vectorised over the directions with `jax.vmap` as
`keras_deriv.backend.jax` does (`--layout batch` instead repeats the points
once per direction). A training step is `jax.value_and_grad` of a loss on
every level with respect to the weights. Nested jvps cost 2^k passes for
order k before XLA merges the repeated ones; a jet propagates k + 1 Taylor
terms. The contenders are checked to agree (values and weight gradients)
before timing. The column "library" is `keras_deriv.backend.jax`'s own
`nested_derivatives` (whatever it picks), with its own vmap layout.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import jet  # noqa: E402

from keras_deriv.backend import jax as library  # noqa: E402


def build(d):
    keras.utils.set_random_seed(0)
    layers = [keras.Input((d,))]
    layers += [keras.layers.Dense(64, activation="tanh") for _ in range(4)]
    return keras.Sequential([*layers, keras.layers.Dense(1)])


def nested_jvp(f, x, v, order):
    """`[f, D_v f, ..., D_v^order f]` at `x`, by nested jvps."""

    def levels(k):
        if k == 0:
            return lambda z: (f(z),)
        inner = levels(k - 1)

        def nested(z):
            primals, tangents = jax.jvp(inner, (z,), (v,))
            return (*primals, tangents[-1])

        return nested

    return list(levels(order)(x))


def taylor_jet(f, x, v, order):
    """The same, by one jet of `order` + 1 terms along `v`."""
    zero = jnp.zeros_like(x)
    y, terms = jet.jet(f, (x,), ((v, *[zero] * (order - 1)),))
    return [y, *terms]


def pure_partials(along, layout):
    """`[y, J, D2, ..., Dk]` (each `(B, m, d)`, `y` `(B, m)`) from `along`."""

    def partials(f, x, order):
        n, d = x.shape
        eye = jnp.eye(d, dtype=x.dtype)
        if layout == "vmap":
            basis = jnp.broadcast_to(eye[:, None, :], (d, n, d))
            y, *rest = jax.vmap(lambda v: along(f, x, v, order), out_axes=-1)(basis)
            return [y[..., 0], *rest]
        v = jnp.repeat(eye, n, axis=0)
        levels = along(f, jnp.tile(x, (d, 1)), v, order)
        levels = [jnp.moveaxis(t.reshape(d, n, -1), 0, -1) for t in levels]
        return [levels[0][..., 0], *levels[1:]]

    return partials


def library_partials(f, x, order):
    return library.nested_derivatives(f, x, order, False, tuple(range(x.shape[1])))


def compiled(net, impl, order):
    """`(evaluate, train_step)`, both jitted functions of `(weights, x)`."""
    fixed = [v.value for v in net.non_trainable_variables]

    def levels(weights, x):
        return impl(lambda z: net.stateless_call(weights, fixed, z)[0], x, order)

    def loss(weights, x):
        return sum(jnp.mean(jnp.square(t)) for t in levels(weights, x))

    return jax.jit(levels), jax.jit(jax.value_and_grad(loss))


def check(reference, other, name):
    """Agreement within float32 rounding, relative to each level's scale."""
    leaves = zip(jax.tree.leaves(reference), jax.tree.leaves(other), strict=True)
    for k, (a, b) in enumerate(leaves):
        scale = max(1.0, float(jnp.max(jnp.abs(a))))
        np.testing.assert_allclose(
            b, a, rtol=0, atol=1e-4 * scale, err_msg=f"{name}, leaf {k}"
        )


def ratio(times, reference):
    """The median of the per-repeat ratios (interleaved: a shared load
    slows both alike)."""
    return statistics.median(a / b for a, b in zip(times, reference, strict=True))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--features", type=int, nargs="+", default=[1, 2, 10])
    parser.add_argument("--orders", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--layout", choices=("vmap", "batch"), default="vmap")
    args = parser.parse_args()
    contenders = {
        "jvp": pure_partials(nested_jvp, args.layout),
        "jet": pure_partials(taylor_jet, args.layout),
        "library": library_partials,
    }
    print(
        f"{jax.devices()[0].device_kind}, {args.points} points, d -> 64x4 tanh -> 1, "
        f"float32, layout {args.layout}; ms per call, median of {args.repeats} "
        "interleaved repeats; ratios: medians of per-repeat ratios"
    )
    header = f"{'d':>3} {'k':>2} {'step':<6}" + "".join(
        f"{name:>9}" for name in contenders
    )
    print(header + f"{'jet/jvp':>9}{'lib/jvp':>9}")
    for d in args.features:
        net = build(d)
        weights = [v.value for v in net.trainable_variables]
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.uniform(-1, 1, (args.points, d)), "float32")
        for order in args.orders:
            fns = {name: compiled(net, f, order) for name, f in contenders.items()}
            for step in (0, 1):
                results = {name: fn[step](weights, x) for name, fn in fns.items()}
                for name, result in results.items():
                    check(results["jvp"], result, f"{name}, d={d}, k={order}")
                times = {name: [] for name in fns}
                for _ in range(args.repeats):
                    for name, fn in fns.items():
                        start = time.perf_counter()
                        jax.block_until_ready(fn[step](weights, x))
                        times[name].append(time.perf_counter() - start)
                ratios = "".join(
                    f"{ratio(times[name], times['jvp']):9.2f}"
                    for name in ("jet", "library")
                )
                ms = "".join(
                    f"{1e3 * statistics.median(t):9.2f}" for t in times.values()
                )
                label = ("eval", "train")[step]
                print(f"{d:>3} {order:>2} {label:<6}{ms}{ratios}", flush=True)


if __name__ == "__main__":
    main()
