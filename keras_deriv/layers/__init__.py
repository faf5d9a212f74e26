from keras_deriv.layers.derivative_model import DerivativeModel

__all__ = ["DerivativeModel"]
