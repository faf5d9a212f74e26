"""Every exception and warning keras_deriv raises or emits."""


class NotDifferentiableError(ValueError):
    """The model's output does not depend differentiably on its input.

    Raised when a layer on the path from input to output cuts the derivative
    (an `Embedding` or lookup layer, `argmax`, `round`, a cast to an integer
    dtype, `stop_gradient`). The message names the layer where it can.
    """


class SharedLayerError(ValueError):
    """Raised when loading a file in which the network a `DerivativeModel`
    wraps (or a layer of it) is also used inside another layer that Keras
    saved without the link that makes the two one network. The file holds
    every weight: the message says how to read them into the model built
    again in code."""


class ZeroCurvatureWarning(UserWarning):
    """A second or higher derivative was requested from a network whose
    curvature is identically zero (a piecewise-linear network)."""


class ZeroCurvatureError(RuntimeError):
    """Raised by `DerivativeLogger(on_zero_curvature="raise")` when the
    network is proven piecewise linear."""


class PrecisionWarning(UserWarning):
    """Derivatives are computed at a lower precision than the dtypes say:
    layers that compute in float16/bfloat16, or a backend whose Keras ops
    round float64 to float32."""
