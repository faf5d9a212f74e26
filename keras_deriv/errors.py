"""Exceptions raised by keras_deriv."""


class NotDifferentiableError(ValueError):
    """The model's output does not depend differentiably on its input.

    Raised when a layer on the path from input to output cuts the derivative
    (an `Embedding` or lookup layer, `argmax`, `round`, a cast to an integer
    dtype, `stop_gradient`). The message names the layer where it can.
    """
