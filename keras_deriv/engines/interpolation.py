"""Mixed partials from derivatives along a few directions.

Along a direction v, D^k_v f = k! Σ_{|β|=k} (v^β / β!) ∂^β f. Taking as
directions v = i / k for every integer vector i with |i| = k over the
variables of a multi-index α (the set is unisolvent: Griewank, Utke and
Walther, Math. Comp. 2000), the matrix A[v, β] = v^β / β! is invertible,
and ∂^α f = Σ_v W[α, v] D^k_v f with W = A⁻¹ / k!. A linear operator
Σ c_α ∂^α f is then one weighted sum of directional derivatives per order;
the engines compute each direction's Taylor coefficients once, and every
requested partial and operator is a fixed linear combination of them.

Only the highest order's combinations are needed, not its coefficients
along each direction: `Plan.collapse` gives them as weights, and the
Taylor engine propagates those sums directly (collapsed Taylor mode).
"""

import itertools
import math

import numpy as np
from keras import ops


def _compositions(k, n):
    """Integer vectors of length n with entries >= 0 summing to k."""
    for cuts in itertools.combinations(range(k + n - 1), n - 1):
        bounds = (-1, *cuts, k + n - 1)
        yield tuple(bounds[j + 1] - bounds[j] - 1 for j in range(n))


def _counts(index, variables):
    return tuple(index.count(v) for v in variables)


def _factorials(beta):
    return np.prod([math.factorial(b) for b in beta])


def _design(n, vectors):
    v = np.asarray(vectors, dtype="float64")
    return v / np.linalg.norm(v, axis=1, keepdims=True)


_PHI = (1 + math.sqrt(5)) / 2
# Antipodal spherical designs of strength 5: Σ_v (v·x)⁴ is a multiple of
# |x|⁴. In 2-D three directions 60° apart; in 3-D the six axes of the
# icosahedron.
DESIGNS = {
    2: _design(2, [[1, 0], [0.5, math.sqrt(3) / 2], [-0.5, math.sqrt(3) / 2]]),
    3: _design(
        3,
        [
            [0, 1, _PHI],
            [0, 1, -_PHI],
            [1, _PHI, 0],
            [1, -_PHI, 0],
            [_PHI, 0, 1],
            [-_PHI, 0, 1],
        ],
    ),
}


class Plan:
    """The directions to differentiate along and, per output, the weights
    that turn their Taylor coefficients into it.

    Args:
        terms: per output, `{multi-index: coefficient}` (multi-indices are
            sorted tuples of feature indices).
        width: the number of input features.
    """

    def __init__(self, terms, width):
        self.width = width
        self.terms = terms
        self._directions = {}  # direction (tuple) -> column
        # per output: list of (order, {column: weight})
        self.outputs = []
        for operator in terms:
            per_order = {}
            for k in sorted({len(index) for index in operator}):
                part = {i: c for i, c in operator.items() if len(i) == k}
                weights = self._design_weights(part)
                if weights is None:
                    weights = {}
                    for index, coefficient in part.items():
                        for column, w in self._weights(index).items():
                            weights[column] = weights.get(column, 0.0) + coefficient * w
                per_order[k] = weights
            self.outputs.append(sorted(per_order.items()))
        self.order = max(k for output in self.outputs for k, _ in output)

    @property
    def directions(self) -> np.ndarray:
        """`(r, width)`: the directions, one per row."""
        rows = sorted(self._directions, key=self._directions.get)
        return np.asarray(rows, dtype="float64").reshape(-1, self.width)

    def _column(self, direction):
        return self._directions.setdefault(direction, len(self._directions))

    def _weights(self, index):
        """`{column: weight}` with ∂^index f = Σ weight · D^k_column f."""
        k = len(index)
        variables = sorted(set(index))
        n = len(variables)
        basis = list(_compositions(k, n))
        target = basis.index(_counts(index, variables))
        rows = []
        columns = []
        for i in basis:
            v = np.asarray(i, dtype="float64") / k
            rows.append(
                [
                    np.prod(v ** np.asarray(beta))
                    / np.prod([math.factorial(b) for b in beta])
                    for beta in basis
                ]
            )
            direction = [0.0] * self.width
            for variable, component in zip(variables, v, strict=True):
                direction[variable] = float(component)
            columns.append(self._column(tuple(direction)))
        inverse = np.linalg.inv(np.asarray(rows)) / math.factorial(k)
        return {
            column: float(inverse[target, j])
            for j, column in enumerate(columns)
            if inverse[target, j] != 0.0
        }

    def _row(self, weights):
        w = np.zeros(len(self._directions))
        for column, weight in weights.items():
            w[column] = weight
        return w

    @property
    def collapse(self) -> np.ndarray | None:
        """`(q, r)`: the weights of the highest order's q distinct
        combinations of the r directions, or None where collapsing would
        not propagate fewer coefficients (q >= r)."""
        rows = self._top_rows()
        if len(rows) >= len(self._directions):
            return None
        return np.asarray(rows)

    @property
    def taylor(self):
        """The plan for the Taylor engine: a `PairPlan` for order two (fewer
        directions), else this plan."""
        if self.order == 2:
            pairs = PairPlan(self.terms, self.width)
            if pairs.collapse is not None:
                return pairs
        return self  # (also where every second-order part cancels)

    def _top_rows(self):
        rows = []
        for output in self.outputs:
            for k, weights in output:
                row = self._row(weights)
                if k == self.order and not any(np.array_equal(row, r) for r in rows):
                    rows.append(row)
        return rows

    def _design_weights(self, part):
        """`{column: weight}` for a fourth-order `part` along the directions
        of a spherical design, where it is a combination of them (the
        biharmonic is: 3 directions in 2-D and 6 in 3-D, where interpolation
        takes 5 and 12), else None."""
        if {len(index) for index in part} != {4}:
            return None
        variables = sorted({i for index in part for i in index})
        design = DESIGNS.get(len(variables))
        if design is None:
            return None
        basis = list(_compositions(4, len(variables)))
        # D⁴_v f = 4! Σ_β v^β / β! ∂^β f over the multi-indices β of order 4
        a = np.asarray(
            [
                [
                    24 * np.prod(v ** np.asarray(beta)) / _factorials(beta)
                    for v in design
                ]
                for beta in basis
            ]
        )
        c = np.zeros(len(basis))
        for index, coefficient in part.items():
            c[basis.index(_counts(index, variables))] += coefficient
        w, *_ = np.linalg.lstsq(a, c, rcond=None)
        if np.abs(a @ w - c).max() > 1e-12 * max(1.0, np.abs(c).max()):
            return None
        weights = {}
        for v, weight in zip(design, w, strict=True):
            direction = [0.0] * self.width
            for variable, component in zip(variables, v, strict=True):
                direction[variable] = float(component)
            weights[self._column(tuple(direction))] = float(weight)
        return weights

    def combine(self, levels, collapsed=False):
        """The outputs from `levels[k]` `(B, m, r)`, D^k along each
        direction; each output `(B, m)`. With `collapsed`, the highest
        order is given as `(B, m, q)`, the combinations of `collapse`."""
        rows = self._top_rows()
        results = []
        for output in self.outputs:
            total = None
            for k, weights in output:
                row = self._row(weights)
                if collapsed and k == self.order:
                    index = next(
                        i for i, r in enumerate(rows) if np.array_equal(r, row)
                    )
                    term = levels[k][:, :, index]
                else:
                    w = ops.convert_to_tensor(row, levels[k].dtype)
                    term = ops.einsum("bmr,r->bm", levels[k], w)
                total = term if total is None else total + term
            results.append(total)
        return results


class PairPlan:
    """Named partials and operators of order at most two, for the Taylor
    engine: along the coordinate directions of the variables they involve,
    with each output's second-order part Σ C_ij ∂_i∂_j kept as one
    collapsed coefficient (the forward Laplacian's scheme with a
    coefficient matrix C in place of the identity). One direction per
    variable, where interpolation needs one per pair: u_xy costs two
    directions, not three.

    Args:
        terms: as for `Plan`, of order at most two.
        width: the number of input features.
    """

    order = 2

    def __init__(self, terms, width):
        variables = sorted(
            {i for operator in terms for index in operator for i in index}
        )
        column = {v: c for c, v in enumerate(variables)}
        n = len(variables)
        self.directions = np.eye(width)[variables]
        self._first, matrices = [], []
        for operator in terms:
            first, matrix = np.zeros(n), np.zeros((n, n))
            for index, coefficient in operator.items():
                if len(index) == 1:
                    first[column[index[0]]] += coefficient
                elif len(index) == 2:
                    i, j = column[index[0]], column[index[1]]
                    matrix[i, j] += 0.5 * coefficient
                    matrix[j, i] += 0.5 * coefficient
            self._first.append(first if first.any() else None)
            matrices.append(matrix if matrix.any() else None)
        distinct = []
        for matrix in matrices:
            if matrix is not None and not any(
                np.array_equal(matrix, m) for m in distinct
            ):
                distinct.append(matrix)
        self._rows = [
            None
            if m is None
            else next(r for r, d in enumerate(distinct) if np.array_equal(d, m))
            for m in matrices
        ]
        # (q, n, n), or None where every second-order part is zero
        self.collapse = np.asarray(distinct) if distinct else None

    def combine(self, levels, collapsed=True):
        """The outputs from `levels[1]` `(B, m, n)`, the first derivatives
        along the variables, and `levels[2]` `(B, m, q)`, the collapsed
        second-order parts; each output `(B, m)`."""
        results = []
        for first, row in zip(self._first, self._rows, strict=True):
            total = None
            if first is not None:
                w = ops.convert_to_tensor(first, levels[1].dtype)
                total = ops.einsum("bmr,r->bm", levels[1], w)
            if row is not None:
                term = levels[2][:, :, row]
                total = term if total is None else total + term
            if total is None:  # every term cancels: zeros, still connected
                total = 0.0 * levels[1][:, :, 0]
            results.append(total)
        return results
