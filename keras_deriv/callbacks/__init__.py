from keras_deriv.callbacks.derivative_logger import DerivativeLogger

__all__ = ["DerivativeLogger"]
