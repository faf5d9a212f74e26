"""Nested reverse mode on TensorFlow: one `GradientTape` per order.

`batch_jacobian` differentiates row by row with `pfor`, so each level costs
one vectorised reverse pass. The tapes are nested (the tape of order k
records everything below it), which keeps every level differentiable with
respect to the weights as well: a training step's outer tape sees through
them. Nested `ForwardAccumulator`s (what `keras.ops.jvp` uses here) trained
wrongly inside `fit` in our measurements, so they are not used.
"""

import tensorflow as tf

from keras_deriv.errors import NotDifferentiableError

_NOT_CONNECTED = "the output does not depend differentiably on the input"


def _levels(f, x, order, full_hessian):
    if order == 0:
        return [f(x)]
    with tf.GradientTape() as tape:
        tape.watch(x)
        lower = _levels(f, x, order - 1, full_hessian)
        # Flatten inside the tape: the tape must see the tensor it differentiates.
        top = tf.reshape(lower[-1], (tf.shape(x)[0], -1))
    jac = tape.batch_jacobian(top, x)  # (B, m [* d], d)
    if jac is None:
        if order == 1:
            raise NotDifferentiableError(_NOT_CONNECTED)
        # The derivative below no longer depends on x (a linear map): zero.
        jac = tf.zeros(tf.concat([tf.shape(top), tf.shape(x)[-1:]], 0), x.dtype)
    m, d = lower[0].shape[-1], x.shape[-1]
    if order == 1:
        return [*lower, tf.reshape(jac, (-1, m, d))]
    jac = tf.reshape(jac, (-1, m, d, d))
    if full_hessian:
        return [*lower, jac]
    return [*lower, tf.linalg.diag_part(jac)]


def nested_derivatives(f, x, order, full_hessian):
    x = tf.convert_to_tensor(x)
    return _levels(f, x, order, full_hessian)


def depends_on_input(f, x):
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = f(x)
    if not y.dtype.is_floating:
        return False
    return tape.gradient(y, x) is not None
