"""Jet arithmetic where a known-zero (None) coefficient meets a reduced or
batch-1 one, checked against references that do not go through the
package: closed forms, and float64 finite differences of NumPy networks.

log_softmax's input right after the first Dense is affine in x, so its
coefficients of order 2 and up are None; its correction term
`-log(sum(exp(z)))` is reduced over the features, `(B, [n,] 1)`. A sum of the
two must still have the full shape `(B, [n,] F)`."""

import math

import keras
import numpy as np
import pytest
from conftest import BACKEND, assert_close, f64, to_numpy

from keras_deriv import DerivativeModel
from keras_deriv.engines import jets, vector_activations

B = 5  # not 1, and not a multiple of the output widths: a wrong batch shows

# Every (order, hessian) the engine offers: orders 3 and 4 are diagonal only.
CASES = [(1, "diagonal"), (2, "diagonal"), (3, "diagonal"), (4, "diagonal")]
CASES += [(2, "full"), (2, "laplacian")]
# Input widths of the deeper nets: with d = 1 there is no direction axis.
WIDTHS = [1, 3]
if BACKEND == "jax":  # eager JAX dispatches slowly: order 4 diagonal computes
    # the coefficients of orders 2 and 3 as those orders' own calls do, and
    # the log_softmax output test covers d = 1.
    CASES.remove((2, "diagonal"))
    CASES.remove((3, "diagonal"))
    WIDTHS = [3]


# -- NumPy references ---------------------------------------------------------


def np_log_softmax(z):
    shifted = z - z.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def np_softmax(z):
    return np.exp(np_log_softmax(z))


def np_glu(z):
    a, b = np.split(z, 2, axis=-1)
    return a / (1 + np.exp(-b))


NP_ACTIVATIONS = {
    None: lambda z: z,
    "tanh": np.tanh,
    "softmax": np_softmax,
    "log_softmax": np_log_softmax,
}


def dense(units, seed, activation=None):
    return keras.layers.Dense(
        units,
        activation=activation,
        dtype="float64",
        kernel_initializer=keras.initializers.GlorotUniform(seed),
        bias_initializer=keras.initializers.RandomUniform(-0.5, 0.5, seed=seed + 1),
    )


def network(d, *layers):
    """A float64 Sequential net, and its NumPy forward pass (float64)."""
    net = keras.Sequential([keras.Input((d,), dtype="float64"), *layers])
    steps = []
    for layer in net.layers:
        if isinstance(layer, keras.layers.Dense):
            kernel, bias = (to_numpy(w).astype("float64") for w in layer.weights)
            steps.append(lambda h, k=kernel, b=bias: h @ k + b)
        name = keras.activations.serialize(layer.activation)
        steps.append(NP_ACTIVATIONS[None if name == "linear" else name])

    def forward(x):
        h = np.asarray(x, dtype="float64")
        for step in steps:
            h = step(h)
        return h

    return net, forward


# The k-th derivative along a line, from the degree-8 polynomial through 9
# equally spaced samples: truncation error O(h^(9-k)), rounding ~1e-16 |f|
# / h^k. At h = 0.02, against the closed forms below on a Glorot-scaled
# layer, the error is ~4e-14, 1e-11, 1e-9, 1e-7 for k = 1 to 4.
_STEPS = np.arange(-4, 5)
_FIT = np.linalg.inv(np.vander(_STEPS, increasing=True).astype("float64"))


def line_derivative(f, x, v, k, h=0.02):
    """d^k/dt^k f(x + t v) at t = 0, `(B, *out)`."""
    samples = np.stack([f(x + s * h * v) for s in _STEPS])
    return math.factorial(k) * np.tensordot(_FIT[k], samples, 1) / h**k


def fd_reference(f, x, order, hessian):
    """`[y, dy, d2y, ...]` in DerivativeModel's layout, by finite differences."""
    e = np.eye(x.shape[1])

    def pure(k):
        return np.stack([line_derivative(f, x, v, k) for v in e], -1)

    def mixed(u, v):  # polarization: d2/du dv = (D2 along u+v - along u-v) / 4
        return (line_derivative(f, x, u + v, 2) - line_derivative(f, x, u - v, 2)) / 4

    out = [f(x)]
    for k in range(1, order + 1):
        if k == 2 and hessian == "full":
            rows = [np.stack([mixed(u, v) for v in e], -1) for u in e]
            out.append(np.stack(rows, -2))
        else:
            out.append(
                pure(k).sum(-1) if k == 2 and hessian == "laplacian" else pure(k)
            )
    return out


def log_softmax_affine_reference(kernel, bias, x, order, hessian):
    """Closed form of the derivatives of y = log_softmax(x W + b): along a
    direction v, with w = v W and p = softmax(x W + b), y = z - LSE(z) and
    d^k/dt^k LSE(z + t w) is the k-th cumulant of w_J for J ~ p. So
    dy = w - E[w], d2y = -Var[w] (-Cov[w_i, w_j] across directions),
    d3y = -E[(w - E w)^3], d4y = -(E[(w - E w)^4] - 3 Var[w]^2)."""
    p = np_softmax(x @ kernel + bias)  # (B, m)
    w = kernel[None, :, :]  # (1, d, m): the row w_i for direction i
    mean = np.einsum("bm,xdm->bd", p, w)[:, None, :]  # (B, 1, d)
    centred = np.swapaxes(w, 1, 2) - mean  # (B, m, d)

    def central(power):
        return np.einsum("bm,bmd->bd", p, centred**power)[:, None, :]  # (B, 1, d)

    out = [np_log_softmax(x @ kernel + bias), centred]
    if order >= 2:
        if hessian == "full":
            cov = np.einsum("bm,bmi,bmj->bij", p, centred, centred)[:, None]
            out.append(-np.broadcast_to(cov, (*p.shape, *cov.shape[2:])))
        elif hessian == "laplacian":
            out.append(-np.broadcast_to(central(2).sum(-1), p.shape))
        else:
            out.append(-np.broadcast_to(central(2), centred.shape))
    if order >= 3:
        out.append(-np.broadcast_to(central(3), centred.shape))
    if order >= 4:
        out.append(-np.broadcast_to(central(4) - 3 * central(2) ** 2, centred.shape))
    return [np.ascontiguousarray(o) for o in out]


def taylor(net, x, order, hessian):
    layer = DerivativeModel(
        net, order=order, hessian=hessian, method="taylor", dtype="float64"
    )
    return [to_numpy(t) for t in layer(f64(x))]


def expected_shapes(out, d, order, hessian):
    shapes = [(B, *out), (B, *out, d)]
    if order >= 2:
        extra = {"diagonal": (d,), "full": (d, d), "laplacian": ()}[hessian]
        shapes.append((B, *out, *extra))
    return shapes + [(B, *out, d)] * (order - 2)


def check(got, ref, d, out, order, hessian, tols):
    """Shapes, then each level k within `tols[k]` = (float64, float32)."""
    assert [g.shape for g in got] == expected_shapes(out, d, order, hessian)
    for k, (g, r) in enumerate(zip(got, ref, strict=True)):
        assert_close(g, r, *tols[k], f"level {k}, order {order}, {hessian}")
    if order >= 2:  # curved: not a check of 0 == 0
        assert np.abs(ref[2]).max() > 1e-3


def points(d, seed=0):
    return np.random.default_rng(seed).uniform(-1.5, 1.5, (B, d))


# -- jet arithmetic ------------------------------------------------------------


def test_add_broadcasts_a_reduced_term_next_to_a_none():
    # a: value (B, F) with c1 of batch 1 and c2 known zero; b: a reduced jet
    # (B, 1) with every coefficient present. a + b has a (B, [n,] F) jet.
    rng = np.random.default_rng(0)
    n, f = 2, 3
    a = [f64(rng.normal(size=(B, f))), f64(rng.normal(size=(1, n, f))), None]
    b = [f64(rng.normal(size=(B, 1))), f64(rng.normal(size=(B, n, 1)))]
    b.append(f64(rng.normal(size=(B, n, 1))))
    total = jets.add(a, b)
    a_np = [to_numpy(c) for c in a[:2]]
    b_np = [to_numpy(c) for c in b]
    expected = [a_np[0] + b_np[0], a_np[1] + b_np[1]]
    expected.append(np.broadcast_to(b_np[2], (B, n, f)))
    for k, (got, ref) in enumerate(zip(total, expected, strict=True)):
        assert tuple(got.shape) == ref.shape, k
        np.testing.assert_array_equal(to_numpy(got), ref)  # exact: sums, copies
    # The same without a direction axis (one direction), and with the roles
    # swapped: the reduced jet is the one with the None.
    c = [b[0], b[1][:, 0], None]
    total = jets.add(c, [a[0], a[1][:, 0], b[2][:, 0]])
    assert [tuple(t.shape) for t in total] == [(B, f), (B, f), (B, f)]
    assert jets.add([a[0], None], [b[0], None])[1] is None
    # terms() sums coefficients of one shape; a lone term comes back as is
    assert jets.terms(None, b[2], None) is b[2]
    assert jets.terms(None, None) is None


def test_power_with_an_integer_exponent_is_finite_at_zero():
    # (u0 + t c)^2 = u0^2 + 2 u0 c t + c^2 t^2: the third derivative is 0,
    # not 0 * u0^-1 (nan at u0 = 0).
    u0 = np.array([[0.0, 1.5, -2.0]])
    c = np.array([[0.5, -1.0, 2.0]])
    out = jets.power([f64(u0), f64(c), None, None], 2, jets.Mode("directions", 1))
    expected = [u0**2, 2 * u0 * c, 2 * c**2, np.zeros_like(u0)]
    for k, (got, ref) in enumerate(zip(out, expected, strict=True)):
        got = np.zeros_like(ref) if got is None else to_numpy(got)  # a known 0
        # a few operations on exact inputs: float32 rounding at worst
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=0, err_msg=str(k))


# -- through the engine ----------------------------------------------------------

# Per level k = 0..4, (float64 tolerance, float32 tolerance), relative to
# max(1, max|ref|) (`assert_close`). Where Keras computes in float32 (JAX,
# torch) its rounding, ~1e-7 relative per operation over a few dozen
# operations (measured: <= 1e-6), is the larger error at every level: 1e-5.
# Closed forms, float64: rounding only, ~1e-16 per operation (measured:
# <= 1e-15), so 1e-12 at every level.
CLOSED_TOLS = [(1e-12, 1e-5)] * 5
# Finite differences, float64: the stencil's error (see `line_derivative`;
# measured on these nets: 8e-14, 2e-11, 4e-9, 6e-8 for k = 1 to 4) with a
# 15-100x margin; the value (level 0) is not differenced.
FD_TOLS = [(1e-12, 1e-5), (1e-11, 1e-5), (1e-9, 1e-5), (1e-7, 1e-5), (1e-6, 1e-5)]


# One net per test, every case on it: a test's setup (clear_session) costs
# as much as a few DerivativeModel calls.


@pytest.mark.parametrize("d", [1, 2, 3])
def test_log_softmax_output_after_first_dense(d):
    layer = dense(4, seed=3 * d, activation="log_softmax")
    net = keras.Sequential([keras.Input((d,), dtype="float64"), layer])
    kernel, bias = (to_numpy(w).astype("float64") for w in layer.weights)
    x = points(d, seed=d)
    for order, hessian in CASES:
        ref = log_softmax_affine_reference(kernel, bias, x, order, hessian)
        got = taylor(net, x, order, hessian)
        check(got, ref, d, (4,), order, hessian, CLOSED_TOLS)


@pytest.mark.parametrize("d", WIDTHS)
def test_log_softmax_hidden_after_first_dense(d):
    net, forward = network(
        d, dense(5, 1, "log_softmax"), dense(4, 3, "tanh"), dense(2, 5)
    )
    x = points(d)
    for order, hessian in CASES:
        ref = fd_reference(forward, x, order, hessian)
        check(taylor(net, x, order, hessian), ref, d, (2,), order, hessian, FD_TOLS)


@pytest.mark.parametrize("d", WIDTHS)
def test_softmax_after_first_dense(d):
    net, forward = network(d, dense(4, 7, "softmax"), dense(3, 9))
    x = points(d)
    for order, hessian in CASES:
        ref = fd_reference(forward, x, order, hessian)
        check(taylor(net, x, order, hessian), ref, d, (3,), order, hessian, FD_TOLS)


def test_add_layer_broadcasts_a_reduced_branch():
    # Keras's merge layers broadcast: (B, 4) + (B, 1). The wide branch is
    # affine (its coefficients of order 2 and up are None), the narrow one
    # curved: the sum's derivatives are the narrow one's, 4 wide.
    wide, narrow = dense(4, 13), dense(1, 15, "tanh")
    x_in = keras.Input((2,), dtype="float64")
    y_out = keras.layers.Add(dtype="float64")([wide(x_in), narrow(x_in)])
    net = keras.Model(x_in, y_out)
    (k1, b1), (k2, b2) = (
        [to_numpy(w).astype("float64") for w in layer.weights]
        for layer in (wide, narrow)
    )

    def forward(x):
        return x @ k1 + b1 + np.tanh(x @ k2 + b2)

    x = points(2)
    for order, hessian in CASES:
        ref = fd_reference(forward, x, order, hessian)
        check(taylor(net, x, order, hessian), ref, 2, (4,), order, hessian, FD_TOLS)


def first_dense_jet(kernel, bias, x, order, hessian):
    """The jet the engine gives the first Dense's output z = x W + b: the
    value, the rows of W as first coefficients (a batch of one, a direction
    axis unless d = 1), and known zeros above; and its Mode."""
    d = kernel.shape[0]
    c1 = f64(kernel[None] if d > 1 else kernel)  # (1, d, F) or (1, F)
    kind = {"full": "hessian", "laplacian": "laplacian"}.get(hessian, "directions")
    jet = [f64(x @ kernel + bias), c1, *[None] * (order - 1)]
    return jet, jets.Mode(kind if order >= 2 else "directions", d)


def as_levels(jet, mode, hessian):
    """A jet's coefficients in DerivativeModel's layout (as `fd_reference`)."""
    out = [to_numpy(jets.batched(c, jet[0])) for c in jet]
    levels = [out[0]]
    for k, c in enumerate(out[1:], start=1):
        if k == 2 and hessian == "laplacian":
            levels.append(c)  # (B, F), with one direction or several
        elif mode.n == 1:  # no direction axis
            levels.append(
                c[..., None, None] if k == 2 and hessian == "full" else c[..., None]
            )
        elif k == 2 and hessian == "full":
            full = np.zeros((*c.shape[:1], *c.shape[2:], mode.n, mode.n))
            for p, (i, j) in enumerate(mode.pairs):
                full[..., i, j] = full[..., j, i] = c[:, p]
            levels.append(full)
        else:
            levels.append(np.moveaxis(c, 1, -1))
    return levels


@pytest.mark.parametrize("d", [1, 3])
def test_glu_after_first_dense(d):
    # Keras infers glu's output shape wrongly, as its input's (8 wide, not
    # 4), and DerivativeModel lays the derivatives out in that shape: the
    # jet rule is checked on its own, on the jet the engine would give it.
    rng = np.random.default_rng(d)
    kernel, bias = rng.normal(size=(d, 8)), rng.uniform(-0.5, 0.5, 8)
    x = points(d)
    for order, hessian in CASES:
        jet, mode = first_dense_jet(kernel, bias, x, order, hessian)
        got = as_levels(vector_activations.glu(jet, mode), mode, hessian)
        ref = fd_reference(lambda t: np_glu(t @ kernel + bias), x, order, hessian)
        check(got, ref, d, (4,), order, hessian, FD_TOLS)
