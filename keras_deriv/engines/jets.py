"""Arithmetic on jets: truncated Taylor expansions along input directions.

A jet is a list `[c0, c1, ..., ck]`. `c0` is a value `(B, *F)`; `cj` holds
its j-th derivatives along the differentiated input directions, with a
direction axis after the batch axis, `(B, n, *F)`. None is a coefficient
known to be zero everywhere (it costs nothing and stays exact).

How the second coefficient is kept is the jet's `Mode`:

- `"directions"`: pure second partials, one per direction `(B, n, *F)`;
  orders 3 and 4 are kept the same way (univariate Taylor per direction);
- `"laplacian"`: their sum, `(B, *F)` (the forward Laplacian);
- `"hessian"`: one per pair i <= j of directions, `(B, n(n+1)/2, *F)`;
- `"collapsed"`: every coefficient per direction except the highest, which
  is kept only as q fixed weighted sums over the directions, `(B, q, *F)`
  (`(B, *F)` for q = 1). The highest coefficient of a jet is linear in the
  highest coefficient of its input, so the sums can be propagated instead
  of the n coefficients they are made of ("collapsed Taylor mode": Dangel,
  Siebert, Zeinhofer and Walther, NeurIPS 2025); the Laplacian is the
  case of order 2 with weights all 1.

With a single direction there is no direction axis at all, in any mode:
every coefficient has `c0`'s shape. A coefficient whose rank equals `c0`'s
has no direction axis; that is how the functions below tell them apart.
"""

import itertools
import math

import numpy as np
from keras import ops

# Past this many directions, a weighted sum over the direction axis is one
# reduction, not a sum of slices: slices fuse under XLA for a few
# directions, but cost one op each (a 100-variable Laplacian through
# `partials` was 100 slices per layer).
MAX_SLICED_DIRECTIONS = 8


class Mode:
    """How coefficients are kept, for `n` directions.

    Args:
        kind: `"directions"`, `"laplacian"`, `"hessian"` or `"collapsed"`.
        n: the number of directions.
        top: for `"collapsed"`, the order of the highest coefficient.
        weights: for `"collapsed"`, a `(q, n)` array: the highest
            coefficient is kept as these q weighted sums over directions;
            or for a highest order of two, `(q, n, n)`: symmetric matrices
            C, the coefficient kept as Σ_ij C_ij ∂_i∂_j along the
            directions (the Laplacian's scheme, C the identity there).
    """

    def __init__(self, kind, n, top=None, weights=None):
        if n == 1 and kind != "collapsed":
            kind = "directions"  # one direction: every mode is the same
        self.kind, self.n, self.top, self.weights = kind, n, None, None
        if kind == "laplacian":
            self.top = 2
        if kind == "collapsed":
            self.top, self.weights = top, weights
        if kind == "hessian":
            self.pairs = list(itertools.combinations_with_replacement(range(n), 2))
            self.first = [i for i, _ in self.pairs]
            self.second = [j for _, j in self.pairs]

    def collapse(self, c):
        """The weighted sums over the direction axis of a per-direction
        coefficient `c` `(B, n, *F)`, as the highest coefficient is kept."""
        if c is None:
            return None
        if self.weights is None:
            return ops.sum(c, axis=1)
        if self.n > MAX_SLICED_DIRECTIONS:
            sums = [_weighted_sum(c, row) for row in self.weights]
            return sums[0] if len(sums) == 1 else ops.stack(sums, axis=1)
        # Sums of weighted slices: elementwise, so they fuse with the terms
        # they sum (a reduction over the direction axis did not under XLA).
        return self._stack(
            [
                [(w, c[:, i]) for i, w in enumerate(row) if w != 0]
                for row in self.weights
            ],
            c,
        )

    def _quadratic(self, a, b):
        """Σ_ij C_ij a_i b_j for each symmetric matrix C of the weights."""
        diagonal = all(not (m - np.diag(np.diag(m))).any() for m in self.weights)
        if self.n > MAX_SLICED_DIRECTIONS and diagonal:
            product = a * a if a is b else a * b
            sums = [_weighted_sum(product, np.diag(m)) for m in self.weights]
            return sums[0] if len(sums) == 1 else ops.stack(sums, axis=1)
        sums = []
        for matrix in self.weights:
            products = []
            for i, j in zip(*np.nonzero(np.triu(matrix)), strict=True):
                w = matrix[i, j] * (1 if i == j else 2)
                if a is b or i == j:
                    products.append((w, a[:, i] * b[:, j]))
                else:  # symmetrised: C_ij a_i b_j + C_ji a_j b_i
                    products.append((0.5 * w, a[:, i] * b[:, j] + a[:, j] * b[:, i]))
            sums.append(products)
        return self._stack(sums, a)

    def _stack(self, sums, like):
        """Each sum of `(weight, term)` pairs, stacked on a direction axis
        (none for a single sum)."""
        out = []
        for products in sums:
            total = None
            for w, term in products:
                term = term if w == 1 else term * float(w)
                total = term if total is None else total + term
            if total is None:  # an operator whose terms cancel: still connected
                total = 0.0 * like[:, 0]
            out.append(total)
        return out[0] if len(out) == 1 else ops.stack(out, axis=1)

    def reduce(self, order, c):
        """`c`, a sum of per-direction terms of coefficient `order`, as
        this mode keeps that coefficient."""
        return self.collapse(c) if order == self.top else c

    def pair(self, a, b):
        """The second-order term `a ⊗ b` of two first-order coefficients,
        symmetrised and kept as this mode keeps second coefficients."""
        if a is None or b is None:
            return None
        if self.kind == "hessian":
            a_i, a_j = ops.take(a, self.first, axis=1), ops.take(a, self.second, 1)
            if a is b:
                return a_i * a_j
            b_i, b_j = ops.take(b, self.first, axis=1), ops.take(b, self.second, 1)
            return 0.5 * (a_i * b_j + a_j * b_i)
        if self.top == 2 and self.weights is not None and self.weights.ndim == 3:
            return self._quadratic(a, b)
        return self.reduce(2, a * b)


def _weighted_sum(c, weights):
    """Σ_i weights[i] c[:, i], for `c` `(B, n, *F)`, as one reduction."""
    weights = np.asarray(weights, dtype="float64")
    if (weights == 1).all():
        return ops.sum(c, axis=1)
    w = weights.reshape(1, -1, *([1] * (len(c.shape) - 2)))
    return ops.sum(c * ops.convert_to_tensor(w, c.dtype), axis=1)


def expand(f, c):
    """Broadcast a value-shaped factor `f` against a coefficient `c`: a
    direction axis for `f` where `c` has one (a scalar broadcasts as is)."""
    return ops.expand_dims(f, 1) if 0 < len(f.shape) < len(c.shape) else f


def batched(c, value):
    """`c` with the batch size of `value`, if it has a batch of 1."""
    if c.shape[0] != 1:
        return c
    return ops.broadcast_to(c, (ops.shape(value)[0], *c.shape[1:]))


def full(c, value):
    """Coefficient `c` broadcast to the feature shape of `value` `(B, *F)`,
    keeping its own batch (1 or B) and direction axes. A jet whose value
    broadcasts against a larger one (a `(B, 1)` reduction added to a
    `(B, F)` value) has coefficients of the smaller shape: in a sum where
    the larger jet's coefficient is a known zero (None), the smaller one is
    the only term, and must still come out with the sum's shape."""
    features = len(value.shape) - 1
    if c is None or features == 0:
        return c
    have, want = c.shape[len(c.shape) - features :], value.shape[1:]
    if not any(h == 1 and w != 1 for h, w in zip(have, want, strict=True)):
        return c
    lead = tuple(ops.shape(c))[: len(c.shape) - features]
    return ops.broadcast_to(c, (*lead, *tuple(ops.shape(value))[1:]))


def terms(*values):
    """Sum of the values that are not known zeros (None), or None. A lone
    term comes back as it is: the terms must have the sum's feature shape
    (only batch and direction axes may broadcast), as within one jet;
    `add` sums jets of different shapes."""
    present = [t for t in values if t is not None]
    if not present:
        return None
    total = present[0]
    for t in present[1:]:
        total = total + t
    return total


def times(*factors):
    """Product, or None (a known zero) if any factor is None. Factors may
    be Python numbers; value-shaped tensors broadcast over directions."""
    if any(f is None for f in factors):
        return None
    tensors = [f for f in factors if hasattr(f, "shape")]
    number = math.prod(f for f in factors if not hasattr(f, "shape"))
    rank = max(len(t.shape) for t in tensors)
    like = next(t for t in tensors if len(t.shape) == rank)
    # The smaller (value-shaped) factors and the number first: fewer
    # operations on the large per-direction tensors, none on a 1.0.
    tensors.sort(key=lambda t: len(t.shape))
    out = tensors[0] if number == 1 else tensors[0] * number
    for t in tensors[1:]:
        out = expand(out, like) * t if len(out.shape) < len(t.shape) else out * t
    return out


def linear(jet, apply):
    """Jet of a linear map: `apply` on every coefficient, its direction
    axis folded into the batch. The caller adds any offset to `c0`. (One
    call on all coefficients stacked was 16-26% slower on TensorFlow.)"""
    out = [apply(jet[0])]
    for c in jet[1:]:
        if c is None or len(c.shape) == len(jet[0].shape):
            out.append(None if c is None else apply(c))
        else:
            shape = tuple(ops.shape(c))
            res = apply(ops.reshape(c, (-1, *shape[2:])))
            out.append(ops.reshape(res, (*shape[:2], *tuple(ops.shape(res))[1:])))
    return out


def scale(jet, factor):
    """Jet of `c0 * factor` for a factor that does not depend on the input:
    a number, a per-feature weight `(*F)`, or a value-shaped `(B, *F)`
    tensor such as a dropout mask. The factor's kind is told by the rank of
    `jet[0]`: given a jet without its value (`jet[1:]`), a value-shaped
    factor must have a batch of 1 (it then broadcasts either way)."""
    if hasattr(factor, "shape") and len(factor.shape) == len(jet[0].shape):
        return [None if c is None else times(c, factor) for c in jet]
    return [None if c is None else c * factor for c in jet]


def add(*jets):
    """Jet of a sum. The values may broadcast against each other (softmax's
    `(B, 1)` normaliser against its `(B, F)` input): every coefficient of
    the sum has the sum's shape, also where its only present term is one
    of the smaller shape."""
    out = [terms(*cs) for cs in zip(*jets, strict=True)]
    return [out[0], *(full(c, out[0]) for c in out[1:])]


def negate(jet):
    return [None if c is None else -c for c in jet]


def compose(jet, derivs, mode):
    """Jet of `f(u)` for an elementwise `f` (Faà di Bruno), given `derivs`
    = `[f'(u0), f''(u0), ...]` with None where a derivative is zero.

    Coefficient j is f' times the input's coefficient j plus products of
    lower ones. Only the products are per direction, so where coefficient
    j is collapsed they are summed (`mode.reduce`) before the value-shaped
    factors f'', f''', ... multiply them."""
    k = len(jet) - 1
    u = [*jet, None, None, None][:5]
    f = [None, *derivs, None, None, None][:5]
    out = [None] * (k + 1)
    if k >= 1:
        out[1] = times(f[1], u[1])
    if k >= 2:
        out[2] = terms(times(f[1], u[2]), times(f[2], mode.pair(u[1], u[1])))
    if k >= 3:
        out[3] = terms(
            times(f[1], u[3]),
            times(f[2], mode.reduce(3, times(3.0, u[1], u[2]))),
            times(f[3], mode.reduce(3, times(u[1], u[1], u[1]))),
        )
    if k >= 4:
        second = terms(times(4.0, u[1], u[3]), times(3.0, u[2], u[2]))
        out[4] = terms(
            times(f[1], u[4]),
            times(f[2], mode.reduce(4, second)),
            times(f[3], mode.reduce(4, times(6.0, u[1], u[1], u[2]))),
            times(f[4], mode.reduce(4, times(u[1], u[1], u[1], u[1]))),
        )
    return out


def multiply(u, v, mode):
    """Jet of an elementwise product `u * v` (Leibniz)."""
    k = len(u) - 1
    out = [u[0] * v[0]]
    for j in range(1, k + 1):
        if j == 2:
            cross = times(2.0, mode.pair(u[1], v[1]))
        else:
            products = (times(math.comb(j, i), u[i], v[j - i]) for i in range(1, j))
            cross = mode.reduce(j, terms(*products))
        out.append(terms(times(u[0], v[j]), times(u[j], v[0]), cross))
    return out


def power(jet, exponent, mode, offset=0.0):
    """Jet of `(u + offset) ** exponent` (u > -offset where not an integer
    power). The derivatives past an integer exponent's are known zeros,
    not `0 * u ** -1` (nan at u = -offset)."""
    u, p, coefficient, derivs = jet[0] + offset, float(exponent), 1.0, []
    for _ in range(len(jet)):
        derivs.append(None if coefficient == 0 else coefficient * u**p)
        coefficient, p = coefficient * p, p - 1.0
    return [derivs[0], *compose(jet, derivs[1:], mode)[1:]]


def log(jet, mode):
    """Jet of `log(u)` (u > 0): d^k log u / du^k = (-1)^(k+1) (k-1)! / u^k."""
    inverse = 1.0 / jet[0]
    derivs, p = [], inverse
    for k in range(1, len(jet)):
        derivs.append((-1) ** (k + 1) * math.factorial(k - 1) * p)
        p = p * inverse
    return [ops.log(jet[0]), *compose(jet, derivs, mode)[1:]]
