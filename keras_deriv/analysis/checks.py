"""Checks that refuse a model, a mode or an engine, all read from the walk
and the registry: layers that cut the derivative, layers that mix the
points of a batch, random masks that would differ between derivatives,
and the backends' known autodiff defects."""

import functools

import keras
import numpy as np

from keras_deriv import backend
from keras_deriv.errors import NotDifferentiableError
from keras_deriv.graph.registry import inherited_facts
from keras_deriv.graph.walk import (
    KNOWN,
    MODEL,
    OPAQUE,
    UNKNOWN_TRAINING,
    WRAPPER,
    Graph,
    effective_training,
)

_FIX = (
    "keras_deriv differentiates the output with respect to the input, so "
    "every layer between them must be differentiable: remove it or move it "
    "outside the wrapped model."
)


def _article(word):
    return "an" if word[:1].lower() in "aeiou" else "a"


def _output_dtypes(op):
    try:
        outputs = op.output
    except (AttributeError, ValueError, RuntimeError):
        return []
    return [
        keras.backend.standardize_dtype(t.dtype) for t in keras.tree.flatten(outputs)
    ]


def _path_steps(graph):
    """Steps known to be on the path from input to output: everything but
    the insides of opaque layers (which may hold layers used elsewhere)."""
    for step in graph.steps:
        yield step
        if step.kind in (MODEL, WRAPPER):
            for inner in step.inner:
                yield from _path_steps(inner)


def static_cut(graph: Graph):
    """The first step (`"path", "reason"`) that statically cuts the
    derivative, or None."""
    for step in _path_steps(graph):
        kind = type(step.layer).__name__
        if step.facts is not None and step.facts.cuts is not None:
            return step.path, f"{_article(kind)} {kind} layer is {step.facts.cuts}"
        for dtype in _output_dtypes(step.layer) if step.kind != MODEL else []:
            # (a bool mask is no cut: it selects, as in ops.where)
            if not keras.backend.is_float_dtype(dtype) and dtype != "bool":
                return step.path, f"{kind} {step.path!r} outputs {dtype} values"
    model = graph.model
    for t in keras.tree.flatten(getattr(model, "inputs", None) or []):
        dtype = keras.backend.standardize_dtype(t.dtype)
        if not keras.backend.is_float_dtype(dtype):
            return model.name, f"the model input has dtype {dtype}"
    return None


def raise_if_static_cut(graph: Graph):
    cut = static_cut(graph)
    if cut is not None:
        path, reason = cut
        raise NotDifferentiableError(
            f"Cannot differentiate the output of {graph.model.name!r} with "
            f"respect to its input: {reason} (layer {path!r}). {_FIX}"
        )


def dynamic_cut(model, x):
    """Name of the first layer whose output no longer depends on `x`, found
    by probing Sequential layers one by one or Functional sub-models."""
    be = backend.get()
    if isinstance(model, keras.Sequential):
        layers = model.layers
        for k, layer in enumerate(layers):

            def prefix(z, upto=k):
                for inner in layers[: upto + 1]:
                    z = inner(z)
                return z

            if not be.depends_on_input(prefix, x):
                return layer.name
        return None
    ops = getattr(model, "operations", None)
    if ops is None:
        return None
    for op in ops:
        if isinstance(op, keras.layers.InputLayer):
            continue
        try:
            sub = keras.Model(model.inputs, op.output)
        except (ValueError, TypeError, AttributeError):
            continue
        if not be.depends_on_input(sub, x):
            return op.name
    return None


def _safety_facts(step):
    """The facts the safety checks read: a step's own, or, for an opaque
    subclass of a registered layer, its ancestor's (a `Dropout` subclass
    that overrides `call` still draws masks)."""
    if step.facts is not None:
        return step.facts
    if isinstance(step.layer, keras.layers.Layer):
        return inherited_facts(step.layer)
    return None


def autodiff_defect(graph: Graph, order: int):
    """The first step (`"path", "reason"`) whose derivatives up to `order`
    the active backend's nested differentiation gets wrong, or None. Looks
    everywhere, inside opaque layers too: what the autodiff engine runs."""
    name = keras.backend.backend()
    for step in graph.all_steps():
        facts = _safety_facts(step)
        defect = facts.defects.get(name) if facts is not None else None
        reason = defect(step.layer, order) if defect is not None else None
        if reason is not None:
            return step.path, reason
    return None


def batch_dependent_layer(graph: Graph, training: bool | None):
    """The path of the first layer that, in this call, mixes the points of
    a batch (BatchNormalization with batch statistics), or None."""
    for step in graph.steps:
        active = effective_training(step, training)
        facts = _safety_facts(step)
        if step.kind in (MODEL, WRAPPER):
            for inner in step.inner:
                found = batch_dependent_layer(inner, active)
                if found is not None:
                    return found
        elif facts is not None and active and facts.batch_dependent(step.layer):
            return step.path
        elif step.kind == OPAQUE and active:
            for inner in step.inner:
                found = batch_dependent_layer(inner, True)
                if found is not None:
                    return found
    return None


def raise_if_batch_dependent(graph: Graph, training: bool | None):
    path = batch_dependent_layer(graph, training)
    if path is not None and training is None and _flag_unknown(graph, path):
        raise ValueError(
            f"Layer {path!r} of {graph.model.name!r} normalises with batch "
            "statistics in training mode, and keras_deriv could not read from "
            "the model's config whether this call runs it in training mode. "
            "Call the DerivativeModel with training=False (or True) explicitly."
        )
    if path is not None:
        raise ValueError(
            f"Layer {path!r} of {graph.model.name!r} normalises with batch "
            "statistics in training mode, so the output at one point depends "
            "on every point of the batch, and its derivative with respect to "
            "one point's input is not defined. Freeze it (`layer.trainable = "
            "False` runs it in inference mode) or use LayerNormalization."
        )


def _flag_unknown(graph, path):
    return any(
        step.path == path and step.training == UNKNOWN_TRAINING
        for step in graph.all_steps()
    )


def random_masks(graph: Graph, training: bool | None) -> list[tuple[str, str]]:
    """`(path, why)` of the layers that may draw a random mask or noise in
    this call: stochastic layers in training mode (see `effective_training`),
    stochastic layers inside opaque ones when training, opaque subclasses of
    stochastic layers (their `call` may force training mode) and stochastic
    layers whose training flag the graph records but keras_deriv could not
    read."""
    found = []
    for step in graph.steps:
        active = effective_training(step, training)
        facts = _safety_facts(step)
        stochastic = facts is not None and facts.stochastic and _rate(step.layer)
        if step.kind in (MODEL, WRAPPER):
            for inner in step.inner:
                found += random_masks(inner, active)
        elif step.kind == KNOWN and stochastic and active == UNKNOWN_TRAINING:
            found.append((step.path, "its training flag could not be read"))
        elif step.kind == KNOWN and stochastic and active:
            found.append((step.path, "it is in training mode"))
        elif step.kind == OPAQUE and stochastic:
            found.append((step.path, "it overrides call (it may force training)"))
        elif step.kind == OPAQUE and active:
            for inner in step.inner:
                found += [
                    (path, "it is inside a custom layer, in training mode")
                    for path, _ in random_masks(inner, True)
                ]
    return found


def _rate(layer):
    rate = getattr(layer, "rate", None)
    return 1.0 if rate is None else float(rate)


@functools.cache
def float64_available() -> bool:
    """Whether the backend computes float64 at all (JAX only in its 64-bit
    mode, `JAX_ENABLE_X64`)."""
    probe = keras.ops.convert_to_tensor(np.zeros(1), dtype="float64")
    return keras.backend.standardize_dtype(probe.dtype) == "float64"


@functools.cache
def float64_lossy_ops() -> tuple[str, ...]:
    """The `keras.ops` functions that compute float64 inputs in float32 on
    the active backend (Keras 3.15: `tanh` and `sinh` on JAX, `matmul` and
    `minimum` on torch), measured on a few values once per process."""
    rng = np.random.default_rng(0)
    a, b = rng.uniform(-1, 1, (8, 8)), rng.uniform(-1, 1, (8, 8))
    cases = {
        "matmul": (keras.ops.matmul, np.matmul, (a, b)),
        "minimum": (keras.ops.minimum, np.minimum, (a, b + 1e-9)),
        "tanh": (keras.ops.tanh, np.tanh, (a,)),
        "sinh": (keras.ops.sinh, np.sinh, (a,)),
        "exp": (keras.ops.exp, np.exp, (a,)),
        "sigmoid": (keras.ops.sigmoid, lambda z: 1 / (1 + np.exp(-z)), (a,)),
    }

    def measure():
        lossy = []
        for name, (op, reference, args) in cases.items():
            tensors = [keras.ops.convert_to_tensor(v, dtype="float64") for v in args]
            got = np.asarray(keras.ops.convert_to_numpy(op(*tensors)), "float64")
            if np.abs(got - reference(*args)).max() > 1e-12:
                lossy.append(name)
        return tuple(lossy)

    return backend.get().run_eagerly(measure)
