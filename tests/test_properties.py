"""Property-based tests: random small Sequential and Functional networks,
random points and options, and the laws every derivative must obey.

- both engines (Taylor, autodiff) agree with each other and, in float64 on
  TensorFlow, with central finite differences of the network itself;
- the Hessian is symmetric, its diagonal is the diagonal output, its trace
  the Laplacian; a `wrt` subset is the matching columns of the full result;
- the rows of the batch are independent: permuting them permutes every
  output (also through `derivatives()`, chunked and padded);
- the weight gradient of a loss on d²y is the same for both engines and
  matches finite differences in the weights;
- `derivatives()` keeps float64 points in float64.

Hypothesis draws the examples from a fixed seed (`derandomize=True`), so a
run is reproducible; the counts keep the file under a minute on TensorFlow
(fewer examples on JAX, whose eager dispatch is slow, and on float32
backends, where the finite-difference checks are skipped).
"""

import dataclasses
import math

import keras
import numpy as np
import pytest
from conftest import BACKEND, FLOAT64, assert_close, to_numpy, weight_gradients
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from keras_deriv import DerivativeModel, derivatives

# The warning for order >= 2 of a ReLU-only network is expected here,
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*identically zero"),
    # and so is, on JAX and torch, that some float64 ops compute in float32
    pytest.mark.filterwarnings("ignore:On the .* backend, Keras computes"),
]

SMOOTH = ("tanh", "sigmoid", "softplus", "silu", "gelu", "elu")
PIECEWISE = ("relu", "leaky_relu")
# Activations whose first or second derivative jumps at 0: finite
# differences are taken only where no stencil point crosses a kink.
KINKED = ("relu", "leaky_relu", "elu")
MERGES = ("sequential", "add", "concatenate", "multiply")
ENGINES = ("autodiff", "taylor")
TAYLOR_REFUSES = 'method="taylor" cannot differentiate'


def bounded(tensorflow, jax, torch):
    """Few, reproducible examples; no deadline (the first call builds)."""
    return settings(
        max_examples={"tensorflow": tensorflow, "jax": jax, "torch": torch}[BACKEND],
        deadline=None,
        derandomize=True,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,  # the per-test session reset
            HealthCheck.too_slow,
        ],
    )


def _float64_available():
    if BACKEND != "jax":
        return True
    import jax

    return bool(jax.config.jax_enable_x64)


# The networks' and points' dtype: float64, except on JAX in its default
# 32-bit mode (where Keras would truncate float64 to float32, warning).
DTYPE = "float64" if _float64_available() else "float32"


def tensor(x):
    """`x` as a backend tensor of `DTYPE` (Keras would turn a float64 NumPy
    array into float32 on its way in)."""
    return keras.ops.convert_to_tensor(np.asarray(x, dtype=DTYPE), dtype=DTYPE)


needs_float64 = pytest.mark.skipif(
    not FLOAT64, reason="float64 checks; Keras computes float32 here"
)


# -- networks -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Spec:
    """A network: `widths`/`activations` of the hidden Dense chain; for a
    Functional one (`merge` not "sequential") a skip branch Dense(last width,
    `skip`) from the input, merged with the chain, and the raw input
    optionally concatenated before the linear head Dense(`out`)."""

    d: int
    out: int
    widths: tuple
    activations: tuple
    merge: str
    skip: str
    concat_input: bool
    seed: int

    def all_activations(self):
        extra = (self.skip,) if self.merge != "sequential" else ()
        return (*self.activations, *extra)

    @property
    def inexact_float64(self):
        """TensorFlow computes these two activations in float64 with float32
        constants: leaky ReLU's slope (an op attribute) is float32(0.2), and
        its gelu is ~5e-9 off the exact one. Autodiff and finite differences
        see TensorFlow's function, Taylor's rules the exact one: they agree
        to ~1e-8 only."""
        quirks = {"gelu", "leaky_relu"} & set(self.all_activations())
        return BACKEND == "tensorflow" and bool(quirks)


@st.composite
def specs(draw, kinds="any", d=None):
    """`kinds`: "any" activations, "curved" (at least one smooth one), or
    "piecewise" (ReLU and leaky ReLU only, no Multiply: piecewise linear)."""
    d = draw(st.integers(1, 3)) if d is None else d
    depth = draw(st.integers(1, 3))
    pool = PIECEWISE if kinds == "piecewise" else SMOOTH + PIECEWISE
    activations = draw(st.lists(st.sampled_from(pool), min_size=depth, max_size=depth))
    if kinds == "curved" and not any(a in SMOOTH for a in activations):
        where = draw(st.integers(0, depth - 1))
        activations[where] = draw(st.sampled_from(SMOOTH))
    merges = MERGES[:3] if kinds == "piecewise" else MERGES
    return Spec(
        d=d,
        out=draw(st.integers(1, 2)),
        widths=tuple(draw(st.lists(st.integers(2, 8), min_size=depth, max_size=depth))),
        activations=tuple(activations),
        merge=draw(st.sampled_from(merges)),
        skip=draw(st.sampled_from(pool)),
        concat_input=draw(st.booleans()),
        seed=draw(st.integers(0, 10_000)),
    )


def build(spec):
    """The Keras network of `spec` (`DTYPE`) and its Dense layers in the
    order `numpy_net` applies them."""
    keras.utils.clear_session()  # one session per example, not per test
    denses = []

    def dense(units, activation):
        seed = spec.seed + 2 * len(denses)
        layer = keras.layers.Dense(
            units,
            activation=activation,
            dtype=DTYPE,
            kernel_initializer=keras.initializers.GlorotUniform(seed),
            bias_initializer=keras.initializers.RandomUniform(-0.5, 0.5, seed=seed + 1),
        )
        denses.append(layer)
        return layer

    if spec.merge == "sequential":
        layers = [
            dense(w, a) for w, a in zip(spec.widths, spec.activations, strict=True)
        ]
        layers.append(dense(spec.out, None))
        return keras.Sequential([keras.Input((spec.d,), dtype=DTYPE), *layers]), denses
    inputs = keras.Input((spec.d,), dtype=DTYPE)
    h = inputs
    for w, a in zip(spec.widths, spec.activations, strict=True):
        h = dense(w, a)(h)
    s = dense(spec.widths[-1], spec.skip)(inputs)
    merge = {
        "add": keras.layers.Add,
        "concatenate": keras.layers.Concatenate,
        "multiply": keras.layers.Multiply,
    }[spec.merge]
    h = merge(dtype=DTYPE)([h, s])
    if spec.concat_input:  # a linear path from the input to the head
        h = keras.layers.Concatenate(dtype=DTYPE)([h, inputs])
    return keras.Model(inputs, dense(spec.out, None)(h)), denses


LEAKY_SLOPE = float(np.float32(0.2)) if BACKEND == "tensorflow" else 0.2
_sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
_erf = np.vectorize(math.erf)
NUMPY_ACTIVATIONS = {
    None: lambda z: z,
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "softplus": lambda z: np.logaddexp(0, z),
    "silu": lambda z: z * _sigmoid(z),
    "gelu": lambda z: 0.5 * z * (1 + _erf(z / math.sqrt(2))),
    "elu": lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0))),
    "relu": lambda z: np.maximum(z, 0),
    # TensorFlow's slope is an op attribute, a float32, also in float64
    "leaky_relu": lambda z: np.where(z > 0, z, LEAKY_SLOPE * z),
}


def numpy_net(spec, denses, x):
    """The network in float64 NumPy, independent of Keras, with the weights
    its layers hold now: its output, and on which side of its kink each
    kinked unit is (…, units)."""
    params = iter([(to_numpy(v.kernel), to_numpy(v.bias)) for v in denses])
    kinks = []

    def apply(h, activation):
        kernel, bias = next(params)
        z = h @ kernel + bias
        if activation in KINKED:
            kinks.append(z)
        return NUMPY_ACTIVATIONS[activation](z)

    x = np.asarray(x, dtype="float64")
    h = x
    for a in spec.activations:
        h = apply(h, a)
    if spec.merge != "sequential":
        s = apply(x, spec.skip)
        if spec.merge == "add":
            h = h + s
        elif spec.merge == "multiply":
            h = h * s
        else:
            h = np.concatenate([h, s], -1)
        if spec.concat_input:
            h = np.concatenate([h, x], -1)
    y = apply(h, None)
    sides = [z > 0 for z in kinks]
    sides = np.concatenate(sides, -1) if sides else np.zeros((*x.shape[:-1], 0), bool)
    return y, sides


# -- finite differences ---------------------------------------------------------


H1 = 1e-4  # step of the first differences
H2 = 1e-3  # step of the second differences


def stencil(d):
    """Offsets (s, d): x itself, ±H1 e_i, and ±H2 e_i ± H2 e_j for all i, j."""
    eye = np.eye(d)
    rows = [np.zeros(d)]
    rows += [sign * H1 * eye[i] for i in range(d) for sign in (1, -1)]
    rows += [
        H2 * (si * eye[i] + sj * eye[j])
        for i in range(d)
        for j in range(d)
        for si in (1, -1)
        for sj in (1, -1)
    ]
    return np.array(rows)


def finite_differences(net, spec, denses, x):
    """Central differences of the Keras network (float64) at the rows of x:
    `(y, dy, hessian, smooth)` with dy (n, out, d), hessian (n, out, d, d),
    and `smooth` the rows whose stencil crosses no kink of any unit (there
    the network is smooth across the whole stencil)."""
    n, d = x.shape
    offsets = stencil(d)
    points = (x[:, None, :] + offsets[None]).reshape(-1, d)
    values = to_numpy(net(tensor(points))).reshape(n, len(offsets), -1)
    _, sides = numpy_net(spec, denses, points)
    sides = sides.reshape(n, len(offsets), -1)
    smooth = np.all(sides == sides[:, :1], axis=(1, 2))
    y = values[:, 0]
    first = values[:, 1 : 1 + 2 * d].reshape(n, d, 2, -1)
    dy = (first[:, :, 0] - first[:, :, 1]) / (2 * H1)  # (n, d, out)
    second = values[:, 1 + 2 * d :].reshape(n, d, d, 2, 2, -1)
    hessian = (
        second[:, :, :, 0, 0]
        - second[:, :, :, 0, 1]
        - second[:, :, :, 1, 0]
        + second[:, :, :, 1, 1]
    ) / (4 * H2 * H2)  # the diagonal i = j: a second difference of step 2 H2
    return y, np.moveaxis(dy, 1, -1), np.moveaxis(hessian, (1, 2), (-2, -1)), smooth


# -- the engines ------------------------------------------------------------------


def engines(net, x, **options):
    """`{method: [y, dy, ...]}` as NumPy, for both engines; Taylor left out
    only where it says it cannot take the model."""
    results = {}
    for method in ENGINES:
        try:
            layer = DerivativeModel(net, method=method, **options)
            results[method] = [to_numpy(t) for t in layer(x)]
        except ValueError as err:
            if method == "taylor" and TAYLOR_REFUSES in str(err):
                continue
            raise
    assert "autodiff" in results
    return results


def points(d, n_min=2, n_max=6):
    return st.integers(n_min, n_max).flatmap(
        lambda n: st.lists(
            st.lists(
                st.floats(-2, 2, allow_nan=False, allow_subnormal=False),
                min_size=d,
                max_size=d,
            ),
            min_size=n,
            max_size=n,
        )
    )


@st.composite
def subsets(draw, d):
    """A non-empty `wrt`, in any order."""
    order = draw(st.permutations(range(d)))
    return list(order[: draw(st.integers(1, d))])


@st.composite
def net_and_points(draw, kinds="any"):
    spec = draw(specs(kinds))
    x = np.array(draw(points(spec.d)), dtype="float64")
    return spec, x


def levels_close(got, ref, tol64, tol32, what):
    assert len(got) == len(ref), what
    for k, (g, r) in enumerate(zip(got, ref, strict=True)):
        assert g.shape == r.shape, f"{what}, level {k}"
        assert_close(g, r, tol64, tol32, f"{what}, level {k}")


# -- the properties ---------------------------------------------------------------


@needs_float64
@bounded(tensorflow=16, jax=1, torch=1)
@given(case=net_and_points("curved"), data=st.data())
def test_engines_match_finite_differences(case, data):
    spec, x = case
    net, denses = build(spec)
    wrt = data.draw(subsets(spec.d), label="wrt")
    y_fd, dy_fd, hess_fd, smooth = finite_differences(net, spec, denses, x)
    # The NumPy oracle is the network Keras computes: 1e-12 is float64
    # rounding through 5 layers; TensorFlow's float64 gelu is 5e-9 off the
    # exact one (its leaky ReLU slope the oracle copies).
    y_np, _ = numpy_net(spec, denses, x)
    np.testing.assert_allclose(
        y_fd, y_np, rtol=0, atol=1e-7 if "gelu" in spec.all_activations() else 1e-12
    )
    # Only examples curved at smooth points: not a check of 0 == 0 (a layer
    # of dead ReLUs can make even a tanh network flat there).
    assume(smooth.any() and np.abs(hess_fd[smooth]).max() > 1e-4)
    diagonal_fd = np.diagonal(hess_fd, axis1=-2, axis2=-1)
    full = engines(net, tensor(x), order=2, hessian="full")
    diagonal = engines(net, tensor(x), order=2, wrt=wrt)
    laplacian = engines(net, tensor(x), order=2, hessian="laplacian", wrt=wrt)
    for method, (y, dy, hess) in full.items():
        # The same float64 function, its operations in another order; but
        # Taylor's leaky ReLU has the exact slope 0.2, TensorFlow's float32's.
        assert_close(y, y_fd, 1e-7 if spec.inexact_float64 else 1e-12, None, method)
        # Central differences of a smooth function: truncation H1² y'''/6 ≈
        # 2e-9 |y'''| plus rounding eps |y| / H1 ≈ 1e-12 |y|. 1e-7 leaves
        # room for third derivatives up to ~50 and for `Spec.inexact_float64`.
        assert_close(dy[smooth], dy_fd[smooth], 1e-7, None, f"{method} dy")
        # Truncation H2² (y_iiij + y_ijjj)/6 ≈ 2e-7 |y''''|, rounding
        # eps |y| / H2² ≈ 1e-10 |y|: 1e-5 allows fourth derivatives to ~50.
        assert_close(hess[smooth], hess_fd[smooth], 1e-5, None, f"{method} hessian")
    for method, (_, dy, d2y) in diagonal.items():
        assert_close(dy[smooth], dy_fd[smooth][..., wrt], 1e-7, None, f"{method} dy")
        reference = diagonal_fd[smooth][..., wrt]
        assert_close(d2y[smooth], reference, 1e-5, None, f"{method} d2y")  # as above
    for method, (_, _, lap) in laplacian.items():
        reference = diagonal_fd[smooth][..., wrt].sum(-1)
        assert_close(lap[smooth], reference, 3e-5, None, method)  # d' terms as above


@needs_float64
@bounded(tensorflow=8, jax=1, torch=1)
@given(
    case=net_and_points("piecewise"),
    hessian=st.sampled_from(["diagonal", "full", "laplacian"]),
    data=st.data(),
)
def test_piecewise_linear_nets_match_finite_differences(case, hessian, data):
    spec, x = case
    net, denses = build(spec)
    wrt = data.draw(subsets(spec.d), label="wrt")
    _, dy_fd, hess_fd, smooth = finite_differences(net, spec, denses, x)
    assume(smooth.any())  # some points away from the kinks
    # Away from the kinks the network is linear across the stencil: the
    # differences are exact up to rounding, 4 eps |y| / (4 H2²) ≈ 1e-10.
    assert np.abs(hess_fd[smooth]).max() < 1e-6  # and indeed not curved
    for method, (_, dy, d2y) in engines(
        net, tensor(x), order=2, hessian=hessian, wrt=wrt
    ).items():
        # Exact differences up to rounding, eps |y| / H1 ≈ 1e-12 |y| (and the
        # float32 slope of TensorFlow's leaky ReLU, 1.5e-8 relative).
        tol = 1e-7 if spec.inexact_float64 else 1e-9
        assert_close(dy[smooth], dy_fd[smooth][..., wrt], tol, None, method)
        # Zero almost everywhere, and exactly zero as computed.
        assert not d2y.any(), method


@bounded(tensorflow=24, jax=3, torch=20)
@given(spec=specs(), data=st.data())
def test_taylor_equals_autodiff(spec, data):
    order = data.draw(st.integers(1, 4), label="order")
    hessian = "diagonal"
    if order <= 2:
        hessian = data.draw(st.sampled_from(["diagonal", "full", "laplacian"]))
    wrt = data.draw(st.none() | subsets(spec.d), label="wrt")
    x = np.array(data.draw(points(spec.d), label="x"))
    net, _ = build(spec)
    results = engines(net, tensor(x), order=order, hessian=hessian, wrt=wrt)
    n, m = len(x), len(wrt) if wrt is not None else spec.d
    shapes = [(n, spec.out), (n, spec.out, m)]
    if order >= 2:
        shapes.append(
            {
                "diagonal": (n, spec.out, m),
                "full": (n, spec.out, m, m),
                "laplacian": (n, spec.out),
            }[hessian]
        )
    shapes += [(n, spec.out, m)] * (order - 2)
    for method, levels in results.items():
        assert [a.shape for a in levels] == shapes, method
    if "taylor" in results:
        # float64: the same arithmetic in another order, except TensorFlow's
        # gelu and leaky ReLU (`Spec.inexact_float64`). float32 (JAX,
        # torch): rounding of ~1e-7 per operation, amplified by up to four
        # derivatives through 4 layers.
        levels_close(
            results["taylor"],
            results["autodiff"],
            1e-7 if spec.inexact_float64 else 1e-9,
            1e-5,
            f"order={order} hessian={hessian} wrt={wrt}",
        )


@bounded(tensorflow=10, jax=1, torch=8)
@given(spec=specs(), data=st.data())
def test_hessian_diagonal_laplacian_and_wrt_are_consistent(spec, data):
    wrt = data.draw(subsets(spec.d), label="wrt")
    x = tensor(data.draw(points(spec.d), label="x"))
    net, _ = build(spec)
    full = engines(net, x, order=2, hessian="full")
    pure = engines(net, x, order=4)
    laplacian = engines(net, x, order=2, hessian="laplacian")
    sub_full = engines(net, x, order=2, hessian="full", wrt=wrt)
    sub_pure = engines(net, x, order=4, wrt=wrt)
    sub_laplacian = engines(net, x, order=2, hessian="laplacian", wrt=wrt)
    # One engine, one point, the same quantity from two calls: only the
    # order of the operations may differ (1e-12 in float64, 1e-6 float32).
    tight = dict(tol64=1e-12, tol32=1e-6)

    def cols(a):  # the features `wrt` of the last axis, in its order
        return a[..., wrt]

    for method, (y, dy, hess) in full.items():
        assert_close(hess, np.swapaxes(hess, -1, -2), **tight, err_msg="symmetric")
        diagonal = np.diagonal(hess, axis1=-2, axis2=-1)
        levels_close(pure[method][:3], [y, dy, diagonal], **tight, what="diagonal")
        assert_close(laplacian[method][2], diagonal.sum(-1), **tight, err_msg="trace")
        assert_close(laplacian[method][1], dy, **tight, err_msg="laplacian dy")
        sub = [y, cols(dy), cols(hess[..., wrt, :])]
        levels_close(sub_full[method], sub, **tight, what=f"full wrt={wrt}")
        sub = [y] + [cols(a) for a in pure[method][1:]]
        levels_close(sub_pure[method], sub, **tight, what=f"order 4 wrt={wrt}")
        sub = [y, cols(dy), cols(diagonal).sum(-1)]
        levels_close(sub_laplacian[method], sub, **tight, what=f"laplacian {wrt}")


@bounded(tensorflow=8, jax=2, torch=8)
@given(spec=specs(), data=st.data())
def test_permuting_the_batch_permutes_every_output(spec, data):
    x = np.array(data.draw(points(spec.d, 2, 7), label="x"))
    perm = np.array(data.draw(st.permutations(range(len(x))), label="permutation"))
    order = data.draw(st.integers(1, 4), label="order")
    hessian = "diagonal"
    if order <= 2:
        hessian = data.draw(st.sampled_from(["diagonal", "full", "laplacian"]))
    wrt = data.draw(st.none() | subsets(spec.d), label="wrt")
    batch_size = data.draw(st.integers(1, len(x)), label="batch_size")
    net, _ = build(spec)
    options = dict(order=order, hessian=hessian, wrt=wrt)
    whole = engines(net, tensor(x), **options)
    permuted = engines(net, tensor(x[perm]), **options)
    for method, levels in whole.items():
        # Each row is computed on its own: the same operations on the same
        # numbers (1e-12 float64 / 1e-6 float32 for a reordered reduction).
        levels_close(
            permuted[method],
            [a[perm] for a in levels],
            1e-12,
            1e-6,
            f"{method} {options}",
        )
        # derivatives(): the same, compiled, in chunks of `batch_size`, the
        # last one padded. Compiled code may fuse operations differently:
        # 1e-12 in float64; in float32 that rounding, ~1e-7, amplified by up
        # to four derivatives.
        chunked = derivatives(
            net, x[perm].astype(DTYPE), batch_size=batch_size, method=method, **options
        )
        levels_close(
            list(chunked),
            [a[perm] for a in levels],
            1e-12,
            1e-5,
            f"derivatives() {method} {options} batch_size={batch_size}",
        )


@needs_float64
@bounded(tensorflow=3, jax=1, torch=1)
@given(case=net_and_points(), method=st.sampled_from(ENGINES))
@example(
    case=(Spec(1, 1, (4,), ("tanh",), "sequential", "tanh", False, 0), [[0.1]]),
    method="taylor",
)
def test_derivatives_keeps_float64(case, method):
    spec, x = case
    x = np.asarray(x, dtype="float64")
    net, _ = build(spec)
    # "x: ... Its dtype is kept (use float64 with a float64 model for
    # reference values)."
    got = derivatives(net, x, order=2, method=method)
    ref = engines(net, tensor(x), order=2)[method]
    assert [a.dtype for a in got] == ["float64"] * 3
    levels_close(list(got), ref, 1e-12, None, method)  # float64 rounding


@bounded(tensorflow=10, jax=2, torch=10)
@given(
    case=net_and_points("curved"),
    hessian=st.sampled_from(["diagonal", "full", "laplacian"]),
    data=st.data(),
)
def test_weight_gradients_of_a_loss_on_d2y(case, hessian, data):
    spec, x = case
    wrt = data.draw(st.none() | subsets(spec.d), label="wrt")
    net, denses = build(spec)
    weights = net.trainable_variables
    options = dict(order=2, hessian=hessian, wrt=wrt)
    grads = {}
    for method in ENGINES:
        layer = DerivativeModel(net, method=method, **options)
        try:
            grads[method] = weight_gradients(layer, tensor(x), weights)
        except ValueError as err:
            if method == "taylor" and TAYLOR_REFUSES in str(err):
                continue
            raise
    loss, reference = grads["autodiff"]
    assume(loss > 1e-8)  # curved at these points: not a check of 0 == 0
    if "taylor" in grads:
        # as in test_taylor_equals_autodiff, one order higher (float32:
        # rounding amplified by the weight derivative as well)
        levels_close(
            grads["taylor"][1],
            reference,
            1e-7 if spec.inexact_float64 else 1e-9,
            1e-5,
            f"{options}",
        )
    if not FLOAT64:
        return
    # Central differences in a few weight entries, of the loss as the
    # autodiff engine computes it.
    layer = DerivativeModel(net, method="autodiff", **options)
    entries = data.draw(
        st.lists(
            st.tuples(st.integers(0, len(weights) - 1), st.integers(0, 10**6)),
            min_size=1,
            max_size=3,
        ),
        label="weight entries",
    )
    eps = 1e-5
    for i, flat in entries:
        w = weights[i]
        value = to_numpy(w)
        index = np.unravel_index(flat % value.size, value.shape)
        losses, sides = [], []
        for step in (eps, -eps):
            moved = value.copy()
            moved[index] += step
            w.assign(moved)
            losses.append(float(to_numpy(keras.ops.mean(layer(tensor(x))[2] ** 2))))
            sides.append(numpy_net(spec, denses, x)[1])
        w.assign(value)
        if not np.array_equal(*sides):
            continue  # a kink between the two: the loss jumps there
        fd = (losses[0] - losses[1]) / (2 * eps)
        # Truncation eps² L'''/6 ≈ 2e-11 L''', rounding of the loss
        # ~1e-14 |L| / eps ≈ 1e-9 |L|: 1e-6 relative to max(1, |g|).
        for method, (_, g) in grads.items():
            np.testing.assert_allclose(
                g[i][index],
                fd,
                rtol=0,
                atol=1e-6 * max(1.0, abs(fd)),
                err_msg=f"{method} {w.path}{list(index)}",
            )
