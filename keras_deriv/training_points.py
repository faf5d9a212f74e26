"""Several kinds of training points (interior, boundary, initial), each with
its own losses, as the arrays of one Keras `fit`."""

import math
import numbers

import keras
import numpy as np


def point_sets(
    model: keras.Model, **sets: tuple
) -> tuple[np.ndarray | list | dict, dict, dict]:
    """Stack point sets into `x`, targets and sample weights for one `fit`.

    A physics-informed problem has points of several kinds, each with its
    own losses: the residual at interior points, `y` at boundary points.
    Keras trains them in one `fit` when the points are stacked and each
    output's loss is told, by a sample weight, which points it counts. This
    builds those arrays: every output a set gives a target for is weighted
    by the set's weight on its points, and 0 elsewhere.

    Args:
        model: the model that `fit` trains (outputs a dict, e.g. built
            around a `DerivativeModel`); its outputs' shapes shape the
            targets.
        **sets: per kind of point, `(x, targets)` or `(x, targets, weight)`:
            the points (an array, or a list or dict of arrays for a model
            with several inputs), a dict from output name to its target
            (an array, or a number for every point) and the weight of
            those losses (default 1).

    Returns:
        The tuple `(x, targets, sample_weight)` for `model.fit(x, targets,
        sample_weight=sample_weight)`; shuffle as usual (`fit` does).

    Example:
        >>> import keras, numpy as np
        >>> from keras_deriv import DerivativeModel, point_sets
        >>> net = keras.Sequential([keras.Input((1,)),
        ...                         keras.layers.Dense(8, activation="tanh"),
        ...                         keras.layers.Dense(1)])
        >>> inputs = keras.Input((1,))
        >>> layer = DerivativeModel(net, order=2)
        >>> model = keras.Model(inputs, dict(zip(layer.output_keys, layer(inputs))))
        >>> inside = np.linspace(0, 1, 30)[1:-1].reshape(-1, 1)
        >>> rhs = -np.pi**2 * np.sin(np.pi * inside)[..., None]
        >>> x, y, w = point_sets(
        ...     model,
        ...     interior=(inside, {"d2y": rhs}),
        ...     boundary=(np.array([[0.0], [1.0]]), {"y": 0.0}, 100.0),
        ... )
        >>> x.shape, sorted(y), list(map(float, w["y"]))[-3:]
        ((30, 1), ['d2y', 'y'], [0.0, 100.0, 100.0])
    """
    if not sets:
        raise ValueError("point_sets() needs at least one set of points.")
    outputs = _output_shapes(model)
    parts, counts, given = [], [], {}
    for kind, spec in sets.items():
        if not isinstance(spec, tuple) or len(spec) not in (2, 3):
            raise TypeError(
                f"point set {kind!r} must be (x, targets) or (x, targets, weight); "
                f"got {type(spec).__name__}."
            )
        x, targets, weight = (*spec, 1.0) if len(spec) == 2 else spec
        if (
            isinstance(weight, bool)
            or not isinstance(weight, numbers.Real)
            or not math.isfinite(weight)
            or weight < 0
        ):
            raise ValueError(
                f"point set {kind!r}: the weight must be a finite number >= 0."
            )
        if not isinstance(targets, dict) or not targets:
            raise TypeError(
                f"point set {kind!r}: targets must be a dict from output name to "
                'its target, e.g. {"y": 0.0}.'
            )
        unknown = sorted(set(targets) - set(outputs))
        if unknown:
            raise ValueError(
                f"point set {kind!r} has targets for {unknown}, which the model "
                f"does not output (its outputs: {sorted(outputs)})."
            )
        n = _count(x, kind)
        parts.append(x)
        counts.append(n)
        given[kind] = (targets, float(weight))
    x = _stack(parts)
    total = sum(counts)
    targets = {}
    weights = {}
    used = sorted({name for t, _ in given.values() for name in t})
    for name in used:
        shape = outputs[name]
        target = np.zeros((total, *shape), "float32")
        weight = np.zeros(total, "float32")
        start = 0
        for (kind, (per_set, w)), n in zip(given.items(), counts, strict=True):
            if name in per_set:
                target[start : start + n] = _target(per_set[name], n, shape, kind, name)
                weight[start : start + n] = w
            start += n
        targets[name] = target
        weights[name] = weight
    return x, targets, weights


def _target(value, n, shape, kind, name):
    """One set's target for one output: a number for every point, or one
    value per point (shape `(n, *shape)`, or `(n,)` for one feature)."""
    if value is None:
        raise ValueError(f"point set {kind!r}: the target for {name!r} is None.")
    value = np.asarray(value, "float32")
    if value.ndim == 0:
        return np.broadcast_to(value, (n, *shape))
    if value.shape == (n, *shape):
        return value
    if value.shape == (n,) and math.prod(shape) == 1:
        return value.reshape((n, *shape))
    raise ValueError(
        f"point set {kind!r}: the target for {name!r} has shape {value.shape}; "
        f"give a number, or one value per point: shape {(n, *shape)}."
    )


def _output_shapes(model):
    try:
        structure = model.output
    except (AttributeError, ValueError):  # an unbuilt or subclassed model
        structure = None
    if not isinstance(structure, dict):
        raise TypeError(
            "point_sets() keys targets by output name: the model must return a "
            "dict, e.g. keras.Model(x, dict(zip(layer.output_keys, layer(x))))."
        )
    return {name: tuple(t.shape[1:]) for name, t in structure.items()}


def _count(x, kind):
    arrays = keras.tree.flatten(x)
    counts = {len(np.asarray(a)) for a in arrays}
    if len(counts) != 1:
        raise ValueError(f"point set {kind!r}: its inputs have different lengths.")
    return counts.pop()


def _stack(parts):
    first = parts[0]
    kinds = (
        {type(p) is dict for p in parts},
        {isinstance(p, (list, tuple)) for p in parts},
    )
    if (
        len(kinds[0]) > 1
        or len(kinds[1]) > 1
        or (isinstance(first, dict) and any(set(p) != set(first) for p in parts))
    ):
        raise ValueError(
            "point_sets(): every set's points must have the same structure (one "
            "array, or the same list or dict of inputs)."
        )
    if isinstance(first, dict):
        return {
            key: np.concatenate([np.asarray(p[key]) for p in parts]) for key in first
        }
    if isinstance(first, (list, tuple)):
        return [
            np.concatenate([np.asarray(p[i]) for p in parts]) for i in range(len(first))
        ]
    return np.concatenate([np.asarray(p) for p in parts])
