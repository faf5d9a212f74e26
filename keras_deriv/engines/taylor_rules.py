"""Taylor rules: how each supported layer maps the jets of its inputs to
the jet of its output (jet arithmetic in `jets.py`).

A rule is `rule(layer, jet, mode, training)` (a merge layer gets a list of
jets). Rules are registered with the rest of a layer's facts in
`keras_deriv/graph/known_layers.py`; this module only holds the math.

Weights are cast to the jet's dtype: the engine computes in one dtype
(float32 under a mixed precision policy, float64 for a float64 model),
not in the layers' autocast dtype.
"""

import keras
from keras import ops

from keras_deriv.engines import activation_derivatives, jets, vector_activations


class Unsupported(Exception):
    """The model has a layer (or a mode) the Taylor engine has no rule for."""


def weight(variable, jet):
    """A layer weight in the dtype of `jet`."""
    return ops.cast(variable, jet[0].dtype)


def layer_value(layer, value, **kwargs):
    """`layer(value)` in `value`'s dtype (the layer may autocast)."""
    return ops.cast(layer(value, **kwargs), value.dtype)


def elementwise(derivs, jet, mode):
    """Jet of an elementwise function given `derivs(z, k) -> [f, f', ...]`."""
    value, *higher = derivs(jet[0], len(jet) - 1)
    return [value, *jets.compose(jet, higher, mode)[1:]]


def activation_rule(activation):
    """`rule(jet, mode)` of an activation function, or None."""
    vector_rule = vector_activations.get(activation)
    if vector_rule is not None:
        return vector_rule
    derivs = activation_derivatives.get(activation)
    if derivs is None:
        return None
    return lambda jet, mode: elementwise(derivs, jet, mode)


def activate(layer, jet, mode):
    """Jet of `layer.activation` applied to `jet`."""
    rule = activation_rule(layer.activation)
    if rule is None:
        raise Unsupported(f"the activation of layer {layer.name!r} has no Taylor rule")
    return rule(jet, mode)


def _matmul(h, kernel):
    # Keras 3.15's ops.matmul computes float64 in float32 on torch; its
    # einsum does not.
    if keras.backend.standardize_dtype(h.dtype) == "float64":
        return ops.einsum("...i,ij->...j", h, kernel)
    return ops.matmul(h, kernel)


def dense(layer, jet, mode, training):
    kernel = weight(layer.kernel, jet)
    out = jets.linear(jet, lambda h: _matmul(h, kernel))
    if layer.bias is not None:
        out[0] = out[0] + weight(layer.bias, jet)
    return activate(layer, out, mode)


def einsum_dense(layer, jet, mode, training):
    kernel = weight(layer.kernel, jet)
    out = jets.linear(jet, lambda h: ops.einsum(layer.equation, h, kernel))
    if layer.bias is not None:
        out[0] = out[0] + weight(layer.bias, jet)
    return activate(layer, out, mode)


def activation_layer(layer, jet, mode, training):
    return activate(layer, jet, mode)


def _where(condition, a, b, like):
    return ops.where(condition, ops.zeros_like(like) + a, ops.zeros_like(like) + b)


def _piecewise_linear(layer, jet, mode, slope):
    value = layer_value(layer, jet[0])
    return [value, *jets.compose(jet, [slope(jet[0]), None, None, None], mode)[1:]]


def relu_layer(layer, jet, mode, training):
    # max(z, threshold) capped at max_value, negative_slope below threshold
    negative, top = float(layer.negative_slope), layer.max_value
    threshold = float(layer.threshold)

    def slope(z):
        inside = z > threshold
        if top is not None:
            inside = inside & (z < float(top))
            below = _where(z <= threshold, negative, 0.0, z)
            return _where(inside, 1.0, 0.0, z) + below
        return _where(inside, 1.0, negative, z)

    return _piecewise_linear(layer, jet, mode, slope)


def leaky_relu_layer(layer, jet, mode, training):
    negative = float(layer.negative_slope)
    return _piecewise_linear(
        layer, jet, mode, lambda z: _where(z > 0, 1.0, negative, z)
    )


def elu_layer(layer, jet, mode, training):
    # z for z > 0, alpha (e^z - 1) otherwise: every derivative below 0 is
    # alpha e^z (exp of min(z, 0), written with where to stay in float64)
    z, alpha = jet[0], float(layer.alpha)
    positive = z > 0
    e = alpha * ops.exp(ops.where(positive, ops.zeros_like(z), z))
    value = ops.where(positive, z, e - alpha)
    derivs = [ops.where(positive, ops.ones_like(z), e)]
    derivs += [ops.where(positive, ops.zeros_like(z), e)] * (len(jet) - 2)
    return [value, *jets.compose(jet, derivs, mode)[1:]]


def normalization(layer, jet, mode, training):
    # (x - mean) / max(sqrt(var), eps), or its inverse: affine, per feature
    # max(sqrt(var), eps), with where: torch's ops.maximum rounds float64
    std = ops.sqrt(weight(layer.variance, jet))
    std = ops.where(std > keras.backend.epsilon(), std, keras.backend.epsilon())
    factor = std if layer.invert else 1.0 / std
    return [layer_value(layer, jet[0]), *_per_feature(jet[1:], factor)]


def batch_normalization(layer, jet, mode, training):
    # Inference (DerivativeModel refuses the training mode):
    # (x - moving_mean) * gamma / sqrt(moving_variance + eps) + beta
    factor = ops.rsqrt(weight(layer.moving_variance, jet) + layer.epsilon)
    if layer.gamma is not None:
        factor = factor * weight(layer.gamma, jet)
    shape = [1] * len(jet[0].shape)
    shape[layer.axis] = -1
    factor = ops.reshape(factor, shape[1:])
    return [layer_value(layer, jet[0], training=False), *_per_feature(jet[1:], factor)]


def _per_feature(coefficients, factor):
    """Coefficients times a per-feature factor; a known zero (None, e.g. all
    of a fixed input's) stays one."""
    return [None if c is None else c * factor for c in coefficients]


def _axes(axis, rank):
    """Normalization axes counted from the end (the same for every
    coefficient, with or without a direction axis)."""
    axis = [axis] if isinstance(axis, int) else axis
    return [a - rank if a >= 0 else a for a in axis]


def _standardized(jet, axes, epsilon, mode):
    """Jets of `h - mean(h)` and of `(var(h) + epsilon)^(-1/2)` over `axes`."""

    def mean(h):
        return ops.mean(h, axis=axes, keepdims=True)

    centred = jets.add(jet, jets.negate(jets.linear(jet, mean)))
    variance = jets.linear(jets.multiply(centred, centred, mode), mean)
    return centred, jets.power(variance, -0.5, mode, offset=epsilon)


def layer_normalization(layer, jet, mode, training):
    # As keras.ops.layer_normalization: c = h - mean(h), s = (var + eps)^-1/2,
    # y = c * s * gamma + beta; with (deprecated) rms_scaling, y = h * s * gamma.
    axes = _axes(layer.axis, len(jet[0].shape))
    centred, inverse_std = _standardized(jet, axes, layer.epsilon, mode)
    out = jets.multiply(jet if layer.rms_scaling else centred, inverse_std, mode)
    if layer.gamma is not None:
        out = jets.scale(out, _along_axes(layer.gamma, axes, jet))
    if layer.beta is not None and not layer.rms_scaling:
        out[0] = out[0] + _along_axes(layer.beta, axes, jet)
    return out


def group_normalization(layer, jet, mode, training):
    # As Keras: split the channels into groups, (B, ..., G, C/G, ...), and
    # standardize each group over everything but the batch and group axes.
    shape = jet[0].shape[1:]
    axis = layer.axis % (len(shape) + 1)
    grouped = [*shape[: axis - 1], layer.groups, shape[axis - 1] // layer.groups]
    grouped += shape[axis:]
    out = jets.linear(jet, lambda h: ops.reshape(h, (-1, *grouped)))
    rank = len(grouped) + 1
    axes = [a - rank for a in range(1, rank) if a != axis]
    centred, inverse_std = _standardized(out, axes, layer.epsilon, mode)
    out = jets.multiply(centred, inverse_std, mode)
    weight_shape = [1] * len(grouped)
    weight_shape[axis - 1 : axis + 1] = grouped[axis - 1 : axis + 1]
    if layer.gamma is not None:
        out = jets.scale(out, ops.reshape(weight(layer.gamma, jet), weight_shape))
    if layer.beta is not None:
        out[0] = out[0] + ops.reshape(weight(layer.beta, jet), weight_shape)
    return jets.linear(out, lambda h: ops.reshape(h, (-1, *shape)))


def rms_normalization(layer, jet, mode, training):
    # As keras.ops.rms_normalization: y = h * (mean(h^2) + eps)^-1/2 * scale
    rank = len(jet[0].shape)
    axes = _axes(layer.axis, rank)
    square = jets.multiply(jet, jet, mode)
    mean_square = jets.linear(square, lambda h: ops.mean(h, axis=axes, keepdims=True))
    out = jets.multiply(
        jet, jets.power(mean_square, -0.5, mode, offset=layer.epsilon), mode
    )
    if layer.scale is not None:
        out = jets.scale(out, _along_axes(layer.scale, axes, jet))
    return out


def _along_axes(variable, axes, jet):
    """A per-feature weight reshaped to broadcast against `jet[0]` `(B, *F)`."""
    shape = [1] * len(jet[0].shape)
    for a in axes:
        shape[a] = jet[0].shape[a]
    return ops.reshape(weight(variable, jet), shape[1:])


def softmax_layer(layer, jet, mode, training):
    return vector_activations.softmax(jet, mode, axis=layer.axis)


def prelu(layer, jet, mode, training):
    # x for x > 0, alpha * x otherwise: piecewise linear, alpha a weight
    positive = ops.cast(jet[0] > 0, jet[0].dtype)
    slope = positive + (1 - positive) * weight(layer.alpha, jet)
    value = layer_value(layer, jet[0])
    return [value, *jets.compose(jet, [slope] + [None] * 3, mode)[1:]]


def additive_noise(layer, jet, mode, training):
    return [layer_value(layer, jet[0], training=training), *jet[1:]]


def rescaling(layer, jet, mode, training):
    out = jets.scale(jet, ops.cast(layer.scale, jet[0].dtype))
    out[0] = out[0] + ops.cast(layer.offset, jet[0].dtype)
    return out


def dropout(layer, jet, mode, training):
    if not training:
        return jet
    # One mask per point for every coefficient, as in the forward pass: the
    # derivatives are those of the one random function y was drawn from.
    mask = layer_value(layer, ops.ones_like(jet[0]), training=True)
    return jets.scale(jet, mask)


def identity(layer, jet, mode, training):
    return jet


def reshape(layer, jet, mode, training):
    return jets.linear(jet, lambda h: layer_value(layer, h))


def add(layer, inputs, mode, training):
    return jets.add(*inputs)


def subtract(layer, inputs, mode, training):
    return jets.add(inputs[0], jets.negate(inputs[1]))


def average(layer, inputs, mode, training):
    return jets.scale(jets.add(*inputs), 1.0 / len(inputs))


def multiply(layer, inputs, mode, training):
    out = inputs[0]
    for jet in inputs[1:]:
        out = jets.multiply(out, jet, mode)
    return out


def dot(layer, inputs, mode, training):
    # A batched dot product of two (B, p) tensors along p (the registry's
    # taylor_gap refuses other axes and normalize=True).
    u, v = inputs
    if len(u[0].shape) != 2 or len(v[0].shape) != 2:
        raise Unsupported(f"layer {layer.name!r} (Dot) takes tensors of rank > 2")
    product = jets.multiply(u, v, mode)
    return jets.linear(product, lambda h: ops.sum(h, axis=-1, keepdims=True))


def concatenate(layer, inputs, mode, training):
    out = []
    for cs in zip(*inputs, strict=True):
        if all(c is None for c in cs):
            out.append(None)
            continue
        like = next(c for c in cs if c is not None)
        shift = len(like.shape) - len(inputs[0][0].shape)  # a direction axis
        parts = []
        for value, c in zip(inputs, cs, strict=True):
            if c is None:  # a known zero next to a real coefficient
                c = ops.zeros_like(value[0])
                if shift:
                    c = ops.repeat(ops.expand_dims(c, 1), like.shape[1], axis=1)
            parts.append(jets.batched(c, value[0]))
        axis = layer.axis + shift if layer.axis >= 0 else layer.axis
        out.append(ops.concatenate(parts, axis=axis))
    return out
