"""Named partials and operators against peers, side by side in one process
per backend: interleaved timing, median of repeats, ratios.

    KERAS_BACKEND=tensorflow python benchmarks/partials_peers.py --repeats 30
    KERAS_BACKEND=jax python benchmarks/partials_peers.py --repeats 30

Options: `--points` (1000), `--dims 2,3`, `--cases u_xy,u_xxyy,laplacian,
biharmonic`, `--warmup` (2).

Peers. DeepXDE (TensorFlow rows only) is not a dependency of keras_deriv:

    pip install deepxde "tf-keras~=2.21.0" "tensorflow-probability>=0.25"

(its TensorFlow backend imports tensorflow_probability, which needs the
tf-keras release of the installed TensorFlow; or `pip install -e .[bench]`).
Without it the DeepXDE rows are skipped with the reason printed. The JAX
peers need only jax (`jax.experimental.jet` ships with it).

Networks: d -> 64x4 tanh -> 1 (Keras Dense, Glorot uniform, seed 0), d = 2
(variables "xy") and d = 3 ("xyz"); float32; `--points` points uniform in
[-1, 1]^d. Cases (one output each, of shape (points, 1)):

- u_xy: the mixed partial d2u/dxdy, `partials={"u_xy": "xy"}`;
- u_xxyy: the mixed partial d4u/dx2dy2, `partials={"u_xxyy": "xxyy"}`;
- laplacian: {"xx": 1, "yy": 1} (+ "zz": 1 for d = 3);
- biharmonic: {"xxxx": 1, "xxyy": 2, "yyyy": 1}; for d = 3 all 6 terms of
  sum_i d_i^4 + 2 sum_{i<j} d_i^2 d_j^2.

Contenders on TensorFlow (`KERAS_BACKEND=tensorflow`), each a Python
function of x timed under plain `tf.function` and under
`tf.function(jit_compile=True)` (XLA), two column groups, the ratio taken
to the nested tape of the same group:

- keras_deriv taylor / autodiff: `DerivativeModel(net, partials=...,
  variables="xy"|"xyz", method=...)` in a `keras.Model`, called with
  `training=False`;
- keras_deriv full Hessian (second-order cases): `hessian="full"` on the
  Taylor engine, the entries read off: the cost a named second-order
  partial or operator replaces;
- nested GradientTape: the minimal nested tapes a user writes for exactly
  these partials: one tape per order, the gradient of each needed lower
  partial sliced to the next variable, lower partials shared between terms
  (a persistent tape where a level takes several gradients). The Laplacian
  is the per-variable second partials summed (d + 1 reverse passes), the
  2-D biharmonic 8 reverse passes (u; u_x, u_y; u_xx, u_yy; u_xxx, u_xxy,
  u_yyy), the 3-D one 13;
- DeepXDE: chained `dde.grad.hessian` as a DeepXDE PDE function writes it
  (`hessian(y, x, i=0, j=1)`, `hessian(hessian(y, x, i=0, j=0), x, i=1,
  j=1)`, the Kirchhoff-plate examples' pattern). Its TensorFlow backend
  (`deepxde/gradients/gradients_reverse.py`) calls `tf.gradients(y, x)` on
  graph tensors, so it runs only inside a `tf.function` with y computed
  from x there, as DeepXDE's trainer (`Model._compile_tensorflow`) calls it.
  Its caches (`Jacobians`, `Hessians`) are keyed by graph tensor and filled
  at trace time only; `deepxde/model.py` clears them per step on PyTorch
  and Paddle, never on TensorFlow. We clear them (`dde.grad.clear()`) at
  the start of each trace, which changes nothing in the traced graph and
  keeps the dicts from holding every earlier graph.

Contenders on JAX (`KERAS_BACKEND=jax`), each one `jax.jit` of a function of
(weights, x), the weights the same arrays for all (the Keras net's), the
ratio taken to the nested jvp:

- keras_deriv taylor / autodiff: `model.stateless_call(trainable,
  non_trainable, x)` of the same `keras.Model` as on TensorFlow;
- nested jax.jvp: forward over forward along the unit vectors of each term
  (`jvp(jvp(f, e_x), e_y)` for u_xy, four deep for u_xxyy), terms summed,
  `jax.vmap` over points; f is the MLP written in jax.numpy on the Keras
  weights;
- jax.hessian: `jax.hessian(f)` (order 2) or `jax.hessian(jax.hessian(f))`
  (order 4) per point, the needed entries picked and summed. At order 4
  that is jacfwd(jacrev(jacfwd(jacrev(f)))), all d^4 entries, and on XLA:CPU
  it runs at about 0.45 ms per point whether vmapped or not (2-D, 1000
  points: ~450 ms; four jax.jacfwd instead: ~18 ms; the Hessian of the one
  needed Hessian entry: ~100 ms). It is kept as the generic recipe;
- jax.experimental.jet: `jet(f, (p,), ((e_i, 0, ...),))` gives d^k u/dx_i^k,
  for operators made of pure partials only (the Laplacian); mixed partials
  are not pure directional derivatives (n/a).

Checks, before any timing: every contender's output (on TensorFlow, both
compilations) is compared with every other's, `np.testing.assert_allclose(
a, b, rtol=1e-3, atol=1e-3 * max|b|)` (float32; the atol keeps points where
the partial crosses zero from failing on rounding). A failure is printed in
capitals, the timing still runs, and the script exits with status 1. Each
contender's error against a float64 reference (nested tapes on a float64
copy of the net on TensorFlow, `jax.hessian` under `jax.enable_x64` on JAX)
is printed as `err` = max|out - ref| / max|ref|.

Timing: after a warm-up of `--warmup` calls each, `--repeats` rounds; in
each round every contender (every compilation) is called once, in an order
rotated from round to round, on one of 4 distinct point sets (the rounds
cycle through them), and the result is brought to host memory
(`.numpy()`, `jax.block_until_ready`). Reported: the median ms per call.
"""

import argparse
import functools
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_deriv  # noqa: E402
from keras_deriv import DerivativeModel  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import cpu_name, load_deepxde  # noqa: E402  (the same set-up)

NAMES = "xyz"
CASES = ("u_xy", "u_xxyy", "laplacian", "biharmonic")
RTOL = 1e-3
POINT_SETS = 4


# -- cases --------------------------------------------------------------------


def operator(case, d):
    """The case as {multi-index string: coefficient} over NAMES[:d]."""
    names = NAMES[:d]
    if case == "u_xy":
        return {"xy": 1}
    if case == "u_xxyy":
        return {"xxyy": 1}
    if case == "laplacian":
        return {v * 2: 1 for v in names}
    if case == "biharmonic":
        terms = {v * 4: 1 for v in names}
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                terms[a * 2 + b * 2] = 2
        return terms
    raise ValueError(f"unknown case {case!r}")


def partials_argument(case, d):
    """DerivativeModel's `partials=`: a multi-index for a single partial
    (as a user writes it), the operator dict for an operator."""
    terms = operator(case, d)
    if case.startswith("u_"):
        (index,) = terms
        return {case: index}
    return {case: terms}


def index_terms(case, d):
    """[(multi-index as a tuple of feature indices, coefficient)]."""
    return [
        (tuple(NAMES.index(c) for c in key), float(coef))
        for key, coef in operator(case, d).items()
    ]


def combine(values, terms):
    """sum coefficient * partial, without multiplying by a coefficient 1."""
    total = None
    for index, coef in terms:
        term = values[index] if coef == 1 else coef * values[index]
        total = term if total is None else total + term
    return total


def describe(case, d):
    terms = operator(case, d)
    if len(terms) == 1:
        (key,) = terms
        return f"d{len(key)}u/" + "".join(f"d{v}" for v in key)
    return " + ".join(
        (f"{c:g}*" if c != 1 else "") + f"u_{key}" for key, c in terms.items()
    )


# -- network and keras_deriv --------------------------------------------------


def build_net(d, width=64, depth=4):
    keras.utils.set_random_seed(0)
    layers = [keras.Input((d,))]
    layers += [keras.layers.Dense(width, activation="tanh") for _ in range(depth)]
    return keras.Sequential([*layers, keras.layers.Dense(1)])


def dense_weights(net):
    """[(kernel, bias)] of the net's Dense layers, as NumPy arrays."""
    return [
        (np.asarray(layer.kernel.numpy()), np.asarray(layer.bias.numpy()))
        for layer in net.layers
        if isinstance(layer, keras.layers.Dense)
    ]


def keras_deriv_model(net, d, case, method):
    inputs = keras.Input((d,))
    layer = DerivativeModel(
        net,
        partials=partials_argument(case, d),
        variables=NAMES[:d],
        method=method,
    )
    return keras.Model(inputs, layer(inputs))


def full_hessian_model(net, d):
    """keras_deriv's full Hessian (Taylor engine): what a second-order
    partial or operator replaces, timed next to it."""
    inputs = keras.Input((d,))
    _, _, hessian = DerivativeModel(net, hessian="full", method="taylor")(inputs)
    return keras.Model(inputs, hessian)


def from_hessian(hessian, terms):
    """A second-order operator read off the full Hessian `(B, 1, d, d)`."""
    values = {index: hessian[:, :, index[0], index[1]] for index, _ in terms}
    return combine(values, terms)


def point_sets(points, d):
    """The checked inputs first, then the others timing cycles through."""
    return [
        np.random.default_rng(seed).uniform(-1, 1, (points, d)).astype("float32")
        for seed in range(POINT_SETS)
    ]


# -- checking and timing (both backends) --------------------------------------


def first_calls(fns, x, to_numpy):
    """Calls each contender once (tracing, compiling) on x. Returns (the
    contenders that ran, their outputs as flat NumPy arrays, seconds of the
    first call); a failure is printed with its reason and dropped."""
    ran, values, seconds = {}, {}, {}
    for label, fn in fns.items():
        start = time.perf_counter()
        try:
            out = to_numpy(fn(x))
        except Exception as err:  # noqa: BLE001 - report and drop the contender
            print(f"  FAILED {label}: {type(err).__name__}: {err}"[:600])
            continue
        seconds[label] = time.perf_counter() - start
        ran[label], values[label] = fn, np.ravel(out).astype("float64")
    return ran, values, seconds


def check(values, reference):
    """Pairwise agreement of all outputs; error of each against reference.
    Returns (failure lines, {label: error})."""
    failures = []
    labels = list(values)
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            va, vb = values[a], values[b]
            try:
                np.testing.assert_allclose(
                    va, vb, rtol=RTOL, atol=RTOL * float(np.max(np.abs(vb)))
                )
            except AssertionError:
                worst = float(np.max(np.abs(va - vb)) / np.max(np.abs(vb)))
                failures.append(f"{a} vs {b}: max|a-b|/max|b| = {worst:.1e}")
    ref = np.ravel(reference).astype("float64")
    scale = float(np.max(np.abs(ref))) or 1.0
    errors = {k: float(np.max(np.abs(v - ref))) / scale for k, v in values.items()}
    return failures, errors


def report_check(failures, values):
    if failures:
        for line in failures:
            print(f"  !!! CHECK FAILED (rtol {RTOL:g}): {line}")
    else:
        print(
            f"  check: all {len(values)} outputs agree pairwise "
            f"(rtol {RTOL:g}, atol {RTOL:g}*max|u|)"
        )


def interleaved_ms(fns, xs, repeats, warmup, to_numpy):
    """Median ms per call of each contender: rounds of one call each, the
    order rotated per round, inputs cycling through xs."""
    for fn in fns.values():
        for i in range(warmup):
            to_numpy(fn(xs[i % len(xs)]))
    labels = list(fns)
    times = {label: [] for label in labels}
    for r in range(repeats):
        x = xs[r % len(xs)]
        shift = r % len(labels)
        for label in labels[shift:] + labels[:shift]:
            start = time.perf_counter()
            to_numpy(fns[label](x))
            times[label].append(time.perf_counter() - start)
    return {label: 1e3 * statistics.median(t) for label, t in times.items()}


def cell(ms, base):
    if ms is None:
        return f"{'-':>9} {'-':>7}"
    ratio = f"{ms / base:6.2f}x" if base else f"{'-':>7}"
    return f"{ms:9.3f} {ratio}"


# -- TensorFlow ---------------------------------------------------------------


def tape_partials(tf, net, x, indices):
    """{multi-index: partial (n, 1)} for multi-indices of one order k, by k
    nested GradientTapes. Level j takes the gradient of each distinct
    length-(j-1) prefix and slices the next variable; the tape of level j
    is open while level j-1 is computed (inside it), so it records it."""
    order = len(indices[0])
    if any(len(ix) != order for ix in indices):
        raise ValueError("tape_partials takes multi-indices of one order")
    prefixes = [sorted({ix[:k] for ix in indices}) for k in range(order + 1)]

    def level(k):
        if k == 0:
            return {(): net(x, training=False)}
        parents = prefixes[k - 1]
        with tf.GradientTape(persistent=len(parents) > 1) as tape:
            tape.watch(x)
            below = level(k - 1)
        out = {}
        for parent in parents:
            grad = tape.gradient(below[parent], x)
            for ix in prefixes[k]:
                if ix[:-1] == parent:
                    out[ix] = grad[:, ix[-1] : ix[-1] + 1]
        return out

    return level(order)


def tape_contender(tf, net, terms):
    indices = [ix for ix, _ in terms]
    return lambda x: combine(tape_partials(tf, net, x, indices), terms)


def deepxde_partial(dde, y, x, ix):
    """A partial as a DeepXDE PDE function chains dde.grad calls."""
    if len(ix) == 1:
        return dde.grad.jacobian(y, x, i=0, j=ix[0])
    if len(ix) == 2:
        return dde.grad.hessian(y, x, i=ix[0], j=ix[1])
    if len(ix) == 4:
        inner = dde.grad.hessian(y, x, i=ix[0], j=ix[1])
        return dde.grad.hessian(inner, x, i=ix[2], j=ix[3])
    raise ValueError(f"no DeepXDE recipe for order {len(ix)}")


def deepxde_contender(dde, net, terms):
    def run(x):
        dde.grad.clear()  # at trace time (see the module docstring)
        y = net(x, training=False)
        return combine({ix: deepxde_partial(dde, y, x, ix) for ix, _ in terms}, terms)

    return run


def float64_copy(net, d):
    copy = keras.Sequential(
        [keras.Input((d,), dtype="float64")]
        + [
            keras.layers.Dense(
                layer.units,
                activation=keras.activations.serialize(layer.activation),
                dtype="float64",
            )
            for layer in net.layers
        ]
    )
    copy.set_weights([w.astype("float64") for w in net.get_weights()])
    return copy


def tf_reference(tf, net, d, terms, x):
    net64 = float64_copy(net, d)
    run = tf.function(tape_contender(tf, net64, terms))
    return run(tf.constant(x, tf.float64)).numpy()


def tf_contenders(tf, net, d, case, dde):
    terms = index_terms(case, d)
    fns = {}
    for method in ("taylor", "autodiff"):
        model = keras_deriv_model(net, d, case, method)
        fns[f"keras_deriv {method}"] = (lambda m: lambda x: m(x, training=False)[case])(
            model
        )
    if all(len(index) == 2 for index, _ in terms):
        hessian = full_hessian_model(net, d)
        fns["keras_deriv full Hessian"] = lambda x: from_hessian(
            hessian(x, training=False), terms
        )
    fns["nested GradientTape"] = tape_contender(tf, net, terms)
    if dde is not None:
        fns["DeepXDE dde.grad"] = deepxde_contender(dde, net, terms)
    return fns


def run_tensorflow(args):
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # one tf.function per contender: retracing
    dde, reason = load_deepxde()
    header(args, f"tensorflow {tf.__version__}, deepxde " + _version(dde))
    if dde is None:
        print(f"SKIPPED DeepXDE: {reason}")
    modes = {"tf.function": False, "XLA": True}
    print(
        "ms per call (median); x tape = ms / the nested tape's ms in the same "
        "column group (below 1: faster); err = max|out - f64| / max|f64|"
    )
    print(
        f"{'':<36}{'tf.function':^18}  {'XLA (jit_compile=True)':^18}"
        f"{'err':>9}\n{'contender':<36}{'ms':>9} {'x tape':>7}  {'ms':>9} "
        f"{'x tape':>7}"
    )
    failed = False
    for d in args.dims:
        net = build_net(d)
        xs = point_sets(args.points, d)
        tensors = [tf.constant(x) for x in xs]
        for case in args.cases:
            print(f"-- d={d} {case}: {describe(case, d)}")
            terms = index_terms(case, d)
            contenders = tf_contenders(tf, net, d, case, dde)
            fns = {
                (label, mode): tf.function(fn, jit_compile=jit)
                for mode, jit in modes.items()
                for label, fn in contenders.items()
            }
            ran, values, _ = first_calls(fns, tensors[0], lambda t: t.numpy())
            reference = tf_reference(tf, net, d, terms, xs[0])
            failures, errors = check(
                {f"{k[0]} [{k[1]}]": v for k, v in values.items()}, reference
            )
            report_check(failures, values)
            failed |= bool(failures)
            ms = interleaved_ms(
                ran, tensors, args.repeats, args.warmup, lambda t: t.numpy()
            )
            for label in contenders:
                cells, errs = [], []
                for mode in modes:
                    key = (label, mode)
                    base = ms.get(("nested GradientTape", mode))
                    cells.append(cell(ms.get(key), base))
                    if key in values:
                        errs.append(errors[f"{label} [{mode}]"])
                err = f"{max(errs):9.1e}" if errs else f"{'-':>9}"
                print(f"{label:<36}{cells[0]}  {cells[1]}{err}")
    return failed


# -- JAX ----------------------------------------------------------------------


def mlp(params, p):
    """The net on one point p (d,): Dense layers, tanh but the last."""
    import jax.numpy as jnp

    h = p
    for w, b in params[:-1]:
        h = jnp.tanh(h @ w + b)
    w, b = params[-1]
    return (h @ w + b)[0]


def nested_jvp(f, directions):
    """p -> D_{v_1} ... D_{v_k} f(p), forward over forward."""
    import jax

    def derivative(g, v, p):
        return jax.jvp(g, (p,), (v,))[1]

    for v in directions:
        f = functools.partial(derivative, f, v)
    return f


def jvp_contender(terms, d):
    import jax
    import jax.numpy as jnp

    def run(params, x):
        eye = jnp.eye(d, dtype=x.dtype)

        def point(p):
            f = functools.partial(mlp, params)
            values = {ix: nested_jvp(f, [eye[i] for i in ix])(p) for ix, _ in terms}
            return combine(values, terms)

        return jax.vmap(point)(x)

    return run


def hessian_contender(terms):
    import jax

    order = len(terms[0][0])
    if order not in (2, 4) or any(len(ix) != order for ix, _ in terms):
        raise ValueError("the jax.hessian contender takes order 2 or 4")

    def run(params, x):
        def point(p):
            f = functools.partial(mlp, params)
            h = jax.hessian(f) if order == 2 else jax.hessian(jax.hessian(f))
            tensor = h(p)
            return combine({ix: tensor[ix] for ix, _ in terms}, terms)

        return jax.vmap(point)(x)

    return run


def jet_contender(terms, d):
    """Pure partials d^k/dx_i^k by jet along e_i; None if a term is mixed."""
    if any(len(set(ix)) != 1 for ix, _ in terms):
        return None
    import jax
    import jax.numpy as jnp
    from jax.experimental.jet import jet

    def run(params, x):
        eye = jnp.eye(d, dtype=x.dtype)

        def point(p):
            f = functools.partial(mlp, params)
            values = {}
            for ix, _ in terms:
                series = (eye[ix[0]],) + (jnp.zeros_like(p),) * (len(ix) - 1)
                _, derivatives = jet(f, (p,), (series,))
                values[ix] = derivatives[len(ix) - 1]
            return combine(values, terms)

        return jax.vmap(point)(x)

    return run


def jax_reference(params, terms, x):
    """jax.hessian(-of-jax.hessian) in float64."""
    import jax
    import jax.numpy as jnp

    with jax.enable_x64(True):
        params64 = [
            (jnp.asarray(w, jnp.float64), jnp.asarray(b, jnp.float64))
            for w, b in params
        ]
        run = jax.jit(hessian_contender(terms))
        return np.asarray(run(params64, jnp.asarray(x, jnp.float64)))


def jax_contenders(net, d, case):
    import jax
    import jax.numpy as jnp

    terms = index_terms(case, d)
    params = [(jnp.asarray(w), jnp.asarray(b)) for w, b in dense_weights(net)]
    fns = {}
    for method in ("taylor", "autodiff"):
        model = keras_deriv_model(net, d, case, method)
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        def call(tv, ntv, x, model=model):
            return model.stateless_call(tv, ntv, x, training=False)[0][case]

        run = jax.jit(call)
        fns[f"keras_deriv {method}"] = functools.partial(run, trainable, non_trainable)
    if all(len(index) == 2 for index, _ in terms):
        model = full_hessian_model(net, d)
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        def read(tv, ntv, x, model=model):
            hessian = model.stateless_call(tv, ntv, x, training=False)[0]
            return from_hessian(hessian, terms)

        run = jax.jit(read)
        fns["keras_deriv full Hessian"] = functools.partial(
            run, trainable, non_trainable
        )
    peers = {
        "nested jax.jvp": jvp_contender(terms, d),
        "jax.hessian": hessian_contender(terms),
        "jax.experimental.jet": jet_contender(terms, d),
    }
    for label, fn in peers.items():
        fns[label] = None if fn is None else functools.partial(jax.jit(fn), params)
    return fns, params, terms


def run_jax(args):
    import jax

    header(args, f"jax {jax.__version__} on {jax.devices()[0].device_kind}")
    print(
        "ms per call (median) of jax.jit; x jvp = ms / the nested jax.jvp's ms "
        "(below 1: faster); err = max|out - f64| / max|f64|"
    )
    print(f"{'contender':<36}{'ms':>9} {'x jvp':>7}{'err':>9}")

    def to_numpy(out):
        return np.asarray(jax.block_until_ready(out))

    failed = False
    for d in args.dims:
        net = build_net(d)
        xs = [jax.numpy.asarray(x) for x in point_sets(args.points, d)]
        for case in args.cases:
            print(f"-- d={d} {case}: {describe(case, d)}")
            contenders, params, terms = jax_contenders(net, d, case)
            fns = {k: fn for k, fn in contenders.items() if fn is not None}
            ran, values, _ = first_calls(fns, xs[0], to_numpy)
            reference = jax_reference(params, terms, np.asarray(xs[0]))
            failures, errors = check(values, reference)
            report_check(failures, values)
            failed |= bool(failures)
            ms = interleaved_ms(ran, xs, args.repeats, args.warmup, to_numpy)
            base = ms.get("nested jax.jvp")
            for label, fn in contenders.items():
                if fn is None:
                    print(f"{label:<36}{'n/a (a mixed partial)':>25}")
                    continue
                err = f"{errors[label]:9.1e}" if label in errors else f"{'-':>9}"
                print(f"{label:<36}{cell(ms.get(label), base)}{err}")
    return failed


# -- main ---------------------------------------------------------------------


def _version(module):
    return getattr(module, "__version__", "not loaded")


def header(args, versions):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print(
        f"backend {keras.backend.backend()}: keras {keras.__version__}, {versions}, "
        f"keras_deriv {keras_deriv.__version__}"
    )
    print(
        f"{cpu_name()}, {cores} usable cores; nets d -> 64x4 tanh -> 1, float32, "
        f"{args.points} points; median of {args.repeats} interleaved rounds after "
        f"{args.warmup} warm-up calls"
    )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--dims", default="2,3")
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args(argv)
    args.dims = [int(d) for d in args.dims.split(",") if d.strip()]
    if any(not 2 <= d <= len(NAMES) for d in args.dims):
        parser.error(f"--dims must be between 2 and {len(NAMES)}")
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(args.cases) - set(CASES)
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; choose from {CASES}")
    return args


def main(argv=None):
    args = parse_args(argv)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        failed = run_tensorflow(args)
    elif backend == "jax":
        failed = run_jax(args)
    else:
        sys.exit(f"backend {backend!r}: run with KERAS_BACKEND=tensorflow or jax")
    if failed:
        print("\nSOME CONTENDERS DISAGREE (see CHECK FAILED above)")
        sys.exit(1)
    print("\nall contenders agreed in every case")


if __name__ == "__main__":
    main()
