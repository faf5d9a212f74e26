"""Gaussian-smoothed derivatives by Gauss–Hermite quadrature, over either
engine.

A ReLU network is piecewise linear: its exact second derivative is 0
between kinks. Smoothing answers what its users ask instead: the curvature
of the function it represents, at a resolution σ. Along a direction e_i,
the function smoothed along e_i only, f_σ(x) = E[f(x + σε e_i)] with
ε ~ N(0, 1), has the derivatives (Stein's identity, integrated by parts)

    ∂ᵏf_σ/∂x_iᵏ (x) = σ^-(k-1) E[∂f/∂x_i (x + σε e_i) Heₖ₋₁(ε)],   k ≥ 1,

with Heₙ the probabilists' Hermite polynomials (He₀ = 1, He₁ = t,
He₂ = t² - 1, He₃ = t³ - 3t). The expectation is a 1-D Gauss–Hermite sum
over `NODES` nodes: deterministic, and exact when ∂f/∂x_i · Heₖ₋₁ is a
polynomial of degree below 2·NODES. So only first derivatives are taken,
at `d' · NODES` shifted copies of each point, by whichever engine the layer
uses; the result is a fixed linear combination of them, differentiable in
the weights like any other output.

The Laplacian is the sum of the smoothed ∂²/∂x_i². The full Hessian's
entry (i, j) smooths ∂f/∂x_i along e_j, symmetrized:
½ σ⁻¹ E[∂_i f(x + σε e_j) ε + ∂_j f(x + σε e_i) ε]; its diagonal is the
smoothed ∂²/∂x_i². `y` itself is returned exact.
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


def derivatives(gradient, x, sigma, order, hessian, wrt):
    """`[y, D¹, ..., Dᵒʳᵈᵉʳ]` of f smoothed at resolution `sigma`, in the
    engines' layout `(B, m, ...)`.

    Args:
        gradient: maps points `(n, d)` to `[y (n, m), dy (n, m, d')]`, the
            exact first derivatives along the features `wrt`.
        x: points `(B, d)`.
        sigma: the resolution, a positive float.
        order: highest derivative order, 1 to 4.
        hessian: `"diagonal"`, `"full"` or `"laplacian"`.
        wrt: the differentiated feature indices (d' of them).
    """
    t, w = hermite_rule()
    dtype = x.dtype
    batch, d = x.shape[0], x.shape[-1]
    if batch is None:
        batch = ops.shape(x)[0]
    k, n = len(t), len(wrt)
    # x + σ t_k e_i for every direction i and node k: (B, d', K, d).
    steps = np.zeros((n, k, d))
    for i, feature in enumerate(wrt):
        steps[i, :, feature] = sigma * t
    shifted = ops.expand_dims(ops.expand_dims(x, 1), 1) + ops.convert_to_tensor(
        steps, dtype
    )
    # The exact points ride along, first, for the exact y.
    points = ops.concatenate([x, ops.reshape(shifted, (-1, d))], axis=0)
    y, jacobian = gradient(points)
    m = jacobian.shape[1]
    y = y[:batch]
    # (B, d', K, m, d'): group i (the direction shifted), node, output,
    # Jacobian column j.
    jacobian = ops.reshape(jacobian[batch:], (-1, n, k, m, n))
    levels = [y]
    diagonal = ops.einsum("bikmj,ij->bkmi", jacobian, ops.eye(n, dtype=dtype))
    for level in range(1, order + 1):
        weights = w * _hermite(level - 1, t) / sigma ** (level - 1)
        c = ops.convert_to_tensor(weights, dtype)
        if level == 2 and hessian == "full":
            mixed = ops.einsum("bjkmi,k->bmij", jacobian, c)
            levels.append((mixed + ops.swapaxes(mixed, -1, -2)) / 2)
            continue
        value = ops.einsum("bkmi,k->bmi", diagonal, c)
        if level == 2 and hessian == "laplacian":
            value = ops.sum(value, axis=-1)
        levels.append(value)
    return levels
