"""keras_deriv: input derivatives of Keras models as Keras outputs."""

__version__ = "0.1.0"

from keras_deriv.analysis.curvature import (
    ZeroCurvatureFinding,
    curvature_verdict,
    find_zero_curvature_activations,
    has_identically_zero_curvature,
)
from keras_deriv.callbacks.derivative_logger import DerivativeLogger
from keras_deriv.curve_store import load_curves
from keras_deriv.errors import (
    NotDifferentiableError,
    PrecisionWarning,
    SharedLayerError,
    ZeroCurvatureError,
    ZeroCurvatureWarning,
)
from keras_deriv.estimators import Hutchinson, laplacian
from keras_deriv.evaluation import derivatives
from keras_deriv.layers.derivative_model import DerivativeModel
from keras_deriv.probes import slice_points
from keras_deriv.training_points import point_sets

__all__ = [
    "DerivativeLogger",
    "DerivativeModel",
    "Hutchinson",
    "NotDifferentiableError",
    "PrecisionWarning",
    "SharedLayerError",
    "ZeroCurvatureError",
    "ZeroCurvatureFinding",
    "ZeroCurvatureWarning",
    "curvature_verdict",
    "derivatives",
    "find_zero_curvature_activations",
    "has_identically_zero_curvature",
    "laplacian",
    "load_curves",
    "point_sets",
    "slice_points",
]
