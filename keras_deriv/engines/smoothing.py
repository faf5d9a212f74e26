"""Gaussian-smoothed derivatives by Gauss–Hermite quadrature, over either
engine.

A ReLU network is piecewise linear: its exact second derivative is 0
between kinks. Smoothing answers what its users ask instead: the curvature
of the function it represents, at a resolution σ. Along a direction e_i,
the function smoothed along e_i only, f_σ(x) = E[f(x + σε e_i)] with
ε ~ N(0, 1), has the derivatives (Stein's identity)

    value form:     ∂ᵏf_σ/∂x_iᵏ (x) = σ^-k     E[f(x + σε e_i) Heₖ(ε)]
    gradient form:  ∂ᵏf_σ/∂x_iᵏ (x) = σ^-(k-1) E[∂f/∂x_i (x + σε e_i) Heₖ₋₁(ε)]

with Heₙ the probabilists' Hermite polynomials. Each expectation is a 1-D
Gauss–Hermite sum over `NODES` nodes: deterministic, and exact when its
integrand is a polynomial of degree below 2·NODES. The result is a fixed
linear combination of the network at `d' · NODES` shifted copies of each
point, differentiable in the weights.

Which form: the gradient form rounds less (one power of σ fewer), but ∂f/∂x
of a network with kinks (ReLU) is piecewise constant in its weights, so a
loss on it would not move the kinks: such networks use the value form,
whose f is continuous in them. The gradient form takes one directional
derivative per shifted copy, along that copy's own direction.

The Laplacian is the sum of the smoothed ∂²/∂x_i². The full Hessian's
entry (i, j) smooths ∂f/∂x_i along e_j, symmetrized:
½ σ⁻¹ E[∂_i f(x + σε e_j) ε + ∂_j f(x + σε e_i) ε], from the whole
gradient at each copy; its diagonal is the smoothed ∂²/∂x_i². `y` is
returned exact.
"""

import numpy as np
from keras import ops

NODES = 64


def hermite_rule(nodes=NODES):
    """Nodes t and weights w with Σ w g(t) = E[g(ε)], ε ~ N(0, 1)."""
    t, w = np.polynomial.hermite_e.hermegauss(nodes)
    return t, w / w.sum()


def _hermite(n, t):
    """The probabilists' Hermite polynomial Heₙ at t."""
    return np.polynomial.hermite_e.hermeval(t, [0] * n + [1])


def rows_per_point(wrt):
    """How many network evaluations one point costs."""
    return 1 + NODES * len(wrt)


def derivatives(network, x, sigma, order, hessian, wrt, value_form):
    """`[y, D¹, ..., Dᵒʳᵈᵉʳ]` of f smoothed at resolution `sigma`, in the
    engines' layout `(B, m, ...)`.

    Args:
        network: gives `network.value(z)` `(n, m)`, `network.along(z, v)`
            `(y, dy)` with `dy` `(n, m)` the derivative of each row along
            its own direction `v` `(n, d)`, and `network.jacobian(z)`
            `(y, dy)` with `dy` `(n, m, d')` along the features `wrt`.
        x: points `(B, d)`.
        sigma: the resolution, a positive float.
        order: highest derivative order, 1 to 4.
        hessian: `"diagonal"`, `"full"` or `"laplacian"`.
        wrt: the differentiated feature indices (d' of them).
        value_form: smooth the values (networks with kinks), not the
            first derivatives.
    """
    t, w = hermite_rule()
    dtype = x.dtype
    d, k, n = x.shape[-1], len(t), len(wrt)
    batch = x.shape[0] if x.shape[0] is not None else ops.shape(x)[0]
    # Rows (b, i, node): x_b + σ t_node e_i. The exact points ride along,
    # first, for the exact y.
    units = np.zeros((n, k, d))
    for i, feature in enumerate(wrt):
        units[i, :, feature] = 1.0
    steps = ops.convert_to_tensor(units * sigma * t[None, :, None], dtype)
    shifted = ops.reshape(ops.expand_dims(ops.expand_dims(x, 1), 1) + steps, (-1, d))
    points = ops.concatenate([x, shifted], axis=0)
    if hessian == "full" and order >= 2:
        y, jacobian = network.jacobian(points)
        m = jacobian.shape[1]
        jacobian = ops.reshape(jacobian[batch:], (-1, n, k, m, n))
        eye = ops.eye(n, dtype=dtype)
        first = ops.einsum("bikmj,ij->bkmi", jacobian, eye)
    elif value_form:
        y = network.value(points)
        m = y.shape[-1]
        values = ops.transpose(ops.reshape(y[batch:], (-1, n, k, m)), (0, 2, 3, 1))
    else:
        directions = ops.convert_to_tensor(units, dtype)
        directions = ops.reshape(
            ops.expand_dims(ops.zeros_like(x), (1, 2)) + directions, (-1, d)
        )
        directions = ops.concatenate([ops.zeros_like(x), directions], axis=0)
        y, along = network.along(points, directions)
        m = along.shape[-1]
        first = ops.transpose(ops.reshape(along[batch:], (-1, n, k, m)), (0, 2, 3, 1))
    levels = [y[:batch]]
    for level in range(1, order + 1):
        if level == 2 and hessian == "full":
            c = ops.convert_to_tensor(w * t / sigma, dtype)
            mixed = ops.einsum("bjkmi,k->bmij", jacobian, c)
            levels.append((mixed + ops.swapaxes(mixed, -1, -2)) / 2)
            continue
        if value_form and hessian != "full":
            c = w * _hermite(level, t) / sigma**level
            value = ops.einsum("bkmi,k->bmi", values, ops.convert_to_tensor(c, dtype))
        else:
            c = w * _hermite(level - 1, t) / sigma ** (level - 1)
            value = ops.einsum("bkmi,k->bmi", first, ops.convert_to_tensor(c, dtype))
        if level == 2 and hessian == "laplacian":
            value = ops.sum(value, axis=-1)
        levels.append(value)
    return levels
