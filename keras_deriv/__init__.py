"""keras_deriv: input derivatives of Keras models as Keras outputs."""

__version__ = "0.1.0"

from keras_deriv.errors import NotDifferentiableError
from keras_deriv.evaluation import derivatives
from keras_deriv.layers.derivative_model import DerivativeModel

__all__ = [
    "DerivativeModel",
    "NotDifferentiableError",
    "derivatives",
]
