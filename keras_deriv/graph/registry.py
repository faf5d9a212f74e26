"""The one registry of per-layer facts, keyed by class.

Every consumer (the Taylor engine, the zero-curvature verdict, the
differentiability checks, the choice of engine) reads a layer's facts
here, through `facts_for(layer)`, and nowhere else.

Lookup is by class and subclass-aware, but a subclass inherits its
ancestor's facts only while it runs the ancestor's `call`: a user's
`class Dense(keras.layers.Dense)` that overrides `call` has no facts (it is
opaque), whatever its name.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

AFFINE = "affine"
PIECEWISE_LINEAR = "piecewise_linear"
CURVED = "curved"


def _none(layer: Any) -> None:
    return None


@dataclasses.dataclass(frozen=True)
class LayerFacts:
    """What keras_deriv knows about one layer class.

    Attributes:
        taylor: the Taylor rule `rule(layer, jet_or_jets, mode, training)`,
            or None when the Taylor engine cannot propagate through it.
        curvature: the layer without its `activation`: `"affine"`,
            `"piecewise_linear"` or `"curved"`.
        activation: `activation(layer)`: the elementwise nonlinearity the
            layer applies after its affine part (judged separately), or None.
        merge: whether the layer takes a list of tensors.
        cuts: why the layer cuts the derivative of its output with respect
            to its input (a lookup, a stop-gradient), or None.
        stochastic: whether, in training mode, it multiplies by a random
            mask (a different mask per call).
        batch_dependent: `batch_dependent(layer)`: whether, in training mode,
            the output at one point depends on the other points of the batch.
        taylor_gap: `taylor_gap(layer)`: why this instance cannot go through
            the Taylor rule (a quantized kernel, several softmax axes), or None.
        defects: per backend name, `defect(layer, order)`: why that backend's
            nested differentiation gets the derivatives up to `order` wrong,
            or None.
        inner: `inner(layer)`: the layers a wrapper applies (walked for the
            verdict and the checks), or None for a plain layer.
        zero_fraction: for a layer that is itself an activation (`ReLU`,
            `ELU`, ...), the fraction of the probe grid where its second
            derivative is zero, reported as a finding; None otherwise.
    """

    taylor: Callable | None = None
    curvature: str = CURVED
    activation: Callable[[Any], Any] = _none
    merge: bool = False
    cuts: str | None = None
    stochastic: bool = False
    batch_dependent: Callable[[Any], bool] = lambda layer: False
    taylor_gap: Callable[[Any], str | None] = _none
    defects: dict[str, Callable[[Any, int], str | None]] = dataclasses.field(
        default_factory=dict
    )
    inner: Callable[[Any], list] | None = None
    zero_fraction: float | None = None


_REGISTRY: dict[type, LayerFacts] = {}


def register(*classes: type, **facts: Any) -> LayerFacts:
    """Record the same `LayerFacts(**facts)` for each of `classes`."""
    entry = LayerFacts(**facts)
    for cls in classes:
        if cls in _REGISTRY:
            raise ValueError(f"{cls!r} is registered twice")
        _REGISTRY[cls] = entry
    return entry


def facts_for(layer: Any) -> LayerFacts | None:
    """The facts of `layer`'s class, or of its nearest registered ancestor
    whose `call` it still runs; None when there are none (opaque)."""
    _ensure_loaded()
    cls = type(layer)
    for ancestor in cls.__mro__:
        entry = _REGISTRY.get(ancestor)
        if entry is not None:
            same_call = getattr(cls, "call", None) is getattr(ancestor, "call", None)
            return entry if same_call else None
    return None


def inherited_facts(layer: Any) -> LayerFacts | None:
    """The facts of `layer`'s nearest registered ancestor, whether or not
    it overrides `call`. Only for the safety checks (random masks, batch
    statistics, backend defects): a subclass of `Dropout` that overrides
    `call` is opaque, but still random."""
    _ensure_loaded()
    for ancestor in type(layer).__mro__:
        entry = _REGISTRY.get(ancestor)
        if entry is not None:
            return entry
    return None


def registered_classes() -> dict[type, LayerFacts]:
    """Every registered class with its facts (for the docs and tests)."""
    _ensure_loaded()
    return dict(_REGISTRY)


def _ensure_loaded():
    if not _REGISTRY:
        # The entries name the Taylor rules, which need keras.ops: import
        # them on first use, not when the package is imported.
        from keras_deriv.graph import known_layers  # noqa: F401
