"""keras_deriv against its peers on TensorFlow, side by side in one process.

    KERAS_BACKEND=tensorflow python benchmarks/peers.py [--repeats 50]
        [--points 1000] [--workloads W1,W2,W3,W4,W5]
        [--modes plain,xla | --xla | --no-xla]

Needs the `bench` extra (`pip install -e .[bench]`) for DeepXDE; without
it that peer is skipped with the reason printed.

Every row runs in each compilation mode of `--modes` (default both):
"plain", `tf.function(fn)`, and "xla", `tf.function(fn, jit_compile=True)`;
"auto" is what `model.fit` resolves `jit_compile="auto"` to here (below).
`--xla` is `--modes xla`, `--no-xla` is `--modes plain`.

For each workload: a table of median milliseconds (medians of `--repeats`
calls after a warm-up, every call on new points, all rows of all modes
interleaved round by round, so that a load change on a shared machine hits
every row alike; within a round, each mode's rows in a random order, after
one untimed call that absorbs the cost of switching modes), per mode, with
the ratio to the plain forward pass and to the hand-written reference of
the same mode; then the targets with a verdict. Before timing, every row's
output in every mode is checked against every other's to 1e-4 relative; a
mismatch is printed in capitals and the script exits with status 1 at the
end. Each row is also probed once with new input values: a row whose
compiled program is specialised on the values of x (XLA then recompiles
for every new input, and repeated calls on one input only copy cached
results) is marked (!) and timed per call on new points, compilation
included; its ratio is not a speed. At the end, a Markdown table of every
workload.

Compilation: `model.fit` compiles as follows. Keras 3
`compile(jit_compile="auto")` resolves `"auto"` in
`keras/src/trainers/trainer.py` (`Trainer._resolve_auto_jit_compile`): on
TensorFlow it returns False when no non-CPU device is visible ("Disable XLA
on CPU-only machines"), else `model_supports_jit(...)`; the TF trainer
(`keras/src/backend/tensorflow/trainer.py`, `_make_function`) then wraps the
train step in `tf.function(jit_compile=self.jit_compile)`. So on a CPU-only
machine `fit` runs plain `tf.function` graphs, *not* XLA; with a GPU it uses
`tf.function(jit_compile=True)`. The header says which mode `fit` would use
here (a compiled probe model's `.jit_compile`). DeepXDE's TF2 backend makes
the same choice (XLA only with a GPU, `deepxde/config.py`).

Rows. Ours: `DerivativeModel(net, order=2, hessian=..., method=...)` in a
`keras.Model`, called with `training=False` inside the compiled function.
Peers (each a user's natural recipe):

- nested GradientTape: inner tape for dy (sum trick), outer tape for d2y; for
  the Laplacian the outer tape's `batch_jacobian` of the gradient, traced.
- nested ForwardAccumulator: forward-over-forward along v = e_i; for d > 1
  one nested pass per direction (a Python loop over the d unit vectors).
  Under XLA its programs are specialised on the input values (see above).
- nested keras.ops.jvp: the same with Keras's `ops.jvp` (on TensorFlow it
  is a ForwardAccumulator); a loop over the d directions for the Laplacian.
- DeepXDE: `dde.grad.jacobian(y, x, i=0, j=...)` and `dde.grad.hessian(y,
  x, i=k, j=k)` on the network's output tensor, as in a PDE residual. Its
  TF2 backend (`deepxde/gradients/gradients_reverse.py`) differentiates the
  graph with `tf.gradients(y, x)`, so it works only inside a `tf.function`
  (as DeepXDE's own trainer calls it) and needs y computed from x in that
  function: no tape, no function argument. Hessian row k is one
  `tf.gradients` of the cached gradient column, so the Laplacian costs d
  second-order reverse passes. The cache is cleared per trace.
- hand-written (reference, not a peer): raw TF on the Dense weights, as in
  DESIGN.md's Algorithms: a Taylor pass (h, h', h'') for d = 1 and a forward
  Laplacian (h, J, L) for d = 10.

Workloads: W1 the question's net 1 -> 1024 relu -> 1; W2 a PINN net
1 -> 64x4 tanh -> 1; W3 the Laplacian of 10 -> 64x4 tanh -> 1; W4 one Adam
training step with a loss on y and y'' (W2 net; checked by the loss and the
weight gradients), and `model.fit` of a Keras model whose outputs are
DerivativeModel's (informative); W5 `keras_deriv.derivatives` on 10^6
points, in a subprocess: its peak memory (VmHWM) minus that of a subprocess
that only imports, builds the net and makes x, and its rate against one
batch of the default chunk size. (Not `ru_maxrss`/`RUSAGE_CHILDREN`: on
Linux a child's ru_maxrss includes its parent's size at fork, here the
~1 GB of this process.) W5 uses `derivatives()` as a user calls it,
compiled as `predict` compiles it (`--modes` does not apply).
"""

import argparse
import contextlib
import dataclasses
import io
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_deriv  # noqa: E402
from keras_deriv import DerivativeModel  # noqa: E402

TOLERANCE = 1e-4
ALL_WORKLOADS = ("W1", "W2", "W3", "W4", "W5")
MODES = ("plain", "xla")
MODE_NAMES = {"plain": "tf.function", "xla": "XLA"}
XLA_TARGET = 1.1  # ours / hand-written reference, under XLA


@dataclasses.dataclass
class Row:
    """One timed method in one compilation mode: `fn(x)` is compiled;
    `check(x)` gives the values compared against the other rows' (None: not
    compared)."""

    key: str
    label: str
    kind: str  # "forward", "ours", "peer", "hand"
    fn: Callable
    check: Callable | None = None
    mode: str = "plain"  # "plain" or "xla"
    per_value: bool = False  # recompiles for every new input value

    @property
    def id(self):
        return self.key, self.mode


# -- networks ---------------------------------------------------------------


def question_net():
    return keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(1024, activation="relu"),
            keras.layers.Dense(1),
        ]
    )


def pinn_net(d=1):
    layers = [keras.Input((d,))]
    layers += [keras.layers.Dense(64, activation="tanh") for _ in range(4)]
    return keras.Sequential([*layers, keras.layers.Dense(1)])


def dense_layers(net):
    return [layer for layer in net.layers if isinstance(layer, keras.layers.Dense)]


def points(n, d, seed=0):
    x = np.random.default_rng(seed).uniform(size=(n, d)).astype("float32")
    return tf.constant(x)


# -- compilation --------------------------------------------------------------


def fit_jit_compile():
    """What `fit` resolves `jit_compile="auto"` to on this machine."""
    probe = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    probe.compile(optimizer="sgd", loss="mse")
    return bool(probe.jit_compile)


def compiled(fn, mode):
    return tf.function(fn, jit_compile=mode == "xla")


def or_zeros(t, like):
    return tf.zeros_like(like) if t is None else t


# -- ours ---------------------------------------------------------------------


def ours_model(net, d, hessian, method):
    inputs = keras.Input((d,))
    layer = DerivativeModel(net, order=2, hessian=hessian, method=method)
    return keras.Model(inputs, layer(inputs))


def ours(net, d, hessian, method):
    model = ours_model(net, d, hessian, method)
    return lambda x: model(x, training=False)


# -- peers: [y, dy, d2y] along one direction (d = 1) --------------------------


def nested_tapes(net, x):
    """The recipe's two tapes: y, dy = dy/dx (sum trick) and the outer tape,
    which recorded dy."""
    with tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            y = net(x, training=False)
        dy = inner.gradient(y, x)
    return y, dy, outer


def tape_d1(net):
    def run(x):
        y, dy, outer = nested_tapes(net, x)
        return y, dy, outer.gradient(dy, x, unconnected_gradients="zero")

    return run


def accumulator_pass(net, x, v):
    """y, D_v y, D_v^2 y by nested ForwardAccumulators."""
    zero = tf.UnconnectedGradients.ZERO
    with tf.autodiff.ForwardAccumulator(x, v) as outer:
        with tf.autodiff.ForwardAccumulator(x, v) as inner:
            y = net(x, training=False)
        dy = inner.jvp(y, unconnected_gradients=zero)
    return y, dy, outer.jvp(dy, unconnected_gradients=zero)


def ops_jvp_pass(net, x, v):
    """y, D_v y, D_v^2 y by nested keras.ops.jvp."""

    def first(z):
        y, dy = keras.ops.jvp(lambda u: net(u, training=False), (z,), (v,))
        return dy, y

    dy, d2y, y = keras.ops.jvp(first, (x,), (v,), has_aux=True)
    return y, dy, or_zeros(d2y, dy)  # None: not connected (ReLU)


def accumulator_d1(net):
    return lambda x: accumulator_pass(net, x, tf.ones_like(x))


def ops_jvp_d1(net):
    return lambda x: ops_jvp_pass(net, x, tf.ones_like(x))


def deepxde_d1(dde, net):
    def run(x):
        dde.grad.clear()  # its cache is keyed by tensor; one trace, one cache
        y = net(x, training=False)
        dy = dde.grad.jacobian(y, x, i=0, j=0)
        return y, dy, dde.grad.hessian(y, x, i=0, j=0)

    return run


# -- peers: [y, grad, Laplacian] (d > 1) --------------------------------------


def tape_laplacian(net):
    def run(x):
        y, grad, outer = nested_tapes(net, x)
        return y, grad, tf.linalg.trace(outer.batch_jacobian(grad, x))

    return run


def directional_laplacian(one_pass, net):
    """The Laplacian as the sum of D_i^2 y over the d unit directions, one
    nested forward pass per direction."""

    def run(x):
        d = x.shape[-1]
        grads, laplacian = [], 0.0
        for i in range(d):
            v = tf.zeros_like(x) + tf.one_hot(i, d, dtype=x.dtype)  # e_i
            y, dy, d2y = one_pass(net, x, v)
            grads.append(dy)
            laplacian = laplacian + d2y
        return y, tf.concat(grads, axis=-1), laplacian

    return run


def deepxde_laplacian(dde, net):
    def run(x):
        dde.grad.clear()
        y = net(x, training=False)
        grad = dde.grad.jacobian(y, x, i=0)
        d = x.shape[-1]
        laplacian = sum(dde.grad.hessian(y, x, i=k, j=k) for k in range(d))
        return y, grad, laplacian

    return run


# -- hand-written references (raw TF on the weights) --------------------------


def activation_derivatives(name, z):
    """f(z), f'(z), f''(z) (None where identically zero)."""
    if name == "tanh":
        t = tf.tanh(z)
        d1 = 1.0 - t * t
        return t, d1, -2.0 * t * d1
    if name == "relu":
        return tf.nn.relu(z), tf.cast(z > 0, z.dtype), None
    raise ValueError(f"no hand-written rule for activation {name!r}")


def activation_name(layer):
    return keras.activations.serialize(layer.activation)


def hand_taylor(net):
    """(h, h', h'') through the Dense layers, for d = 1 (DESIGN.md)."""
    layers = [(layer, activation_name(layer)) for layer in dense_layers(net)]

    def run(x):
        h, h1, h2 = x, None, None  # x' = 1 (folded in below), x'' = 0
        for layer, name in layers:
            w = layer.kernel.value
            z = tf.matmul(h, w) + layer.bias.value
            z1 = w if h1 is None else tf.matmul(h1, w)  # first layer: 1 * W
            z2 = None if h2 is None else tf.matmul(h2, w)
            if name == "linear":
                h, h1, h2 = z, z1, z2
                continue
            h, f1, f2 = activation_derivatives(name, z)
            terms = [f1 * z2] if z2 is not None else []
            if f2 is not None:
                terms.append(f2 * z1 * z1)
            h1, h2 = f1 * z1, tf.add_n(terms) if terms else None
        return h, h1, or_zeros(h2, h)

    return run


def hand_forward_laplacian(net):
    """(h, J, L) through the Dense layers (Li et al. 2023; DESIGN.md)."""
    layers = [(layer, activation_name(layer)) for layer in dense_layers(net)]

    def run(x):
        h, jac, lap = x, None, None  # J = identity, L = 0 at the input
        for layer, name in layers:
            w = layer.kernel.value
            z = tf.matmul(h, w) + layer.bias.value
            if jac is None:
                jz = w[None]  # (1, d, F)
            else:
                flat = tf.matmul(tf.reshape(jac, (-1, jac.shape[-1])), w)
                jz = tf.reshape(flat, (-1, jac.shape[1], w.shape[-1]))
            lz = None if lap is None else tf.matmul(lap, w)
            if name == "linear":
                h, jac, lap = z, jz, lz
                continue
            h, f1, f2 = activation_derivatives(name, z)
            jac = f1[:, None, :] * jz
            terms = [f1 * lz] if lz is not None else []
            if f2 is not None:
                terms.append(f2 * tf.reduce_sum(jz * jz, axis=1))
            lap = tf.add_n(terms) if terms else None
        return h, jac[:, :, 0], or_zeros(lap, h)

    return run


# -- DeepXDE --------------------------------------------------------------------


def load_deepxde():
    """The `deepxde` module on its TensorFlow backend, or the reason why not."""
    os.environ.setdefault("DDE_BACKEND", "tensorflow")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            with contextlib.redirect_stderr(io.StringIO()):
                import deepxde
    except Exception as err:  # noqa: BLE001 - any import failure skips the peer
        return None, f"import deepxde failed: {type(err).__name__}: {err}"
    name = deepxde.backend.backend_name
    if name != "tensorflow":
        return None, f"DeepXDE is on backend {name!r}, not 'tensorflow'"
    return deepxde, None


# -- timing and checking ----------------------------------------------------------


def to_numpy(values):
    return [np.asarray(v) for v in keras.tree.flatten(values)]


def relative_error(values, reference):
    worst = 0.0
    for a, b in zip(values, reference, strict=False):
        a, b = np.ravel(a), np.ravel(b)
        if a.shape != b.shape:
            return float("inf")
        scale = float(np.max(np.abs(b))) or 1.0
        worst = max(worst, float(np.max(np.abs(a - b))) / scale)
    return worst


def seconds(fn, x):
    start = time.perf_counter()
    to_numpy(fn(x))
    return time.perf_counter() - start


def recompiles_per_value(fn, x, new_x):
    """Whether a call on new input values costs a compilation: XLA then
    treats x as a constant and caches one program per value, so timing
    repeated calls on one input measures a copy of cached results."""
    same, new = seconds(fn, x), seconds(fn, new_x)
    return new > 10 * same and new - same > 0.05


def first_calls(rows, x, new_x):
    """Compute every row's checked values (all before any timed call: a
    training step changes the weights), then call each row once (tracing
    and compiling it) and probe for recompilation. Rows that fail are
    printed with the reason and dropped. Returns (rows, checked values)."""
    values, failed = {}, {}

    def attempt(row, action):
        if row.id in failed:
            return
        try:
            action(row)
        except Exception as err:  # noqa: BLE001 - report and drop the row
            failed[row.id] = f"{type(err).__name__}: {err}"

    def check(row):
        if row.check is not None:
            values[row.id] = to_numpy(row.check(x))

    def compile_and_probe(row):
        to_numpy(row.fn(x))
        row.per_value = recompiles_per_value(row.fn, x, new_x)

    for action in (check, compile_and_probe):
        for row in rows:
            attempt(row, action)
    for row in rows:
        if row.id in failed:
            print(f"  FAILED {name(row)}: {failed[row.id]}"[:400])
    return [row for row in rows if row.id not in failed], values


def name(row):
    return f"{row.label} ({MODE_NAMES[row.mode]})"


MISMATCHES = []  # names of the rows whose check failed, for the exit status


def verify(rows, values):
    """Every checked row against every other, in every mode."""
    checked = [row for row in rows if row.id in values]
    errors = {}
    for i, a in enumerate(checked):
        for b in checked[i + 1 :]:
            errors[name(a), name(b)] = relative_error(values[a.id], values[b.id])
    bad = {pair: err for pair, err in errors.items() if not err <= TOLERANCE}
    for (a, b), err in bad.items():
        print(f"  !!! CHECK FAILED: {a} differs from {b} by {err:.2e}")
        MISMATCHES.append(f"{a} / {b}")
    if errors and not bad:
        a, b = max(errors, key=errors.get)
        print(
            f"  check: all {len(checked)} rows agree within {TOLERANCE:g} relative "
            f"(worst {errors[a, b]:.1e}: {a} / {b})"
        )


def median_ms(rows, xs, repeats, warmup=3):
    """Median ms of each row on new points at every call (`xs`, one input
    per round), the rows interleaved round by round. In a round each mode's
    rows run together, in a new random order (a fixed or rotated order
    keeps each row behind the same row), the modes in turn first; one
    untimed call precedes each mode's rows: an XLA call right after plain
    `tf.function` calls runs ~1.3x slower, only the first. A row that
    recompiles per input value gets the median of 3 calls on new points
    instead."""
    timed = [row for row in rows if not row.per_value]
    for row in timed:
        for i in range(warmup):
            to_numpy(row.fn(xs[i % len(xs)]))
    times = {row.id: [] for row in rows}
    rng = np.random.default_rng(0)
    blocks = [[row for row in timed if row.mode == mode] for mode in modes_of(timed)]
    for r in range(repeats):
        x = xs[r % len(xs)]
        for block in blocks if r % 2 == 0 else blocks[::-1]:
            to_numpy(block[0].fn(x))  # untimed: the first call after a switch
            for i in rng.permutation(len(block)):
                times[block[i].id].append(seconds(block[i].fn, x))
    for row in rows:
        if row.per_value:
            times[row.id] = [seconds(row.fn, x) for x in xs[-3:]]
    return {key: 1e3 * float(np.median(t)) for key, t in times.items()}


def fastest_peer(rows, ms):
    peers = [row for row in rows if row.kind == "peer"]
    return min(peers, key=lambda row: ms[row.key], default=None)


def modes_of(rows):
    return [mode for mode in MODES if any(row.mode == mode for row in rows)]


def of_mode(rows, ms, mode):
    """The rows of one mode, and their ms by key."""
    picked = [row for row in rows if row.mode == mode]
    return picked, {row.key: ms[row.id] for row in picked}


def methods(rows):
    """(label [kind], {mode: row}) of each method, in the rows' order."""
    grouped = {}
    for row in rows:
        grouped.setdefault(row.key, (row, {}))[1][row.mode] = row
    return [(first, by_mode) for first, by_mode in grouped.values()]


def cell(row, ms, forward, hand):
    """ms, x forward, x hand of one row ("-" where there is no such row or
    the row recompiles per input value: its time is then no speed)."""
    t = ms[row.id]
    if row.per_value:
        return f"{t:.1f} (!)", "-", "-"
    ratio = lambda ref: f"{t / ref:.2f}x" if ref else "-"  # noqa: E731
    return f"{t:.3f}", ratio(forward), ratio(hand)


def print_table(rows, ms):
    """One line per method; per mode: ms, x forward, x hand-written."""
    modes = modes_of(rows)
    refs = {}
    for mode in modes:
        _, mode_ms = of_mode(rows, ms, mode)
        refs[mode] = mode_ms.get("forward"), mode_ms.get("hand")
    top = f"  {'':<46}"
    head = f"  {'method':<46}"
    for mode in modes:
        top += f"{MODE_NAMES[mode]:^34}"
        head += f"{'ms':>14}{'x forward':>10}{'x hand':>10}"
    print(top)
    print(head)
    for first, by_mode in methods(rows):
        line = f"  {first.label + ' [' + first.kind + ']':<46}"
        for mode in modes:
            if mode not in by_mode:
                line += f"{'-':>14}{'':>10}{'':>10}"
                continue
            t, fwd, hand = cell(by_mode[mode], ms, *refs[mode])
            line += f"{t:>14}{fwd:>10}{hand:>10}"
        print(line)
    if any(row.per_value for row in rows):
        print(
            "  (!) recompiles for every new input value (XLA specialises on the "
            "values of x): ms per call on new points, compilation included"
        )


SUMMARY = []  # (workload, rows, ms) of every workload run, for the Markdown


def run_rows(rows, x, xs, repeats, workload):
    """Check, time and print `rows`: x for the checks, xs (distinct inputs)
    for the timing. Returns (ms by row id, the rows that ran)."""
    rows, values = first_calls(rows, x, xs[0])  # not among xs[-3:]
    verify(rows, values)
    ms = median_ms(rows, xs, repeats)
    print_table(rows, ms)
    SUMMARY.append((workload, rows, ms))
    return ms, rows


def report_hand(rows, ms, reference):
    """The target of every ours row under XLA: within XLA_TARGET of the
    hand-written reference of the same mode."""
    picked, mode_ms = of_mode(rows, ms, "xla")
    if not picked or "hand" not in mode_ms:
        return
    print(f"  target (XLA): ours <= {XLA_TARGET}x the {reference}")
    for row in picked:
        if row.kind == "ours":
            ratio = mode_ms[row.key] / mode_ms["hand"]
            print(f"    {row.label}: {ratio:.2f}x {verdict(ratio <= XLA_TARGET)}")


def per_mode(report, rows, ms):
    """Call report(ms by key, rows) once per mode, under the mode's name."""
    for mode in modes_of(rows):
        print(f"  [{MODE_NAMES[mode]}]")
        picked, mode_ms = of_mode(rows, ms, mode)
        report(mode_ms, picked)


def print_markdown():
    """Every workload's table as one Markdown table, for the docs."""
    modes = [m for m in MODES if any(m in modes_of(r) for _, r, _ in SUMMARY)]
    head = "| workload | method |"
    rule = "|---|---|"
    for mode in modes:
        head += f" {MODE_NAMES[mode]} ms | × hand |"
        rule += "---|---|"
    print(
        "\nMarkdown (ms, and the ratio to the hand-written reference of the "
        "same mode; (!) recompiles per input value: ms per call, compiling):\n"
    )
    print(head)
    print(rule)
    for workload, rows, ms in SUMMARY:
        for first, by_mode in methods(rows):
            line = f"| {workload} | {first.label} |"
            for mode in modes:
                if mode not in by_mode:
                    line += " | |"
                    continue
                hand = ms.get(("hand", mode))
                t, _, ratio = cell(by_mode[mode], ms, None, hand)
                line += f" {t} | {ratio.replace('x', '×')} |"
            print(line)


def fresh_inputs(n, d, repeats):
    """Distinct inputs for the timing (at least 4), none equal to
    `points(n, d)`."""
    return [points(n, d, seed=seed) for seed in range(1, max(repeats, 4) + 1)]


def verdict(ok):
    return "-> MET" if ok else "-> NOT MET"


# -- W1, W2, W3: derivatives of one batch -----------------------------------------


def derivative_rows(net, d, hessian, dde, dde_reason, modes):
    laplacian = hessian == "laplacian"
    rows = [
        Row("forward", "forward net(x)", "forward", lambda x: net(x, training=False))
    ]
    for method in ("autodiff", "taylor"):
        rows.append(
            Row(method, f"ours {method}", "ours", ours(net, d, hessian, method))
        )
    if laplacian:
        peers = [
            ("tape", "nested GradientTape + batch_jacobian", tape_laplacian(net)),
            (
                "acc",
                "nested ForwardAccumulator, d passes",
                directional_laplacian(accumulator_pass, net),
            ),
            (
                "jvp",
                "nested keras.ops.jvp, d passes",
                directional_laplacian(ops_jvp_pass, net),
            ),
        ]
        dde_fn = deepxde_laplacian(dde, net) if dde else None
        hand = ("hand", "hand-written forward Laplacian", hand_forward_laplacian(net))
    else:
        peers = [
            ("tape", "nested GradientTape", tape_d1(net)),
            ("acc", "nested ForwardAccumulator", accumulator_d1(net)),
            ("jvp", "nested keras.ops.jvp", ops_jvp_d1(net)),
        ]
        dde_fn = deepxde_d1(dde, net) if dde else None
        hand = ("hand", "hand-written Taylor pass", hand_taylor(net))
    for key, label, fn in peers:
        rows.append(Row(key, label, "peer", fn))
    if dde_fn is not None:
        rows.append(Row("dde", "DeepXDE dde.grad (tf.gradients)", "peer", dde_fn))
    else:
        print(f"  SKIPPED DeepXDE: {dde_reason}")
    rows.append(Row(*hand[:2], "hand", hand[2]))
    return [
        Row(row.key, row.label, row.kind, fn, fn, mode)
        for mode in modes
        for row in rows
        for fn in [compiled(row.fn, mode)]
    ]


def report_w1(ms, rows):
    print("  target: ours (a) <= 1.0x the fastest peer and (b) <= 3x forward")
    best = fastest_peer(rows, ms)
    for key in ("autodiff", "taylor"):
        if key in ms and best:
            to_peer, to_fwd = ms[key] / ms[best.key], ms[key] / ms["forward"]
            print(
                f"    ours {key}: (a) {to_peer:.2f}x fastest peer "
                f"{verdict(to_peer <= 1.0)}; (b) {to_fwd:.2f}x forward "
                f"{verdict(to_fwd <= 3.0)}"
            )


def report_w2(ms, rows):
    print("  target: ours <= 1.6x forward (a hand-written Taylor pass measured 1.4x)")
    for key in ("autodiff", "taylor"):
        if key in ms:
            ratio = ms[key] / ms["forward"]
            print(f"    ours {key}: {ratio:.2f}x forward {verdict(ratio <= 1.6)}")
    if "hand" in ms:
        print(
            f"    hand-written Taylor pass: {ms['hand'] / ms['forward']:.2f}x forward"
        )


def report_w3(ms, rows):
    print(
        "  target: ours (a) >= 2.5x faster than nested tape + batch_jacobian, "
        "(b) within 1.2x of the hand-written forward Laplacian"
    )
    for key in ("autodiff", "taylor"):
        if key in ms and "tape" in ms and "hand" in ms:
            speedup, to_hand = ms["tape"] / ms[key], ms[key] / ms["hand"]
            print(
                f"    ours {key}: (a) {speedup:.2f}x faster than the tape "
                f"{verdict(speedup >= 2.5)}; (b) {to_hand:.2f}x the hand forward "
                f"Laplacian {verdict(to_hand <= 1.2)}"
            )
    if "tape" in ms and "hand" in ms:
        print(
            "    (reference: the hand-written forward Laplacian is "
            f"{ms['tape'] / ms['hand']:.2f}x faster than the tape)"
        )


def derivative_workload(title, make_net, d, hessian, report, args, dde):
    reference = "hand-written " + (
        "forward Laplacian" if hessian == "laplacian" else "Taylor pass"
    )
    print(f"\n== {title}")
    keras.utils.set_random_seed(0)
    net = make_net()
    x, xs = points(args.points, d), fresh_inputs(args.points, d, args.repeats)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", keras_deriv.ZeroCurvatureWarning)
        rows = derivative_rows(net, d, hessian, *dde, args.modes)
    if any(issubclass(w.category, keras_deriv.ZeroCurvatureWarning) for w in caught):
        print("  (ours warned ZeroCurvatureWarning at build: expected, a ReLU net)")
    ms, rows = run_rows(rows, x, xs, args.repeats, title.split()[0])
    per_mode(report, rows, ms)
    report_hand(rows, ms, reference)


# -- W4: one training step through y'' -------------------------------------------


def pinn_loss(y, d2y, x):
    """Fit y = sin x with the residual y'' + sin x = 0."""
    s = tf.sin(x)
    y, d2y = tf.reshape(y, (-1, 1)), tf.reshape(d2y, (-1, 1))
    return tf.reduce_mean(tf.square(d2y + s)) + tf.reduce_mean(tf.square(y - s))


def train_step(loss_of, variables, mode):
    """One compiled Adam step: loss_of(x) under a tape over the weights."""
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(variables)

    def step(x):
        with tf.GradientTape() as tape:
            loss = loss_of(x)
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    return compiled(step, mode)


def loss_gradients(loss_of, variables, mode):
    def grads(x):
        with tf.GradientTape() as tape:
            loss = loss_of(x)
        return [loss, *tape.gradient(loss, variables)]

    return compiled(grads, mode)


def training_losses(net, dde):
    """key, label, kind, loss_of(x) of each method."""

    def from_derivatives(compute):
        def loss_of(x):
            y, _, d2y = compute(x)
            return pinn_loss(y, d2y, x)

        return loss_of

    def forward_loss(x):
        y = net(x, training=True)
        return tf.reduce_mean(tf.square(y - tf.sin(x)))

    label = "step, loss on y only (no derivatives)"
    losses = [("forward", label, "forward", forward_loss)]
    for method in ("autodiff", "taylor"):
        model = ours_model(net, 1, "diagonal", method)
        compute = (lambda m: lambda x: m(x, training=True))(model)
        losses.append((method, f"ours {method}", "ours", from_derivatives(compute)))
    losses.append(
        ("tape", "nested GradientTape", "peer", from_derivatives(tape_d1(net)))
    )
    if dde is not None:
        fn = from_derivatives(deepxde_d1(dde, net))
        losses.append(("dde", "DeepXDE dde.grad (tf.gradients)", "peer", fn))
    hand = from_derivatives(hand_taylor(net))
    losses.append(("hand", "hand-written Taylor pass", "hand", hand))
    return losses


def training_rows(net, dde, modes):
    """Each step in each mode, with its own optimizer; all share the net's
    weights."""
    variables = net.trainable_variables
    rows = []
    for mode in modes:
        for key, label, kind, loss_of in training_losses(net, dde):
            grads = loss_gradients(loss_of, variables, mode)
            step = train_step(loss_of, variables, mode)
            check = None if kind == "forward" else grads
            rows.append(Row(key, label, kind, step, check, mode))
    return rows


def fit_model(net, jit_compile):
    inputs = keras.Input((1,))
    y, _, d2y = DerivativeModel(net, order=2, method="autodiff")(inputs)
    model = keras.Model(inputs, [y, d2y])
    model.compile(keras.optimizers.Adam(1e-3), ["mse", "mse"], jit_compile=jit_compile)
    return model


def fit_ms_per_step(model, n, steps, targets_of):
    """Median ms per step of `model.fit` (epochs of `steps` batches of `n`
    new points each)."""
    xs = np.random.default_rng(1).uniform(size=(steps * n, 1)).astype("float32")
    targets = targets_of(xs)
    warm = [t[: 2 * n] for t in targets]
    model.fit(xs[: 2 * n], warm, batch_size=n, verbose=0)  # compile
    times = []
    for _ in range(3):
        start = time.perf_counter()
        model.fit(xs, targets, batch_size=n, shuffle=False, verbose=0)
        times.append((time.perf_counter() - start) / steps)
    return 1e3 * float(np.median(times))


def fit_report(net, args, step_ms, jit):
    """Informative: `model.fit` steps of a model whose outputs are
    DerivativeModel's, beside `fit` of the bare net (fit's own overhead)."""
    steps = max(10, args.repeats)
    model = fit_model(net, jit)
    ms = fit_ms_per_step(
        model, args.points, steps, lambda x: [np.sin(x), -np.sin(x)[:, :, None]]
    )
    bare = keras.models.clone_model(net)
    bare.compile(keras.optimizers.Adam(1e-3), "mse", jit_compile=jit)
    bare_ms = fit_ms_per_step(bare, args.points, steps, lambda x: [np.sin(x)])
    print(
        f"  informative, model.fit (jit_compile={model.jit_compile}, batches of "
        f"{args.points} new points): Model(x -> [y, d2y] of DerivativeModel"
        f"(autodiff)), MSE on both: {ms:.3f} ms/step ({1e3 / ms:.0f} steps/s, "
        f"{ms / step_ms:.2f}x the custom autodiff step); the bare net, MSE on y: "
        f"{bare_ms:.3f} ms/step (fit's own overhead included in both)"
    )


def w4(args, dde):
    print(
        "\n== W4  one Adam training step, loss mean((y'' + sin x)^2) + "
        f"mean((y - sin x)^2), W2 net, {args.points} points"
    )
    keras.utils.set_random_seed(0)
    net = pinn_net(1)
    x = points(args.points, 1)
    if dde[0] is None:
        print(f"  SKIPPED DeepXDE: {dde[1]}")
    rows = training_rows(net, dde[0], args.modes)
    print("  (check: the loss and the weight gradients)")
    xs = fresh_inputs(args.points, 1, args.repeats)
    ms, rows = run_rows(rows, x, xs, args.repeats, "W4")
    per_mode(report_w4, rows, ms)
    report_hand(rows, ms, "hand-written Taylor pass step")
    for mode in modes_of(rows):
        step_ms = ms.get(("autodiff", mode), float("nan"))
        fit_report(net, args, step_ms, mode == "xla")


def report_w4(ms, rows):
    print("  target: ours <= 1.0x the nested-tape step")
    for key in ("autodiff", "taylor"):
        if key in ms and "tape" in ms:
            ratio = ms[key] / ms["tape"]
            print(f"    ours {key}: {ratio:.2f}x the tape step {verdict(ratio <= 1.0)}")


# -- W5: derivatives() on many points, in subprocesses ---------------------------


def peak_rss_mb():
    """This process's peak resident memory (VmHWM), in MB. Not ru_maxrss: on
    Linux that survives fork + exec, so a child of a big parent (this
    script, with TensorFlow loaded) reports the parent's size; VmHWM
    belongs to the address space that exec made new."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def timed_rates(net, x, batch, rounds=5, calls=30):
    """Rate of derivatives() over all of x, and on one batch (median of
    `calls`), in interleaved rounds (a shared machine's load hits both)."""
    full, one = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        keras_deriv.derivatives(net, x, order=2)
        full.append(time.perf_counter() - start)
        for _ in range(calls):
            start = time.perf_counter()
            keras_deriv.derivatives(net, x[:batch], order=2)
            one.append(time.perf_counter() - start)
    return len(x) / float(np.median(full)), batch / float(np.median(one))


def w5_child(mode, n):
    """Runs in a subprocess; prints one JSON line."""
    keras.utils.set_random_seed(0)
    net = pinn_net(1)
    x = np.random.default_rng(0).uniform(size=(n, 1)).astype("float32")
    result = {"mode": mode}
    if mode == "run":
        from keras_deriv.evaluation import DEFAULT_BATCH_SIZE

        batch = min(n, DEFAULT_BATCH_SIZE)  # what derivatives() uses
        start = time.perf_counter()
        keras_deriv.derivatives(net, x, order=2)  # first call: compiles
        first = time.perf_counter() - start
        result["peak_after_first_call"] = peak_rss_mb()
        rate, batch_rate = timed_rates(net, x, batch)
        result.update(batch=batch, rate=rate, batch_rate=batch_rate, first=first)
    result["peak"] = peak_rss_mb()
    print(json.dumps(result))


def run_child(mode, n):
    """The JSON result of this script run as a W5 child process."""
    command = [sys.executable, os.path.abspath(__file__), "--w5-child", mode]
    command += ["--w5-points", str(n)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"W5 {mode} child failed: {done.stderr[-1500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def w5(args):
    n = args.w5_points
    print(f"\n== W5  keras_deriv.derivatives(net, x, order=2), W2 net, {n} points")
    base = run_child("baseline", n)["peak"]
    result = run_child("run", n)
    added = result["peak_after_first_call"] - base
    ratio = result["batch_rate"] / result["rate"]
    print(
        f"  peak RSS (VmHWM) {result['peak_after_first_call']:.0f} MB after the "
        f"first call (compiling) over {n} points; baseline (import, build net, "
        f"make x) {base:.0f} MB: derivatives() adds {added:.0f} MB"
    )
    print(
        f"  first call {result['first']:.2f} s; then {result['rate']:.3e} points/s "
        f"over {n} points; one batch of {result['batch']} (the default chunk): "
        f"{result['batch_rate']:.3e} points/s"
    )
    print("  target: peak < 1.5 GB, rate within 1.2x of the best single-batch rate")
    print(f"    added peak {added / 1024:.2f} GB {verdict(added < 1536)}")
    print(f"    single-batch rate / rate = {ratio:.2f}x {verdict(ratio <= 1.2)}")


# -- main ---------------------------------------------------------------------------


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def header(args, dde_module):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    dde = getattr(dde_module, "__version__", "not loaded")
    modes = " and ".join(
        "XLA, tf.function(jit_compile=True)" if mode == "xla" else "plain tf.function"
        for mode in args.modes
    )
    fit = "XLA" if fit_jit_compile() else "plain tf.function"
    print(
        f"backend {keras.backend.backend()}, keras {keras.__version__}, tensorflow "
        f"{tf.__version__}, deepxde {dde}, keras_deriv {keras_deriv.__version__}"
    )
    print(
        f"{cpu_name()}, {os.cpu_count()} cores ({cores} usable), {args.points} "
        f"points, median of {args.repeats} after warm-up; compiled: {modes} "
        f"(model.fit's jit_compile='auto' is {fit} here)"
    )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--workloads", default=",".join(ALL_WORKLOADS))
    xla = parser.add_mutually_exclusive_group()
    xla.add_argument(
        "--modes",
        default="plain,xla",
        help="comma-separated: plain, xla, auto (what model.fit would use here)",
    )
    xla.add_argument("--xla", dest="modes", action="store_const", const="xla")
    xla.add_argument("--no-xla", dest="modes", action="store_const", const="plain")
    parser.add_argument("--w5-points", type=int, default=1_000_000)
    parser.add_argument(
        "--w5-child", choices=("baseline", "run"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    args.workloads = [w.strip().upper() for w in args.workloads.split(",") if w]
    unknown = set(args.workloads) - set(ALL_WORKLOADS)
    if unknown:
        parser.error(
            f"unknown workloads {sorted(unknown)}; choose from {ALL_WORKLOADS}"
        )
    modes = [m.strip().lower() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - {*MODES, "auto"}
    if unknown or not modes:
        parser.error(f"unknown modes {sorted(unknown)}; choose from plain, xla, auto")
    args.modes = modes
    return args


def main(argv=None):
    args = parse_args(argv)
    # one tf.function per row from the same code: TF's retracing warning
    tf.get_logger().setLevel("ERROR")
    if args.w5_child:
        return w5_child(args.w5_child, args.w5_points)
    auto = "xla" if fit_jit_compile() else "plain"
    modes = {auto if mode == "auto" else mode for mode in args.modes}
    args.modes = [mode for mode in MODES if mode in modes]
    needs_dde = any(w in args.workloads for w in ("W1", "W2", "W3", "W4"))
    dde = load_deepxde() if needs_dde else (None, "not needed")
    header(args, dde[0])
    n = args.points
    if "W1" in args.workloads:
        title = f"W1  question net 1 -> 1024 relu -> 1, [y, y', y''], {n} points"
        derivative_workload(title, question_net, 1, "diagonal", report_w1, args, dde)
    if "W2" in args.workloads:
        title = f"W2  PINN net 1 -> 64x4 tanh -> 1, [y, y', y''], {n} points"
        derivative_workload(title, pinn_net, 1, "diagonal", report_w2, args, dde)
    if "W3" in args.workloads:
        title = f"W3  10 -> 64x4 tanh -> 1, [y, grad, Laplacian], {n} points"
        make = lambda: pinn_net(10)  # noqa: E731
        derivative_workload(title, make, 10, "laplacian", report_w3, args, dde)
    if "W4" in args.workloads:
        w4(args, dde)
    if "W5" in args.workloads:
        w5(args)
    if SUMMARY:
        print_markdown()
    if MISMATCHES:
        print(f"\n!!! {len(MISMATCHES)} CHECK FAILURES (see above)")
        sys.exit(1)


if __name__ == "__main__":
    main()
