"""The Laplacian in d = 100 to 10,000 dimensions: exact forward Laplacian
against Hutchinson's estimate with k random directions, per step.

    KERAS_BACKEND=jax python benchmarks/high_dim_laplacian.py \
        [--dims 100,1000,10000] [--points 128] [--width 128] [--directions 16] \
        [--repeats 10]

A 3-hidden-layer tanh MLP (d -> width x 3 -> 1), `points` points per batch,
on JAX (XLA). For each d, the contenders are compiled once with
`jax.jit` over Keras's `stateless_call`, checked (the estimate's mean over
64 draws against the exact Laplacian, in standard errors; a hand-written
exact Laplacian against keras_deriv's), then timed interleaved, each next
to a hand-written JAX forward Laplacian along as many directions (the
identity's rows, or k Rademacher rows / √k): an evaluation (y and the
Laplacian) and a training step (the gradient of mean(y²) + mean(Δy²) in
the weights). Memory is measured
in a fresh process per contender and step: its peak resident memory
while running the step, less its resident memory before (imports, the
model and the points loaded, a plain forward pass and the step compiled,
Linux's peak reset through /proc/self/clear_refs). Also
printed: the estimate's relative error at one draw, RMS over the points.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_deriv import DerivativeModel, Hutchinson, laplacian  # noqa: E402


def mlp(d, width):
    keras.utils.set_random_seed(0)
    layers = [keras.Input((d,))]
    layers += [keras.layers.Dense(width, activation="tanh") for _ in range(3)]
    return keras.Sequential([*layers, keras.layers.Dense(1)])


def programs(layer, x):
    """`(evaluate, train_step, state)`: jitted functions of the weights."""
    layer(x[:2])
    trainable = [v.value for v in layer.trainable_variables]
    frozen = [v.value for v in layer.non_trainable_variables]

    def outputs(values, frozen, x):
        out, _ = layer.stateless_call(values, frozen, x)
        return (out["y"], out["lap"]) if isinstance(out, dict) else (out[0], out[2])

    def loss(values, frozen, x):
        y, lap = outputs(values, frozen, x)
        return keras.ops.mean(y**2) + keras.ops.mean(lap**2)

    return jax.jit(outputs), jax.jit(jax.grad(loss)), (trainable, frozen)


def hand_laplacian(params, x, directions):
    """`(y, Σ_v D²_v y)` along the rows of `directions` `(r, d)`, by a
    hand-written forward Laplacian of the tanh MLP `params` (the exact
    Laplacian for the identity, Hutchinson's estimate for random rows
    scaled by 1/√r)."""
    jnp = jax.numpy
    *hidden, (w_out, b_out) = params
    h, first, second = x, directions, None  # first: (r, width), same per point
    for w, b in hidden:
        z, jz = h @ w + b, first @ w
        t = jnp.tanh(z)
        t1 = 1 - t**2
        jz2 = jnp.sum(jz**2, axis=-2)  # (width,) or (B, width)
        second = (0 if second is None else t1 * (second @ w)) + (-2 * t * t1) * jz2
        h, first = t, t1[:, None, :] * jz
    return h @ w_out + b_out, second @ w_out


def hand_programs(net, directions, k=None):
    """As `programs`, for `hand_laplacian` along `directions` (None: k random
    Rademacher rows / √k, drawn from the key in `frozen`)."""
    values = [v.value for v in net.trainable_variables]

    def outputs(values, frozen, x):
        params = list(zip(values[::2], values[1::2], strict=True))
        if directions is None:
            signs = jax.random.rademacher(frozen[0], (k, x.shape[1]), "float32")
            rows = signs / np.sqrt(k)
        else:
            rows = directions
        return hand_laplacian(params, x, rows)

    def loss(values, frozen, x):
        y, lap = outputs(values, frozen, x)
        return jax.numpy.mean(y**2) + jax.numpy.mean(lap**2)

    frozen = [jax.random.key(0)]
    return jax.jit(outputs), jax.jit(jax.grad(loss)), (values, frozen)


def contenders_for(d, args):
    """`(x, {name: (evaluate, train_step, (weights, frozen))})`."""
    net = mlp(d, args.width)
    x = np.random.default_rng(0).uniform(-1, 1, (args.points, d)).astype("float32")
    exact = DerivativeModel(net, order=2, hessian="laplacian", method="taylor")
    estimate = DerivativeModel(
        net,
        partials={"lap": laplacian(d)},
        estimator=Hutchinson(args.directions, seed=0),
        method="taylor",
    )
    return x, {
        "exact": programs(exact, x),
        "exact, hand-written": hand_programs(net, np.eye(d, dtype="float32")),
        "estimate": programs(estimate, x),
        "estimate, hand-written": hand_programs(net, None, args.directions),
    }


def rss_mib():
    """Resident memory now, MiB (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mib():
    """Peak resident memory since the last `reset_peak()`, MiB (Linux)."""
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def one_memory(d, name, step, args):
    """In this (fresh) process: the peak memory of one contender's step."""
    x, contenders = contenders_for(d, args)
    evaluate, train, (values, frozen) = contenders[name]
    fn = (evaluate, train)[step]
    compiled = fn.lower(values, frozen, x).compile()
    before = rss_mib()
    reset_peak()
    jax.block_until_ready(compiled(values, frozen, x))
    print(peak_mib() - before)


def memory_of(d, name, step, args):
    command = [sys.executable, __file__, "--one", f"{d};{name};{step}"]
    for flag in ("points", "width", "directions"):
        command += [f"--{flag}", str(getattr(args, flag))]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def timed(fn, *args):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", default="100,1000,10000")
    parser.add_argument("--points", type=int, default=128)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--directions", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        d, name, step = args.one.split(";")
        return one_memory(int(d), name, int(step), args)
    k = args.directions
    print(
        f"JAX {jax.__version__} on {jax.devices()[0].device_kind}, keras "
        f"{keras.__version__}: d -> {args.width} x 3 tanh -> 1, {args.points} "
        f"points, estimate with k = {k}, medians of {args.repeats} interleaved"
    )
    header = (
        "| d | step | exact ms (× hand) | estimate ms (× hand) | estimate ÷ exact "
        "| exact MiB | estimate MiB | error of one draw |"
    )
    print(header + "\n|---|---|---|---|---|---|---|---|")
    for d in (int(s) for s in args.dims.split(",")):
        x, contenders = contenders_for(d, args)
        # Check: the exact Laplacians agree; the estimate's mean over draws
        # is the exact Laplacian.
        ev, _, (w, frozen) = contenders["exact"]
        reference = np.asarray(ev(w, frozen, x)[1])[:, 0]
        hv, _, (hw, hfrozen) = contenders["exact, hand-written"]
        hand = np.asarray(hv(hw, hfrozen, x)[1])[:, 0]
        scale = np.abs(reference).max()
        assert np.abs(hand - reference).max() < 1e-4 * scale, "exact disagree"
        es, _, (w2, frozen2) = contenders["estimate"]
        draws = []
        for seed in range(64):
            state = [np.array([seed, 0], dtype="uint32")]
            draws.append(np.asarray(es(w2, state, x)[1])[:, 0])
        draws = np.asarray(draws)
        z = np.abs(draws.mean(0) - reference) / (draws.std(0, ddof=1) / 8)
        assert np.median(z) < 2 and z.max() < 5, f"estimate biased? z = {z.max():.1f}"
        relative = np.sqrt(np.mean((draws[0] - reference) ** 2) / np.mean(reference**2))
        for step in (0, 1):
            times = {name: [] for name in contenders}
            memory = {}
            for name, (evaluate, train, (values, frozen)) in contenders.items():
                fn = (evaluate, train)[step]
                memory[name] = memory_of(d, name, step, args)
                timed(fn, values, frozen, x)  # compile, warm up
            for _ in range(args.repeats):
                for name, (evaluate, train, (values, frozen)) in contenders.items():
                    fn = (evaluate, train)[step]
                    times[name].append(timed(fn, values, frozen, x))
            ms = {n: 1e3 * statistics.median(t) for n, t in times.items()}
            exact, estimate = ms["exact"], ms["estimate"]
            print(
                f"| {d} | {('evaluation', 'training')[step]} | {exact:.1f} "
                f"({exact / ms['exact, hand-written']:.2f}) | {estimate:.1f} "
                f"({estimate / ms['estimate, hand-written']:.2f}) | "
                f"{estimate / exact:.3f} | {memory['exact']:.0f} | "
                f"{memory['estimate']:.0f} | {relative:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
