"""Jets of the built-in activations that are not elementwise: softmax,
log_softmax and glu, along one axis. Each is written with jet arithmetic
(`jets.py`), so every order and mode of the Taylor engine comes with it."""

import keras
from keras import ops

from keras_deriv.engines import activation_derivatives, jets


def _from_end(axis, jet):
    """`axis` counted from the end: the same for every coefficient."""
    return axis - len(jet[0].shape) if axis >= 0 else axis


def _exp_and_sum(jet, mode, axis):
    # softmax(z - m) == softmax(z) for any m, even one that depends on z, so
    # the stabilising shift by max(z) only touches the value.
    e0 = ops.exp(jet[0] - ops.max(jet[0], axis=axis, keepdims=True))
    e = [e0, *jets.compose(jet, [e0] * (len(jet) - 1), mode)[1:]]
    return e, jets.linear(e, lambda h: ops.sum(h, axis=axis, keepdims=True))


def softmax(jet, mode, axis=-1):
    """exp(z) / sum(exp(z)) along `axis`."""
    e, total = _exp_and_sum(jet, mode, _from_end(axis, jet))
    return jets.multiply(e, jets.power(total, -1, mode), mode)


def log_softmax(jet, mode, axis=-1):
    """z - log(sum(exp(z))) along `axis`."""
    axis = _from_end(axis, jet)
    _, total = _exp_and_sum(jet, mode, axis)
    out = jets.add(jet, jets.negate(jets.log(total, mode)))
    out[0] = keras.activations.log_softmax(jet[0], axis=axis)
    return out


def glu(jet, mode, axis=-1):
    """a * sigmoid(b) for the two halves a, b of z along `axis`."""
    axis = _from_end(axis, jet)
    halves = [(None, None) if c is None else ops.split(c, 2, axis=axis) for c in jet]
    a, b = [h[0] for h in halves], [h[1] for h in halves]
    sigmoid = activation_derivatives.get(keras.activations.sigmoid)
    value, *derivs = sigmoid(b[0], len(jet) - 1)
    return jets.multiply(a, [value, *jets.compose(b, derivs, mode)[1:]], mode)


BY_NAME = {"softmax": softmax, "log_softmax": log_softmax, "glu": glu}


def get(activation):
    """The jet rule `rule(jet, mode)` of a non-elementwise built-in
    `activation`, or None."""
    name = getattr(activation, "__name__", None)
    if name in BY_NAME and getattr(keras.activations, name, None) is activation:
        return BY_NAME[name]
    return None
