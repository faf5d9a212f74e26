"""Zero-curvature detection: activations whose second derivative vanishes,
and whether a whole network's d²y/dx² is identically zero.

A network built from affine maps and piecewise-linear activations (ReLU and
kin) is piecewise linear: its second derivative is 0 almost everywhere. The
activations are judged by probing their second derivative numerically on a
grid (so custom callables are judged too); built-ins are also known by name,
for the cases a backend cannot differentiate twice.
"""

import dataclasses
import warnings

import keras
import numpy as np

from keras_deriv import backend
from keras_deriv.engines import autodiff

SMOOTH_ALTERNATIVES = "softplus, gelu, silu or tanh"

# The probe: both signs, magnitudes from 1e-4 to 6, never 0 itself (where
# e.g. tanh'' happens to vanish). From ~8 on, float32 saturates tanh and
# sigmoid, and their second derivatives round to exactly zero.
_MAGNITUDES = np.geomspace(1e-4, 6.0, 96)
PROBE_GRID = np.concatenate([-_MAGNITUDES[::-1], _MAGNITUDES]).astype("float32")

# Fractions of PROBE_GRID where f'' == 0, for built-ins whose second
# derivative a backend may not compute (torch has no forward rule for
# hard_sigmoid's derivative); measured on the grid above.
KNOWN_ZERO_FRACTIONS = {
    "relu": 1.0,
    "relu6": 1.0,
    "leaky_relu": 1.0,
    "hard_sigmoid": 1.0,
    "hard_tanh": 1.0,
    "elu": 0.5,
    "selu": 0.5,
}

# Layers that are affine maps of their input (in inference).
AFFINE_LAYERS = frozenset(
    """InputLayer Dense EinsumDense Conv1D Conv2D Conv3D Conv1DTranspose
    Conv2DTranspose Conv3DTranspose DepthwiseConv1D DepthwiseConv2D
    SeparableConv1D SeparableConv2D Add Subtract Average Concatenate Reshape
    Flatten Permute RepeatVector Identity Dropout SpatialDropout1D
    SpatialDropout2D SpatialDropout3D GaussianNoise AlphaDropout GaussianDropout
    Rescaling Normalization BatchNormalization ZeroPadding1D ZeroPadding2D
    ZeroPadding3D Cropping1D Cropping2D Cropping3D AveragePooling1D
    AveragePooling2D AveragePooling3D GlobalAveragePooling1D
    GlobalAveragePooling2D GlobalAveragePooling3D UpSampling1D
    TimeDistributed Negative Transpose ExpandDims Squeeze GetItem
    Concatenate Stack""".split()
)

# Layers that are piecewise linear whatever their settings.
PIECEWISE_LINEAR_LAYERS = frozenset(
    """ReLU LeakyReLU PReLU Maximum Minimum MaxPooling1D MaxPooling2D
    MaxPooling3D GlobalMaxPooling1D GlobalMaxPooling2D GlobalMaxPooling3D
    Abs Absolute""".split()
)


# Activations that mix features: probing them on one feature means nothing.
NOT_ELEMENTWISE = frozenset({"softmax", "log_softmax", "glu", "sparsemax"})


class ZeroCurvatureWarning(UserWarning):
    """A second or higher derivative was requested from a network whose
    curvature is identically zero (a piecewise-linear network)."""


class ZeroCurvatureError(RuntimeError):
    """Raised by `DerivativeLogger(on_zero_curvature="raise")`."""


@dataclasses.dataclass(frozen=True)
class ZeroCurvatureFinding:
    """An activation whose second derivative is zero on all or part of its
    domain.

    Attributes:
        layer: path of the layer in the model, e.g. `"sequential/dense_1"`.
        activation: readable name of the activation, e.g. `"relu"`.
        zero_fraction: fraction of the probe grid (`PROBE_GRID`) where the
            activation's second derivative is exactly zero: 1.0 for ReLU.
    """

    layer: str
    activation: str
    zero_fraction: float

    @property
    def piecewise_linear(self) -> bool:
        return self.zero_fraction == 1.0

    def __str__(self) -> str:
        return (
            f"{self.layer}: {self.activation} (d2/dx2 = 0 on "
            f"{self.zero_fraction:.0%} of the probe grid)"
        )


def _activation_name(fn):
    if isinstance(fn, keras.layers.Layer):
        return type(fn).__name__
    name = getattr(fn, "__name__", None)
    if name and getattr(keras.activations, name, None) is fn:
        return name  # a built-in (keras.activations.serialize is slow)
    try:
        name = keras.activations.serialize(fn)
    except (ValueError, TypeError, AttributeError):
        name = None
    if isinstance(name, str):
        return name
    return getattr(fn, "__name__", type(fn).__name__)


def _probe(fn):
    """(zero fraction of f'' on the grid, whether f' is constant there), or
    None when the backend cannot differentiate `fn` twice. Runs eagerly, also
    when called while a model is being traced (a build inside `fit`)."""

    def second_derivative():
        x = keras.ops.convert_to_tensor(PROBE_GRID.reshape(-1, 1))
        _, d1, d2 = autodiff.derivatives(
            lambda z: keras.ops.reshape(fn(z), (-1, 1)), x, 2, "diagonal", (0,)
        )
        return keras.ops.convert_to_numpy(d1).ravel(), keras.ops.convert_to_numpy(
            d2
        ).ravel()

    try:
        d1, d2 = backend.get().run_eagerly(second_derivative)
    except Exception:  # noqa: BLE001 - a missing derivative rule, whatever its type
        return None
    return float(np.mean(d2 == 0.0)), bool(np.all(d1 == d1[0]))


def activation_zero_fraction(fn):
    """`(zero_fraction, affine)` of an elementwise activation: the fraction
    of `PROBE_GRID` where its second derivative is exactly zero, and whether
    it is affine (constant first derivative: meant to be linear). An
    activation that cannot be differentiated twice here, and is not a known
    built-in, gets `(0.0, False)`: no claim."""
    name = _activation_name(fn)
    if name in KNOWN_ZERO_FRACTIONS:
        return KNOWN_ZERO_FRACTIONS[name], False
    if name == "linear":
        return 1.0, True
    probed = _probe(fn)
    return probed if probed is not None else (0.0, False)


def _walk(model, prefix=""):
    """Leaf layers and ops with their paths, nested models flattened."""
    ops = getattr(model, "operations", None)
    if ops is None:
        ops = getattr(model, "layers", None)
    if not ops:
        yield prefix.rstrip("/") or model.name, model
        return
    for op in ops:
        path = f"{prefix}{op.name}"
        if getattr(op, "operations", None) or getattr(op, "layers", None):
            yield from _walk(op, f"{path}/")
        elif type(op).__name__ == "DerivativeModel":
            yield from _walk(op.model, f"{path}/")
        else:
            yield path, op


def _layer_activation(layer):
    """The elementwise nonlinearity a layer applies, or None."""
    if type(layer).__name__ == "ELU":
        return layer
    return getattr(layer, "activation", None)


def _classify(layer):
    """`("affine" | "piecewise" | "curved", finding or None)`."""
    kind = type(layer).__name__
    if kind in PIECEWISE_LINEAR_LAYERS:
        return "piecewise", (kind, 1.0)
    activation = _layer_activation(layer)
    if activation is not None and _activation_name(activation) in NOT_ELEMENTWISE:
        return "curved", None
    if activation is not None:
        fraction, affine = activation_zero_fraction(activation)
        if affine:
            return (
                "affine" if kind in AFFINE_LAYERS | {"Activation"} else "curved"
            ), None
        finding = (_activation_name(activation), fraction) if fraction > 0 else None
        if fraction == 1.0 and kind in AFFINE_LAYERS | {"Activation"}:
            return "piecewise", finding
        return "curved", finding
    if kind in AFFINE_LAYERS:
        return "affine", None
    return "curved", None  # unknown or nonlinear (Multiply, softmax, norms...)


def _survey(model):
    findings, kinds = [], []
    for path, layer in _walk(model):
        kind, finding = _classify(layer)
        kinds.append(kind)
        if finding is not None:
            findings.append(ZeroCurvatureFinding(path, *finding))
    return findings, kinds


def find_zero_curvature_activations(
    model: keras.layers.Layer,
) -> list[ZeroCurvatureFinding]:
    """Activations in `model` whose second derivative is zero somewhere.

    Walks every layer, nested models included: `activation=` arguments,
    `Activation` layers and activation layers (`ReLU`, `LeakyReLU`, `PReLU`,
    `ELU`). Each activation is probed numerically (its second derivative on
    `PROBE_GRID`, both signs, magnitudes 1e-4 to 6), so custom callables are
    judged too; built-ins are also known by name. Affine activations
    (`linear`, the `Dense` default) are not findings.

    Args:
        model: a Keras model or layer.

    Returns:
        A list of `ZeroCurvatureFinding` (`.layer`, `.activation`,
        `.zero_fraction`), empty when there are none.

    Examples:
        >>> import keras
        >>> from keras_deriv import find_zero_curvature_activations
        >>> net = keras.Sequential([keras.Input((1,)),
        ...                         keras.layers.Dense(8, activation="relu"),
        ...                         keras.layers.Dense(1)])
        >>> findings = find_zero_curvature_activations(net)
        >>> [(f.activation, f.zero_fraction) for f in findings]
        [('relu', 1.0)]
    """
    backend.get()
    return _survey(model)[0]


def has_identically_zero_curvature(model: keras.layers.Layer) -> bool:
    """Whether `model`'s d²y/dx² is identically zero (almost everywhere):
    it has a piecewise-linear nonlinearity and everything else in it is
    affine. Any smooth activation, or a nonlinear op (`Multiply`, softmax,
    normalisation, an unknown layer) makes no such claim."""
    backend.get()
    _, kinds = _survey(model)
    return "piecewise" in kinds and "curved" not in kinds


def zero_curvature_message(model) -> str:
    findings = [f for f in find_zero_curvature_activations(model) if f.piecewise_linear]
    where = "; ".join(f"{f.layer} ({f.activation})" for f in findings)
    return (
        f"The second derivative of {model.name!r} is identically zero: it is "
        f"piecewise linear (piecewise-linear activations: {where}). Its "
        "d2y/dx2 is 0 almost everywhere and its dy/dx piecewise constant. "
        f"For curvature, use a smooth activation: {SMOOTH_ALTERNATIVES}."
    )


def warn_if_zero_curvature(model, stacklevel=2):
    """Emit one `ZeroCurvatureWarning` if `model` is piecewise linear."""
    if has_identically_zero_curvature(model):
        warnings.warn(
            zero_curvature_message(model),
            ZeroCurvatureWarning,
            stacklevel=stacklevel + 1,
        )
        return True
    return False
