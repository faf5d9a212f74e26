"""`derivatives()`: NumPy in, NumPy out, evaluated in fixed-size chunks."""

import collections

import keras
import numpy as np
import numpy.typing as npt

from keras_deriv.engines import smoothing
from keras_deriv.graph.walk import fingerprint, walk
from keras_deriv.layers.derivative_model import DerivativeModel
from keras_deriv.options import (
    check_batch_size,
    check_hessian,
    check_method,
    check_order,
    check_smoothing,
    check_wrt,
)

DEFAULT_BATCH_SIZE = 4096
# With smoothing, each point is 1 + 64·d' network evaluations: the default
# chunk holds this many of them.
SMOOTHED_ROWS = 2**16

# Recently used evaluators, so that repeated calls (a loop over slices)
# reuse the compiled function instead of retracing. Bounded: an evaluator
# holds its model alive.
_CACHE_SIZE = 8
_EVALUATORS = collections.OrderedDict()


class Evaluator:
    """One compiled function computing the derivatives of `model` at float
    inputs of width `d` and dtype `dtype`, evaluated in padded fixed-size
    chunks, so that no chunk shape triggers a recompilation."""

    def __init__(self, model, d, dtype, **options):
        inputs = keras.Input((d,), dtype=dtype)
        self.layer = DerivativeModel(model, **options)
        self.model = model
        self.fingerprint = fingerprint(model)
        self._function = keras.Model(inputs, self.layer(inputs))
        self.default_batch_size = DEFAULT_BATCH_SIZE
        if self.layer.smoothing is not None:
            wrt = self.layer.wrt if self.layer.wrt is not None else range(d)
            cost = smoothing.rows_per_point(list(wrt))
            self.default_batch_size = max(1, SMOOTHED_ROWS // cost)

    def is_current(self, graph=None):
        """Whether the model still has the structure this function was
        compiled for (not edited in place since)."""
        graph = graph if graph is not None else walk(self.model, read_config=False)
        return graph.fingerprint() == self.fingerprint

    def __call__(self, x, batch_size=None):
        n = len(x)
        if batch_size is None:
            batch_size = min(n, self.default_batch_size)
        batch_size = check_batch_size(batch_size)
        outputs, keys = None, None
        for start in range(0, n, batch_size):
            chunk = x[start : start + batch_size]
            if len(chunk) < batch_size:  # pad: one shape, one compiled function
                chunk = np.concatenate(
                    [chunk, np.repeat(chunk[-1:], batch_size - len(chunk), 0)]
                )
            values = self._function.predict_on_batch(chunk)
            if isinstance(values, dict):  # named partials
                keys = list(self.layer.output_keys)  # in the layer's order
                values = [values[k] for k in keys]
            if outputs is None:  # preallocate: memory is the outputs, once
                outputs = [np.empty((n, *v.shape[1:]), v.dtype) for v in values]
            stop = min(start + batch_size, n)
            for out, value in zip(outputs, values, strict=True):
                out[start:stop] = value[: stop - start]
        return dict(zip(keys, outputs, strict=True)) if keys else tuple(outputs)


def _cached_evaluator(model, d, dtype, options, graph=None):
    key = (id(model), d, dtype, repr(options))  # partials are dicts
    evaluator = _EVALUATORS.pop(key, None)
    if evaluator is None or not evaluator.is_current(graph):
        evaluator = Evaluator(model, d, dtype, **dict(options))
    _EVALUATORS[key] = evaluator
    while len(_EVALUATORS) > _CACHE_SIZE:
        _EVALUATORS.popitem(last=False)
    return evaluator


def as_float_array(x, who="derivatives()"):
    """`x` as a float NumPy array of shape (n, d), or a clear error."""
    x = np.asarray(x)
    if x.ndim != 2:
        hint = (
            " For one feature, add its axis: x.reshape(-1, 1)." if x.ndim == 1 else ""
        )
        raise ValueError(f"{who} expects x of shape (n, d); got shape {x.shape}.{hint}")
    try:
        is_float = keras.backend.is_float_dtype(
            keras.backend.standardize_dtype(x.dtype)
        )
    except ValueError:  # strings, objects: not a dtype Keras knows
        is_float = False
    if not is_float:
        raise TypeError(
            f"{who} got x of dtype {x.dtype}; derivatives need float "
            "inputs. Cast it first, e.g. x.astype('float32')."
        )
    return x


def derivatives(
    model: keras.layers.Layer,
    x: npt.ArrayLike,
    order: int = 2,
    hessian: str = "diagonal",
    wrt: list[int] | None = None,
    batch_size: int | None = None,
    method: str = "auto",
    smoothing: float | None = None,
    partials: dict | None = None,
    variables: str | list | None = None,
) -> tuple[np.ndarray, ...] | dict[str, np.ndarray]:
    """Input derivatives of a Keras model at the points `x`, as NumPy arrays.

    The points are evaluated in chunks of `batch_size` by one compiled
    function (the last chunk is padded, so its shape never triggers a
    recompilation), which keeps memory bounded for millions of points.
    Repeated calls with the same model and options reuse that function.

    Args:
        model: a Keras model or layer mapping `(batch, d)` to `(batch, *out)`;
            or a model built around a `DerivativeModel` (whose outputs are
            derivatives, e.g. `{"d2y": ...}`), whose wrapped network is then
            differentiated.
        x: array-like of shape `(n, d)`, float. Its dtype is kept (use
            float64 with a float64 model for reference values).
        order: highest derivative order, 1 to 4. Defaults to `2`.
        hessian: `"diagonal"`, `"full"` or `"laplacian"`, as in
            `DerivativeModel`. Defaults to `"diagonal"`.
        wrt: indices of the input features to differentiate, or `None` for
            all. Defaults to `None`.
        batch_size: points per chunk; `None` evaluates up to 4096 points at
            a time (with `smoothing`, up to 65536 network evaluations, each
            point costing 1 + 64·d'). Defaults to `None`.
        method: `"auto"`, `"autodiff"` or `"taylor"`, as in
            `DerivativeModel`. Defaults to `"auto"`.
        smoothing: `None` for the exact derivatives, or a resolution σ (in
            input units) for those of the network smoothed by a Gaussian of
            that width along each differentiated feature, as in
            `DerivativeModel`. Defaults to `None`.
        partials: named partials and operators instead of `order`,
            `hessian`, `wrt` and `smoothing`, as in `DerivativeModel`, e.g.
            `{"u_xt": "xt", "heat": {"t": 1, "xx": -0.1}}`. Defaults to
            `None`.
        variables: the names of the input features `partials` uses (e.g.
            `"xt"`). Defaults to `None`.

    Returns:
        A tuple of `order + 1` arrays `(y, dy, d2y, ...)` with the shapes of
        `DerivativeModel`'s outputs; with `partials`, a dict `{"y": y,
        name: array}`, each of y's shape.

    Examples:
        >>> import numpy as np, keras
        >>> from keras_deriv import derivatives
        >>> net = keras.Sequential([keras.Input((1,)),
        ...                         keras.layers.Dense(8, activation="tanh"),
        ...                         keras.layers.Dense(1)])
        >>> x = np.linspace(0, 1, 100, dtype="float32").reshape(-1, 1)
        >>> y, dy, d2y = derivatives(net, x, order=2)
        >>> dy.shape
        (100, 1, 1)
        >>> out = derivatives(net, x, partials={"curvature": "xx"}, variables="x")
        >>> out["curvature"].shape
        (100, 1)
    """
    x = as_float_array(x)
    graph = walk(model, read_config=False)
    net = network_to_differentiate(model, graph)
    if net is not model:
        model, graph = net, walk(net, read_config=False)
    inputs = keras.tree.flatten(getattr(model, "inputs", None) or [])
    if len(inputs) > 1:
        raise ValueError(
            f"derivatives() takes networks with one input; {model.name!r} has "
            f"{len(inputs)}. Wrap it in DerivativeModel(model, variables={{...}}) "
            "and call that (or its Keras model's predict) on your inputs."
        )
    if len(x) == 0:
        raise ValueError("derivatives() got no points (x has 0 rows).")
    if partials is not None:
        given = [
            name
            for name, value, default in (
                ("order", order, 2),
                ("hessian", hessian, "diagonal"),
                ("wrt", wrt, None),
                ("smoothing", smoothing, None),
            )
            if not (
                value is default or (type(value) is type(default) and value == default)
            )
        ]
        if given:
            raise ValueError(
                f"derivatives(): partials= names the outputs itself; drop "
                f"{', '.join(given)}= (or drop partials=)."
            )
        options = (
            ("partials", partials),
            ("variables", variables),
            ("method", check_method(method)),
        )
    else:
        if variables is not None:
            raise ValueError(
                "derivatives(): variables= names the features partials= uses; "
                "without partials=, select features with wrt=."
            )
        order = check_order(order)
        options = (
            ("order", order),
            ("hessian", check_hessian(hessian, order)),
            ("method", check_method(method)),
            ("wrt", check_wrt(wrt)),
            ("smoothing", check_smoothing(smoothing)),
        )
    if batch_size is not None:
        check_batch_size(batch_size)
    evaluator = _cached_evaluator(model, x.shape[1], str(x.dtype), options, graph)
    return evaluator(x, batch_size)


def _outermost_wrappers(graph):
    """The DerivativeModel layers in `graph`, except those inside another
    one's wrapped network."""
    found = []
    for step in graph.all_steps():
        if isinstance(step.layer, DerivativeModel) and not any(
            step.path.startswith(f"{outer.path}/") for outer in found
        ):
            found.append(step)
    return found


def _made_by_wrapper(model):
    """Whether every output of `model` is a DerivativeModel's own output,
    directly or through nested models (read from the config's output
    names: a layer's `output` is that of its first call only). None when
    the config cannot be read."""
    try:
        ends = model.get_config()["output_layers"]
    except Exception:  # noqa: BLE001 - a config Keras cannot make
        return None
    if isinstance(ends, dict):
        ends = list(ends.values())
    if ends and not isinstance(ends[0], list | tuple):
        ends = [ends]
    for name, *_ in ends:
        layer = model.get_layer(name)
        if isinstance(layer, DerivativeModel):
            continue
        if not (isinstance(layer, keras.Model) and _made_by_wrapper(layer)):
            return False
    return True


def network_to_differentiate(model, graph=None):
    """The network whose derivatives a model is about: `model` itself,
    unless its outputs are a DerivativeModel's own (e.g. `{"d2y": d2u}`, a
    model trained on derivative outputs) or several outputs around one
    DerivativeModel: then the network that layer wraps."""
    graph = graph if graph is not None else walk(model, read_config=False)
    wrappers = _outermost_wrappers(graph)
    outputs = keras.tree.flatten(getattr(model, "outputs", None) or [])
    if not wrappers or not outputs:
        return model
    if len(outputs) == 1 and not _made_by_wrapper(model):
        return model  # one tensor computed from derivatives: differentiate it
    wrapped = []
    for step in wrappers:
        if all(step.layer.model is not w for w in wrapped):
            wrapped.append(step.layer.model)
    if len(wrapped) == 1:
        return wrapped[0]
    names = ", ".join(repr(w.name) for w in wrapped)
    raise ValueError(
        f"Cannot tell which network of {model.name!r} to differentiate: its "
        f"DerivativeModel layers wrap {len(wrapped)} different networks "
        f"({names})."
    )
