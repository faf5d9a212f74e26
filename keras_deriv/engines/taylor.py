"""The Taylor engine: forward propagation of jets through a model.

Each supported layer has a rule in `RULES`, a registry by class name, that
maps the jets of its inputs to the jet of its output (jet arithmetic in
`jets.py`). Sequential and Functional models, nested, are walked layer by
layer; a model with any other layer or operation is not supported and the
autodiff engine is used (never a guess).

Costs per Dense layer: 1 + k·d' matmuls for order k pure partials, d' + 2
for the Laplacian (the forward Laplacian of Li et al. 2023), 1 + d' +
d'(d'+1)/2 for the full Hessian — against a nested reverse pass per order
and per output for autodiff.
"""

import math

import keras
from keras import ops

from keras_deriv.engines import activation_derivatives, jets, vector_activations

RULES = {}
MERGES = ("Add", "Subtract", "Multiply", "Average", "Concatenate")


class Unsupported(Exception):
    """The model has a layer (or a mode) the Taylor engine has no rule for."""


def rule(*class_names):
    def register(fn):
        for name in class_names:
            RULES[name] = fn
        return fn

    return register


def _has_activation_rule(layer):
    activation = getattr(layer, "activation", None)
    return (
        vector_activations.get(activation) is not None
        or activation_derivatives.get(activation, layer) is not None
    )


def _activate(layer, activation, jet, mode):
    vector_rule = vector_activations.get(activation)
    if vector_rule is not None:
        return vector_rule(jet, mode)
    derivs = activation_derivatives.get(activation, layer)
    if derivs is None:
        raise Unsupported(f"the activation of layer {layer.name!r}")
    value, *higher = derivs(jet[0], len(jet) - 1)
    return [value, *jets.compose(jet, higher, mode)[1:]]


@rule("Dense")
def _dense(layer, jet, mode, training):
    out = jets.linear(jet, lambda h: ops.matmul(h, layer.kernel))
    if layer.bias is not None:
        out[0] = out[0] + layer.bias
    return _activate(layer, layer.activation, out, mode)


@rule("EinsumDense")
def _einsum_dense(layer, jet, mode, training):
    out = jets.linear(jet, lambda h: ops.einsum(layer.equation, h, layer.kernel))
    if layer.bias is not None:
        out[0] = out[0] + layer.bias
    return _activate(layer, layer.activation, out, mode)


@rule("Activation", "ReLU", "LeakyReLU", "ELU")
def _activation_layer(layer, jet, mode, training):
    return _activate(layer, getattr(layer, "activation", None), jet, mode)


@rule("Normalization")
def _normalization(layer, jet, mode, training):
    # (x - mean) / max(sqrt(var), eps), or its inverse: affine, per feature
    std = ops.maximum(ops.sqrt(layer.variance), keras.backend.epsilon())
    return [layer(jet[0]), *jets.scale(jet[1:], std if layer.invert else 1.0 / std)]


@rule("BatchNormalization")
def _batch_normalization(layer, jet, mode, training):
    # Inference (DerivativeModel refuses the training mode):
    # (x - moving_mean) * gamma / sqrt(moving_variance + eps) + beta
    factor = ops.rsqrt(layer.moving_variance + layer.epsilon)
    if layer.gamma is not None:
        factor = factor * layer.gamma
    shape = [1] * len(jet[0].shape)
    shape[layer.axis] = -1
    factor = ops.reshape(ops.cast(factor, jet[0].dtype), shape[1:])
    return [layer(jet[0], training=False), *jets.scale(jet[1:], factor)]


def _inverse_sqrt_derivatives(v, k):
    """[g, g', ..., g^(k)] of g(v) = v^(-1/2)."""
    out, power, coefficient = [], -0.5, 1.0
    for _ in range(k + 1):
        out.append(coefficient * v**power)
        coefficient, power = coefficient * power, power - 1.0
    return out


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


@rule("LayerNormalization")
def _layer_normalization(layer, jet, mode, training):
    # As keras.ops.layer_normalization: c = h - mean(h), s = (var + eps)^-1/2,
    # y = c * s * gamma + beta; with (deprecated) rms_scaling, y = h * s * gamma.
    axes = _axes(layer.axis, len(jet[0].shape))
    centred, inverse_std = _standardized(jet, axes, layer.epsilon, mode)
    out = jets.multiply(jet if layer.rms_scaling else centred, inverse_std, mode)
    if layer.gamma is not None:
        out = jets.scale(out, _along_axes(layer.gamma, axes, jet[0]))
    if layer.beta is not None and not layer.rms_scaling:
        out[0] = out[0] + _along_axes(layer.beta, axes, jet[0])
    return out


@rule("GroupNormalization")
def _group_normalization(layer, jet, mode, training):
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
        out = jets.scale(out, ops.reshape(layer.gamma, weight_shape))
    if layer.beta is not None:
        out[0] = out[0] + ops.reshape(layer.beta, weight_shape)
    return jets.linear(out, lambda h: ops.reshape(h, (-1, *shape)))


@rule("RMSNormalization")
def _rms_normalization(layer, jet, mode, training):
    # As keras.ops.rms_normalization: y = h * (mean(h^2) + eps)^-1/2 * scale
    rank = len(jet[0].shape)
    axes = _axes(layer.axis, rank)
    square = jets.multiply(jet, jet, mode)
    mean_square = jets.linear(square, lambda h: ops.mean(h, axis=axes, keepdims=True))
    out = jets.multiply(
        jet, jets.power(mean_square, -0.5, mode, offset=layer.epsilon), mode
    )
    if layer.scale is not None:
        out = jets.scale(out, _along_axes(layer.scale, axes, jet[0]))
    return out


def _along_axes(weight, axes, value):
    """A per-feature weight reshaped to broadcast against `value` `(B, *F)`."""
    shape = [1] * len(value.shape)
    for a in axes:
        shape[a] = value.shape[a]
    return ops.reshape(weight, shape[1:])


@rule("Softmax")
def _softmax_layer(layer, jet, mode, training):
    if not isinstance(layer.axis, int):
        raise Unsupported(f"layer {layer.name!r}: softmax over several axes")
    return vector_activations.softmax(jet, mode, axis=layer.axis)


@rule("PReLU")
def _prelu(layer, jet, mode, training):
    # x for x > 0, alpha * x otherwise: piecewise linear, alpha a weight
    positive = ops.cast(jet[0] > 0, jet[0].dtype)
    slope = positive + (1 - positive) * layer.alpha
    return [layer(jet[0]), *jets.compose(jet, [slope] + [None] * 3, mode)[1:]]


@rule("GaussianNoise")
def _additive_noise(layer, jet, mode, training):
    return [layer(jet[0], training=training), *jet[1:]]


@rule("Rescaling")
def _rescaling(layer, jet, mode, training):
    out = jets.scale(jet, ops.cast(layer.scale, jet[0].dtype))
    out[0] = out[0] + ops.cast(layer.offset, jet[0].dtype)
    return out


@rule("Dropout", "GaussianDropout", "SpatialDropout1D")
def _dropout(layer, jet, mode, training):
    if not training:
        return jet
    # one mask for every coefficient, as in the forward pass
    mask = layer(ops.ones_like(jet[0]), training=True)
    return jets.scale(jet, mask)


@rule("Identity", "InputLayer")
def _identity(layer, jet, mode, training):
    return jet


@rule("Flatten", "Reshape")
def _reshape(layer, jet, mode, training):
    return jets.linear(jet, layer)


@rule("Add")
def _add(layer, inputs, mode, training):
    return jets.add(*inputs)


@rule("Subtract")
def _subtract(layer, inputs, mode, training):
    return jets.add(inputs[0], jets.negate(inputs[1]))


@rule("Average")
def _average(layer, inputs, mode, training):
    return jets.scale(jets.add(*inputs), 1.0 / len(inputs))


@rule("Multiply")
def _multiply(layer, inputs, mode, training):
    out = inputs[0]
    for jet in inputs[1:]:
        out = jets.multiply(out, jet, mode)
    return out


@rule("Concatenate")
def _concatenate(layer, inputs, mode, training):
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


# -- walking a model ---------------------------------------------------------


def _is_model(layer):
    return isinstance(layer, keras.Model)


def _steps(model):
    """`(layer, input_keys, output_key)` in order of evaluation. Keys are the
    ids of the model's symbolic tensors; for a Sequential model, 0."""
    kind = type(model).__name__
    if kind == "Sequential":
        return [(layer, 0, 0) for layer in model.layers]
    if kind != "Functional":  # a subclass may override `call`: not its graph
        raise Unsupported(f"{model.name!r} is a subclassed model or a layer")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise Unsupported(f"{model.name!r} has several inputs or outputs")
    # A layer's `input`/`output` are those of its first call: a layer
    # called twice (shared) leaves tensors that no step produces.
    steps, produced = [], {id(model.inputs[0])}
    for op in model.operations:
        if type(op).__name__ == "InputLayer":
            continue
        inputs = op.input
        listed = isinstance(inputs, (list, tuple))
        keys = [id(t) for t in inputs] if listed else [id(inputs)]
        if not produced.issuperset(keys):
            raise Unsupported(f"layer {op.name!r} is shared (called more than once)")
        produced.add(id(op.output))
        steps.append((op, keys if listed else keys[0], id(op.output)))
    if id(model.outputs[0]) not in produced:
        raise Unsupported(
            f"the output of {model.name!r} comes from a shared layer (one "
            "called more than once)"
        )
    return steps


def _input_key(model):
    return 0 if type(model).__name__ == "Sequential" else id(model.inputs[0])


def _output_key(model):
    return 0 if type(model).__name__ == "Sequential" else id(model.outputs[0])


def _propagate(model, jet, mode, training):
    values = {_input_key(model): jet}
    for layer, keys, key in _steps(model):
        if isinstance(keys, list):
            inputs = [values[k] for k in keys]
        else:
            inputs = values[keys]
        if _is_model(layer):
            values[key] = _propagate(layer, inputs, mode, training)
        else:
            values[key] = RULES[type(layer).__name__](layer, inputs, mode, training)
    return values[_output_key(model)]


def check_supported(model, order, hessian):
    """Raise `Unsupported` naming the first layer without a rule."""
    for layer, keys, _ in _steps(model):
        kind = type(layer).__name__
        if _is_model(layer):
            check_supported(layer, order, hessian)
        elif kind not in RULES or not isinstance(layer, keras.layers.Layer):
            # (a keras.ops call in a Functional model is an operation, and
            # may share a layer's class name: ops.average is not Average)
            raise Unsupported(f"layer {layer.name!r} ({kind}) has no Taylor rule")
        elif kind == "Softmax" and not isinstance(layer.axis, int):
            raise Unsupported(f"layer {layer.name!r}: softmax over several axes")
        elif isinstance(keys, list) != (kind in MERGES):
            raise Unsupported(f"layer {layer.name!r} ({kind}) has a list input")
        elif getattr(layer, "quantization_mode", None) is not None:
            raise Unsupported(f"layer {layer.name!r} is quantized")
        elif not _has_activation_rule(layer):
            raise Unsupported(f"the activation of layer {layer.name!r}")


def derivatives(model, x, order, hessian, wrt, training=None):
    """`[y, dy, d2y, ...]` as the autodiff engine returns them: `y` `(B, m)`,
    derivatives `(B, m, d')`, the Laplacian `(B, m)`, the full Hessian
    `(B, m, d', d')`."""
    d, n = x.shape[-1], len(wrt)
    directions = ops.take(ops.eye(d, dtype=x.dtype), list(wrt), axis=0)  # (d', d)
    kind = {"laplacian": "laplacian", "full": "hessian"}.get(hessian, "directions")
    mode = jets.Mode(kind if order >= 2 else "directions", n)
    # The input's first coefficient is the same at every point: a batch of
    # one, which broadcasts, until a point-dependent factor multiplies it
    # (the first layer's matmul then costs n rows, not B * n). With one
    # direction there is no direction axis at all (fewer ops).
    c1 = directions if n == 1 else ops.expand_dims(directions, 0)
    jet = [x, c1] + [None] * (order - 1)  # x is linear in each direction
    out = _propagate(model, jet, mode, training)
    m = math.prod(out[0].shape[1:])
    levels = [ops.reshape(out[0], (-1, m))]
    for k, c in enumerate(out[1:], start=1):
        if c is None:  # identically zero (e.g. d2y of a ReLU net)
            c = _zeros(out[0], mode, k)
        elif c.shape[0] == 1:  # still the same at every point (a linear model)
            c = jets.batched(c, out[0])
        levels.append(_level(c, mode, k, hessian, n, m))
    return levels


def _zeros(value, mode, k):
    c = ops.zeros_like(value)
    if mode.n == 1 or (k == 2 and mode.kind == "laplacian"):
        return c
    size = len(mode.first) if k == 2 and mode.kind == "hessian" else mode.n
    return ops.repeat(ops.expand_dims(c, 1), size, axis=1)


def _level(c, mode, k, hessian, n, m):
    """One coefficient in the autodiff engine's layout."""
    if k == 2 and mode.kind == "laplacian":
        return ops.reshape(c, (-1, m))
    if mode.n == 1:
        level = ops.reshape(c, (-1, m))
        if k == 2 and hessian == "laplacian":
            return level
        level = ops.expand_dims(level, -1)
        return ops.expand_dims(level, -1) if k == 2 and hessian == "full" else level
    if k == 2 and mode.kind == "hessian":
        index = {pair: p for p, pair in enumerate(mode.pairs)}
        square = [index[min(i, j), max(i, j)] for i in range(n) for j in range(n)]
        full = ops.take(ops.reshape(c, (-1, len(index), m)), square, axis=1)
        return ops.transpose(ops.reshape(full, (-1, n, n, m)), (0, 3, 1, 2))
    return ops.transpose(ops.reshape(c, (-1, n, m)), (0, 2, 1))
