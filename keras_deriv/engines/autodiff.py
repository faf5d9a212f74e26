"""The autodiff engine: the backend's native nested differentiation.

Works for any differentiable layer. The backend returns the pure partials
(or the full Hessian); the Laplacian is the trace of the Hessian, i.e. the
sum of the pure second partials.
"""

from keras import ops

from keras_deriv import backend


def derivatives(f, x, order, hessian, wrt):
    """`[y, dy, d2y, ...]` of `f: (B, d) -> (B, m)` at `x`, with respect to
    the features `wrt` (d' of them).

    Shapes: `y` `(B, m)`, `dy` `(B, m, d')`; `d2y` `(B, m, d')` for
    `hessian="diagonal"`, `(B, m, d', d')` for `"full"`, `(B, m)` for
    `"laplacian"`; higher orders `(B, m, d')`.
    """
    levels = backend.get().nested_derivatives(
        f, x, order, full_hessian=(hessian == "full" and order >= 2), wrt=wrt
    )
    if hessian == "laplacian" and order >= 2:
        levels[2] = ops.sum(levels[2], axis=-1)
    return levels
