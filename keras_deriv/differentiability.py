"""Finding the layer that cuts the derivative of a model's output with
respect to its input, statically (by layer kind and dtype) and, where that
finds nothing, by probing sub-models with the backend."""

import keras

from keras_deriv import backend
from keras_deriv.errors import NotDifferentiableError

# Layers whose output is a lookup or a count, not a differentiable function.
NON_DIFFERENTIABLE_LAYERS = frozenset(
    {
        "Embedding",
        "StringLookup",
        "IntegerLookup",
        "Hashing",
        "HashedCrossing",
        "Discretization",
        "CategoryEncoding",
        "TextVectorization",
        "StopGradient",
    }
)

_FIX = (
    "keras_deriv differentiates the output with respect to the input, so "
    "every layer between them must be differentiable: remove it or move it "
    "outside the wrapped model."
)


def _operations(model):
    ops = getattr(model, "operations", None)
    if ops is None:
        ops = getattr(model, "layers", [])
    return ops


def _output_dtypes(op):
    try:
        outputs = op.output
    except (AttributeError, ValueError, RuntimeError):
        return []
    return [
        keras.backend.standardize_dtype(t.dtype) for t in keras.tree.flatten(outputs)
    ]


def static_cut(model, prefix=""):
    """The first operation (`"path", "reason"`) that statically cuts the
    derivative, or None. Recurses into nested models."""
    for op in _operations(model):
        path = f"{prefix}{op.name}"
        kind = type(op).__name__
        if kind == "InputLayer":
            dtypes = _output_dtypes(op)
            if dtypes and not keras.backend.is_float_dtype(dtypes[0]):
                return path, f"the model input has dtype {dtypes[0]}"
            continue
        if kind in NON_DIFFERENTIABLE_LAYERS:
            return path, f"a {kind} layer is not differentiable"
        if _operations(op) and op is not model:
            inner = static_cut(op, prefix=f"{path}/")
            if inner is not None:
                return inner
        for dtype in _output_dtypes(op):
            if not keras.backend.is_float_dtype(dtype):
                return path, f"{kind} {path!r} outputs {dtype} values"
    return None


def raise_if_static_cut(model):
    cut = static_cut(model)
    if cut is not None:
        path, reason = cut
        raise NotDifferentiableError(
            f"Cannot differentiate the output of {model.name!r} with respect "
            f"to its input: {reason} (layer {path!r}). {_FIX}"
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
        if type(op).__name__ == "InputLayer":
            continue
        try:
            sub = keras.Model(model.inputs, op.output)
        except (ValueError, TypeError, AttributeError):
            continue
        if not be.depends_on_input(sub, x):
            return op.name
    return None


def autodiff_defect(model, order):
    """The first layer (`"path", "reason"`) whose derivatives up to `order`
    the backend's native nested differentiation gets wrong, or None. Looks
    at `model` itself, nested models and wrappers (`TimeDistributed`'s
    `.layer`); not inside custom layers, which Keras gives no public way to
    list."""
    reason = backend.get().wrong_derivatives(model, order)
    if reason is not None:
        return model.name, reason
    return _defect_below(model, order, prefix="")


def _defect_below(model, order, prefix):
    children = [op for op in _operations(model) if op is not model]
    inner = getattr(model, "layer", None)
    if isinstance(inner, keras.layers.Layer):
        children.append(inner)
    for op in children:
        path = f"{prefix}{op.name}"
        reason = backend.get().wrong_derivatives(op, order)
        if reason is not None:
            return path, reason
        found = _defect_below(op, order, prefix=f"{path}/")
        if found is not None:
            return found
    return None


def batch_dependent_layer(model, prefix=""):
    """The path of the first layer that, in training mode, mixes the points
    of a batch (BatchNormalization with batch statistics), or None."""
    for op in _operations(model):
        path = f"{prefix}{op.name}"
        if type(op).__name__ == "BatchNormalization" and op.trainable:
            return path
        if _operations(op) and op is not model:
            inner = batch_dependent_layer(op, prefix=f"{path}/")
            if inner is not None:
                return inner
    return None


def raise_if_batch_dependent(model):
    path = batch_dependent_layer(model)
    if path is not None:
        raise ValueError(
            f"Layer {path!r} of {model.name!r} normalises with batch statistics "
            "in training mode, so the output at one point depends on every "
            "point of the batch, and its derivative with respect to one "
            "point's input is not defined. Freeze it (`layer.trainable = "
            "False` runs it in inference mode) or use LayerNormalization."
        )
