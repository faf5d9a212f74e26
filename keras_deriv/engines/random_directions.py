"""Second-order operators estimated along random directions (Hutchinson).

An operator `Σ_ij A_ij ∂_i∂_j f + Σ_i b_i ∂_i f` (A symmetric) is
`tr(A H) + b·∇f`. With A = L₊L₊ᵀ - L₋L₋ᵀ (its positive and negative
parts) and ε with E[ε εᵀ] = I, the directions v = L ε / √k give
E[Σ_v D²_v f] = tr(L₊ᵀ H L₊) = tr(A₊ H) over k of them, so

    estimate = Σ_{v from L₊} D²_v f - Σ_{v from L₋} D²_v f + D_b f

is unbiased; D_b f, along the one constant direction b, is exact. The
engines compute D²_v f for all directions at once as one collapsed
coefficient per output (`weights`, ±1 over the directions). Each output
has directions of its own: outputs are independent estimates.

A diagonal A (the Laplacian, a weighted Laplacian) is never built as a
matrix: its factor is a vector of scales, so d = 100,000 costs O(k·d).
"""

import math

import numpy as np
from keras import ops

# A non-diagonal A is factored by an eigendecomposition of its block over
# the variables it involves: up to this many of them.
MAX_DENSE_VARIABLES = 4096


class _Factor:
    """L for one sign of one operator's A, over `variables` (feature
    indices): a vector of scales (diagonal A) or a `(p, rank)` matrix."""

    def __init__(self, variables, factor):
        self.variables = tuple(variables)
        self.factor = factor

    @property
    def rank(self):
        return self.factor.shape[-1] if self.factor.ndim == 2 else len(self.factor)


def _factors(second, name):
    """`(positive, negative)` factors of the symmetric part `second`
    (`{(i, j): coefficient}`), either None where it is zero."""
    variables = sorted({i for pair in second for i in pair})
    if all(i == j for i, j in second):
        a = np.asarray([second.get((v, v), 0.0) for v in variables])
        parts = []
        for sign in (1, -1):
            keep = sign * a > 0
            chosen = [v for v, k in zip(variables, keep, strict=True) if k]
            parts.append(_Factor(chosen, np.sqrt(sign * a[keep])) if chosen else None)
        return tuple(parts)
    if len(variables) > MAX_DENSE_VARIABLES:
        raise ValueError(
            f"partials[{name!r}]: the estimator factors an operator with mixed "
            f"second partials over its {len(variables)} variables as a dense "
            f"matrix; at most {MAX_DENSE_VARIABLES} are supported. Operators "
            "with pure second partials only (a weighted Laplacian) have no "
            "such limit."
        )
    column = {v: c for c, v in enumerate(variables)}
    matrix = np.zeros((len(variables), len(variables)))
    for (i, j), c in second.items():
        matrix[column[i], column[j]] += c if i == j else 0.5 * c
        if i != j:
            matrix[column[j], column[i]] += 0.5 * c
    values, vectors = np.linalg.eigh(matrix)
    tolerance = 1e-12 * float(np.abs(values).max())  # relative: tiny A too
    parts = []
    for sign in (1, -1):
        keep = sign * values > tolerance
        if keep.any():
            parts.append(
                _Factor(variables, vectors[:, keep] * np.sqrt(sign * values[keep]))
            )
        else:
            parts.append(None)
    return tuple(parts)


class RandomPlan:
    """The random directions for a `Hutchinson` estimate of `terms` (as for
    `interpolation.Plan`, of order at most two) on `width` features, and how
    the engines' coefficients along them combine into each output.

    The directions are, in order: k per distinct factor (random, drawn at
    each call), then the exact first-order directions b (constant)."""

    def __init__(self, terms, width, estimator, names):
        self.width = width
        self.k = estimator.directions
        self.distribution = estimator.distribution
        self.factors = []  # _Factor, k random directions each
        firsts = []  # distinct constant first-order directions
        self._outputs = []  # per output: ({factor: sign}, first index or None)
        for name, operator in zip(names, terms, strict=True):
            too_high = [index for index in operator if len(index) > 2]
            if too_high:
                raise ValueError(
                    f"partials[{name!r}]: the estimator takes operators of order "
                    f"at most two (Σ a_ij ∂_i∂_j + Σ b_i ∂_i); this one has a term "
                    f"of order {len(too_high[0])}. Compute it without "
                    "estimator=, in its own DerivativeModel."
                )
            second = {i: c for i, c in operator.items() if len(i) == 2 and c != 0}
            first = np.zeros(width)
            for index, c in operator.items():
                if len(index) == 1:
                    first[index[0]] += c
            signs = {}
            parts = _factors(second, name) if second else (None, None)
            for sign, factor in zip((1, -1), parts, strict=True):
                if factor is not None:
                    signs[self._factor_index(factor)] = sign
            b = None
            if first.any():
                b = next(
                    (i for i, f in enumerate(firsts) if np.array_equal(f, first)), None
                )
                if b is None:
                    firsts.append(first)
                    b = len(firsts) - 1
            self._outputs.append((signs, b))
        self.firsts = np.asarray(firsts).reshape(-1, width)
        self.order = 2 if self.factors else 1
        self.random = self.k * len(self.factors)
        support = np.zeros(width, dtype=bool)
        for factor in self.factors:
            support[list(factor.variables)] = True
        support |= self.firsts.any(axis=0)
        self.support = support
        if not self.count:
            raise ValueError(
                "partials: every operator's coefficients cancel: there is "
                "nothing to estimate. Drop estimator= (the exact engines "
                "return connected zeros)."
            )

    def _factor_index(self, factor):
        # Every output its own draws, even where two outputs share A: two
        # outputs of one operator are then independent estimates (whose
        # product has the square of the exact operator as its mean).
        self.factors.append(factor)
        return len(self.factors) - 1

    @property
    def count(self):
        """The number of directions, random and constant."""
        return self.random + len(self.firsts)

    def directions(self, draw, dtype):
        """`(count, width)`: the directions of one call; `draw(shape)` gives
        a float tensor of that shape with E[ε εᵀ] = I per row."""
        rows = []
        scale = 1.0 / math.sqrt(self.k)
        # One draw for all factors, so each gets its own ε even from a
        # fixed seed (`resample=False`).
        if self.factors:
            rank = max(factor.rank for factor in self.factors)
            epsilons = draw((len(self.factors), self.k, rank))
        for i, factor in enumerate(self.factors):
            epsilon = epsilons[i, :, : factor.rank]
            if factor.factor.ndim == 1:
                part = epsilon * ops.convert_to_tensor(factor.factor * scale, dtype)
            else:
                part = ops.matmul(
                    epsilon, ops.convert_to_tensor(factor.factor.T * scale, dtype)
                )
            rows.append(self._scatter(part, factor.variables, dtype))
        if len(self.firsts):
            rows.append(ops.convert_to_tensor(self.firsts, dtype))
        return rows[0] if len(rows) == 1 else ops.concatenate(rows, axis=0)

    def _scatter(self, part, variables, dtype):
        """`part` `(k, p)` on the features `variables`, zeros elsewhere:
        `(k, width)`, by a gather (no `(p, width)` matrix)."""
        if variables == tuple(range(self.width)):
            return part
        padded = ops.concatenate([part, ops.zeros((self.k, 1), dtype)], axis=1)
        where = np.full(self.width, len(variables))
        where[list(variables)] = np.arange(len(variables))
        return ops.take(padded, where, axis=1)

    @property
    def weights(self):
        """`(q, count)`: each distinct second-order part as signed sums over
        the directions (zero on the constant ones), or None for order one."""
        if not self.factors:
            return None
        return np.asarray(self._rows()[0])

    def _rows(self):
        rows, index = [], []
        for signs, _ in self._outputs:
            if not signs:
                index.append(None)
                continue
            row = np.zeros(self.count)
            for f, sign in signs.items():
                row[f * self.k : (f + 1) * self.k] = sign
            found = next(
                (r for r, known in enumerate(rows) if np.array_equal(known, row)), None
            )
            if found is None:
                rows.append(row)
                found = len(rows) - 1
            index.append(found)
        return rows, index

    def combine(self, first, second):
        """The outputs, each `(B, m)`, from `first` `(B, m, count)`, the
        first derivatives along the directions, and `second` `(B, m, q)`, the
        weighted sums of the second ones (None for order one)."""
        _, rows = self._rows()
        results = []
        for (_, b), row in zip(self._outputs, rows, strict=True):
            total = None
            if row is not None:
                total = second[:, :, row]
            if b is not None:
                term = first[:, :, self.random + b]
                total = term if total is None else total + term
            if total is None:  # every coefficient cancels: zeros, connected
                total = 0.0 * first[:, :, 0]
            results.append(total)
        return results
