"""The Taylor engine: forward propagation of derivative coefficients.

A jet is `[c0, c1, ..., ck]`: `c0` the layer's value `(B, F)`, and `cj`
its j-th derivative along each differentiated input direction,
`(B, d', F)`. In Laplacian mode the second coefficient is already summed
over the directions, `(B, F)` (the forward Laplacian of Li et al. 2023).
Each supported layer has a rule in `RULES` (a registry by class name); a
model with any other layer is not supported and the autodiff engine is used.

Costs per Dense layer: 1 + k·d' matmuls for order k pure partials, d' + 2
for the Laplacian — against a nested reverse pass per order and per output.
"""

import math

import keras
from keras import ops

from keras_deriv.engines import activation_derivatives

RULES = {}


class Unsupported(Exception):
    """The model has a layer without a Taylor rule."""


def rule(*class_names):
    def register(fn):
        for name in class_names:
            RULES[name] = fn
        return fn

    return register


def _linear(jet, apply):
    """Rule of a linear map: `apply` on every coefficient (its direction
    axis folded into the batch); the caller adds the bias to c0 only."""
    out = [apply(jet[0])]
    for c in jet[1:]:
        if c is None:  # a known zero stays zero
            out.append(None)
        elif len(c.shape) == len(jet[0].shape):  # a summed (Laplacian) term
            out.append(apply(c))
        else:
            b, d = ops.shape(c)[0], c.shape[1]
            flat = ops.reshape(c, (-1, *c.shape[2:]))
            res = apply(flat)
            out.append(ops.reshape(res, (b, d, *res.shape[1:])))
    return out


def _expand(f, c):
    """Broadcast a `(B, F)` factor against a coefficient `(B, d', F)`."""
    return ops.expand_dims(f, 1) if len(c.shape) > len(f.shape) else f


def _terms(*terms):
    """Sum of the terms that are not known zeros (None), or None."""
    present = [t for t in terms if t is not None]
    if not present:
        return None
    total = present[0]
    for t in present[1:]:
        total = total + t
    return total


def _times(*factors):
    """Product, or None (a known zero) if any factor is None."""
    if any(f is None for f in factors):
        return None
    out = factors[0]
    for f in factors[1:]:
        out = out * f
    return out


def elementwise(jet, derivs, laplacian):
    """Faà di Bruno for y = f(z): `derivs` = [f'(z0), f''(z0), ...], None
    where a derivative is identically zero (piecewise-linear f)."""
    k = len(jet) - 1
    z = [None, *jet[1:], None, None, None][:5]
    z1, z2, z3, z4 = z[1], z[2], z[3], z[4]
    like = z1 if z1 is not None else next(c for c in jet[1:] if c is not None)
    f = [None] + [None if d is None else _expand(d, like) for d in derivs]
    f = (f + [None] * 5)[:5]
    out = [None] * (k + 1)
    out[1] = _times(f[1], z1)
    if k >= 2 and laplacian:
        square = None if z1 is None or derivs[1] is None else ops.sum(z1 * z1, axis=1)
        out[2] = _terms(_times(derivs[0], z2), _times(derivs[1], square))
    elif k >= 2:
        out[2] = _terms(_times(f[1], z2), _times(f[2], z1, z1))
    if k >= 3:
        out[3] = _terms(
            _times(f[1], z3), _times(f[2], z1, z2, 3.0), _times(f[3], z1, z1, z1)
        )
    if k >= 4:
        mixed = _terms(_times(z1, z3, 4.0), _times(z2, z2, 3.0))
        out[4] = _terms(
            _times(f[1], z4),
            _times(f[2], mixed),
            _times(f[3], z1, z1, z2, 6.0),
            _times(f[4], z1, z1, z1, z1),
        )
    return out


def _activate(layer, activation, jet, laplacian):
    k = len(jet) - 1
    derivs = activation_derivatives.get(activation, layer)
    if derivs is None:
        raise Unsupported(f"activation {activation!r}")
    value, *higher = derivs(jet[0], k)
    return [value, *elementwise(jet, higher, laplacian)[1:]]


@rule("Dense")
def _dense(layer, jet, laplacian, training):
    out = _linear(jet, lambda h: ops.matmul(h, layer.kernel))
    if layer.bias is not None:
        out[0] = out[0] + layer.bias
    return _activate(layer, layer.activation, out, laplacian)


@rule("EinsumDense")
def _einsum_dense(layer, jet, laplacian, training):
    out = _linear(jet, lambda h: ops.einsum(layer.equation, h, layer.kernel))
    if layer.bias is not None:
        out[0] = out[0] + layer.bias
    return _activate(layer, layer.activation, out, laplacian)


@rule("Normalization")
def _normalization(layer, jet, laplacian, training):
    # (x - mean) / max(sqrt(var), eps), or its inverse: affine, per feature
    std = ops.maximum(ops.sqrt(layer.variance), keras.backend.epsilon())
    scale = std if layer.invert else 1.0 / std
    return [layer(jet[0])] + [None if c is None else c * scale for c in jet[1:]]


@rule("GaussianNoise")
def _additive_noise(layer, jet, laplacian, training):
    return [layer(jet[0], training=training), *jet[1:]]


@rule("Activation", "ReLU", "LeakyReLU", "ELU")
def _activation_layer(layer, jet, laplacian, training):
    return _activate(layer, getattr(layer, "activation", None), jet, laplacian)


@rule("Rescaling")
def _rescaling(layer, jet, laplacian, training):
    scale = ops.cast(layer.scale, jet[0].dtype)
    out = [None if c is None else c * scale for c in jet]
    out[0] = out[0] + ops.cast(layer.offset, jet[0].dtype)
    return out


@rule("Dropout", "GaussianDropout", "SpatialDropout1D")
def _dropout(layer, jet, laplacian, training):
    if not training:
        return jet
    # one mask for every coefficient, as in the forward pass
    mask = layer(ops.ones_like(jet[0]), training=True)
    return [None if c is None else c * _expand(mask, c) for c in jet]


@rule("Identity", "InputLayer")
def _identity(layer, jet, laplacian, training):
    return jet


@rule("Flatten", "Reshape")
def _reshape(layer, jet, laplacian, training):
    return _linear(jet, layer)


def _propagate(model, jet, laplacian, training):
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Sequential":
            jet = _propagate(layer, jet, laplacian, training)
            continue
        fn = RULES.get(kind)
        if fn is None:
            raise Unsupported(f"layer {layer.name!r} ({kind})")
        jet = fn(layer, jet, laplacian, training)
    return jet


def check_supported(model, order, hessian):
    """Raise `Unsupported` naming the first layer without a rule."""
    if hessian == "full" and order >= 2:
        raise Unsupported('hessian="full" (the autodiff engine computes it)')
    if type(model).__name__ != "Sequential":
        raise Unsupported(f"{model.name!r} is not a Sequential model")
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Sequential":
            check_supported(layer, order, hessian)
        elif kind not in RULES:
            raise Unsupported(f"layer {layer.name!r} ({kind}) has no Taylor rule")
        elif (
            activation_derivatives.get(getattr(layer, "activation", None), layer)
            is None
        ):
            raise Unsupported(f"the activation of layer {layer.name!r}")


def derivatives(model, x, order, hessian, wrt, training=None):
    """`[y, dy, d2y, ...]` as the autodiff engine returns them, for a
    Sequential `model` with `(B, F)` activations: `y` `(B, m)`, derivatives
    `(B, m, d')`, the Laplacian `(B, m)`."""
    d, n = x.shape[-1], len(wrt)
    directions = ops.take(ops.eye(d, dtype=x.dtype), list(wrt), axis=0)  # (d', d)
    b = ops.shape(x)[0]
    laplacian = hessian == "laplacian" and order >= 2
    if n == 1:
        # One direction: no direction axis at all (fewer ops), and the
        # Laplacian is that direction's pure second derivative.
        c1 = ops.broadcast_to(directions, (b, d))
        jet_laplacian = False
    else:
        c1 = ops.broadcast_to(ops.expand_dims(directions, 0), (b, n, d))
        jet_laplacian = laplacian
    jet = [x, c1] + [None] * (order - 1)  # x is linear in each direction
    out = _propagate(model, jet, jet_laplacian, training)
    m = math.prod(out[0].shape[1:])
    y = ops.reshape(out[0], (-1, m))
    levels = [y]
    for k, c in enumerate(out[1:], start=1):
        summed = laplacian and k == 2
        if c is None:  # identically zero (e.g. d2y of a ReLU net)
            c = ops.zeros_like(out[0])
            if not summed and n > 1:
                c = ops.repeat(ops.expand_dims(c, 1), n, axis=1)
        if summed or n == 1:  # (B, *out): the Laplacian, or one direction
            level = ops.reshape(c, (-1, m))
            levels.append(level if summed else ops.expand_dims(level, -1))
        else:
            levels.append(ops.transpose(ops.reshape(c, (-1, n, m)), (0, 2, 1)))
    return levels
