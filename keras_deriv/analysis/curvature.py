"""Zero-curvature detection, from the walk: activations whose second
derivative vanishes, and whether a whole network's d²y/dx² is identically
zero.

A network built from affine maps and piecewise-linear activations (ReLU and
kin) is piecewise linear: its second derivative is 0 almost everywhere.
That verdict is given only when every step of the walk is known; anything
opaque (a subclassed `call`, a custom layer, a raw op) makes it "unknown".
Activations are recognised by identity (the built-ins) or probed
numerically (any other callable).
"""

import dataclasses
import warnings
import weakref

import keras
import numpy as np

from keras_deriv import backend
from keras_deriv.errors import ZeroCurvatureWarning
from keras_deriv.graph import registry
from keras_deriv.graph.walk import KNOWN, MODEL, OPAQUE, WRAPPER, Graph, walk

SMOOTH_ALTERNATIVES = "softplus, gelu, silu or tanh"

# Verdicts, from most to least informative about zero curvature.
PIECEWISE_LINEAR = registry.PIECEWISE_LINEAR  # identically zero d2y, proven
AFFINE = registry.AFFINE  # linear in x: zero d2y, and meant to be
CURVED = registry.CURVED  # a known curved step: no zero claim
UNKNOWN = "unknown"  # an opaque step: no claim either way

# The probe: both signs, magnitudes from 1e-4 to 6, never 0 itself (where
# e.g. tanh'' happens to vanish). From ~8 on, float32 saturates tanh and
# sigmoid, and their second derivatives round to exactly zero.
_MAGNITUDES = np.geomspace(1e-4, 6.0, 96)
PROBE_GRID = np.concatenate([-_MAGNITUDES[::-1], _MAGNITUDES]).astype("float32")

_A = keras.activations
# Fractions of PROBE_GRID where f'' == 0 for built-ins, by identity (a
# backend may not differentiate them twice: torch has no forward rule for
# hard_sigmoid's derivative); measured on the grid above.
KNOWN_ZERO_FRACTIONS = {
    _A.relu: 1.0,
    _A.relu6: 1.0,
    _A.leaky_relu: 1.0,
    _A.hard_sigmoid: 1.0,
    _A.hard_tanh: 1.0,
    _A.hard_shrink: 1.0,
    _A.soft_shrink: 1.0,
    _A.sparse_sigmoid: 1.0,
    _A.elu: 0.5,
    _A.selu: 0.5,
}
# Activations that mix features: probing one feature means nothing.
NOT_ELEMENTWISE = frozenset(
    getattr(_A, name) for name in ("softmax", "log_softmax", "glu", "sparsemax")
)


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


def activation_name(fn) -> str:
    """A readable name for an activation function or layer."""
    if isinstance(fn, keras.layers.Layer):
        return type(fn).__name__
    name = getattr(fn, "__name__", None)
    if name and getattr(_A, name, None) is fn:
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
    None when the backend cannot differentiate `fn` twice."""

    def second_derivative():
        x = keras.ops.convert_to_tensor(PROBE_GRID.reshape(-1, 1))
        y, d1, d2 = backend.get().nested_derivatives(
            lambda z: keras.ops.reshape(fn(z), (-1, 1)), x, 2, False, (0,)
        )
        return [keras.ops.convert_to_numpy(t).ravel() for t in (d1, d2)]

    try:
        d1, d2 = backend.get().run_eagerly(second_derivative)
    except Exception:  # noqa: BLE001 - a missing derivative rule, whatever its type
        return None
    return float(np.mean(d2 == 0.0)), bool(np.all(d1 == d1[0]))


_PROBED = weakref.WeakKeyDictionary()


def _is_builtin(fn):
    return fn is _A.linear or any(fn is known for known in KNOWN_ZERO_FRACTIONS)


def activation_zero_fraction(fn):
    """`(zero_fraction, affine)` of an elementwise activation: the fraction
    of `PROBE_GRID` where its second derivative is exactly zero, and whether
    it is affine (constant first derivative: meant to be linear). None when
    it cannot be judged (not a known built-in, and the backend cannot
    differentiate it twice, or it is a layer not built yet: calling it
    would build it for the probe's shape)."""
    if fn is _A.linear:
        return 1.0, True
    for known, fraction in KNOWN_ZERO_FRACTIONS.items():
        if fn is known:  # identity: a user's function named "relu" is probed
            return fraction, False
    if isinstance(fn, keras.layers.Layer) and not fn.built:
        return None
    try:
        if fn in _PROBED:
            return _PROBED[fn]
    except TypeError:  # not weakly referable: probe each time
        return _probe(fn)
    _PROBED[fn] = _probe(fn)
    return _PROBED[fn]


def _judge_activation(fn):
    """`(curvature, zero_fraction)` of an activation: zero_fraction None
    when there is nothing to report. Only built-ins are known: a probed
    callable is judged on [-6, 6] only, so it may be reported (a finding)
    but never proves the network piecewise linear or affine."""
    if any(fn is f for f in NOT_ELEMENTWISE):
        return CURVED, None
    judged = activation_zero_fraction(fn)
    if judged is None:
        return UNKNOWN, None
    fraction, affine = judged
    proven = _is_builtin(fn)
    if affine:
        return (AFFINE if proven else UNKNOWN), None
    if fraction == 1.0:
        return (PIECEWISE_LINEAR if proven else UNKNOWN), 1.0
    return CURVED, fraction if fraction > 0 else None


def judge_activations(graph: Graph) -> None:
    """Probe the activations of `graph` now (the results are kept): called
    where execution is eager, so that a build inside a traced function
    finds them judged and needs no probe of its own."""
    for step in graph.all_steps():
        if step.kind == KNOWN:
            activation = step.facts.activation(step.layer)
            if activation is not None:
                _judge_activation(activation)


def _combine(verdicts):
    """A verdict for steps in sequence: one curved step makes the whole
    curved; else one unknown step, unknown; else piecewise linear if any."""
    for verdict in (CURVED, UNKNOWN, PIECEWISE_LINEAR):
        if verdict in verdicts:
            return verdict
    return AFFINE


def _step_verdict(step):
    if step.kind == OPAQUE:
        return UNKNOWN
    if step.kind == MODEL:
        return graph_verdict(step.inner[0])
    verdicts = [step.facts.curvature]
    if step.kind == WRAPPER:
        verdicts += [graph_verdict(g) for g in step.inner]
    activation = step.facts.activation(step.layer)
    if activation is not None:
        verdicts.append(_judge_activation(activation)[0])
    return _combine(verdicts)


def graph_verdict(graph: Graph) -> str:
    """`"piecewise_linear"`, `"affine"`, `"curved"` or `"unknown"`."""
    return _combine([_step_verdict(step) for step in graph.steps])


def curvature_verdict(model: keras.layers.Layer) -> str:
    """What keras_deriv can prove about `model`'s second derivative.

    Returns:
        `"piecewise_linear"`: every step is known, all are affine or
        piecewise linear and at least one is piecewise linear: d²y/dx² is
        identically zero (almost everywhere). `"affine"`: the model is
        affine in its input. `"curved"`: a known step is curved (no zero
        claim). `"unknown"`: a step keras_deriv cannot see into (a
        subclassed `call`, a custom layer, a raw op): no claim either way.
    """
    backend.get()
    return graph_verdict(walk(model))


def findings_of(graph: Graph) -> list[ZeroCurvatureFinding]:
    """Findings for every step of `graph`, inside opaque layers too."""
    findings = []
    for step in graph.all_steps():
        if step.kind == KNOWN and step.facts.zero_fraction is not None:
            name = type(step.layer).__name__
            fraction = step.facts.zero_fraction
            findings.append(ZeroCurvatureFinding(step.path, name, fraction))
            continue
        if step.kind == KNOWN:
            activation = step.facts.activation(step.layer)
        elif step.kind == OPAQUE and isinstance(step.layer, keras.layers.Layer):
            activation = getattr(step.layer, "activation", None)
            activation = activation if callable(activation) else None
        else:
            activation = None
        if activation is None:
            continue
        _, fraction = _judge_activation(activation)
        if fraction is not None:
            findings.append(
                ZeroCurvatureFinding(step.path, activation_name(activation), fraction)
            )
    return findings


def find_zero_curvature_activations(
    model: keras.layers.Layer,
) -> list[ZeroCurvatureFinding]:
    """Activations in `model` whose second derivative is zero somewhere.

    Walks every layer, nested models included, and the layers held by
    custom layers and subclassed models: `activation=` arguments,
    `Activation` layers and activation layers (`ReLU`, `LeakyReLU`,
    `PReLU`, `ELU`). Built-in activations are known; any other callable is
    probed numerically (its second derivative on `PROBE_GRID`, both signs,
    magnitudes 1e-4 to 6). Affine activations (`linear`, the `Dense`
    default) are not findings.

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
    return findings_of(walk(model))


def has_identically_zero_curvature(model: keras.layers.Layer) -> bool:
    """Whether `model`'s d²y/dx² is proven identically zero (almost
    everywhere): every step is known, it has a piecewise-linear
    nonlinearity and everything else is affine. A smooth activation, a
    nonlinear layer (`Multiply`, softmax, a normalization) or anything
    keras_deriv cannot see into (see `curvature_verdict`) makes no claim."""
    return curvature_verdict(model) == PIECEWISE_LINEAR


def zero_curvature_message(model, graph=None) -> str:
    graph = graph if graph is not None else walk(model)
    findings = [f for f in findings_of(graph) if f.piecewise_linear]
    where = "; ".join(f"{f.layer} ({f.activation})" for f in findings)
    return (
        f"The second derivative of {model.name!r} is identically zero: it is "
        f"piecewise linear (piecewise-linear activations: {where}). Its "
        "d2y/dx2 is 0 almost everywhere and its dy/dx piecewise constant. "
        f"For curvature, use a smooth activation: {SMOOTH_ALTERNATIVES}."
    )


def warn_zero_curvature(model, graph=None, stacklevel=2):
    """Emit one `ZeroCurvatureWarning` for a proven piecewise-linear model."""
    warnings.warn(
        zero_curvature_message(model, graph),
        ZeroCurvatureWarning,
        stacklevel=stacklevel + 1,
    )
