"""`derivatives()`: NumPy in, NumPy out, evaluated in fixed-size chunks."""

import collections
import math
import os
from collections.abc import Iterable, Iterator

import keras
import numpy as np
import numpy.typing as npt

from keras_deriv import streaming
from keras_deriv.backend.precision import PRECISIONS
from keras_deriv.engines import smoothing
from keras_deriv.estimators import Hutchinson, check_estimator
from keras_deriv.graph.walk import fingerprint, walk
from keras_deriv.layers.derivative_model import DerivativeModel
from keras_deriv.options import (
    check_batch_size,
    check_choice,
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

Results = tuple[np.ndarray, ...] | dict[str, np.ndarray]


class Evaluator:
    """One compiled function computing the derivatives of `model` at float
    inputs of width `d` and dtype `dtype`, evaluated in padded fixed-size
    chunks, so that no chunk shape triggers a recompilation."""

    def __init__(self, model, d, dtype, **options):
        inputs = keras.Input((d,), dtype=dtype)
        self.layer = DerivativeModel(model, **options)
        self.model = model
        self.fingerprint = fingerprint(model)
        outputs = self.layer(inputs)
        self.named = isinstance(outputs, dict)  # named partials
        self.keys = tuple(self.layer.output_keys)  # the outputs, in order
        self._function = keras.Model(inputs, outputs)
        self._first_draw = None
        if self.layer.estimator is not None:
            state = keras.ops.convert_to_numpy(self.layer.seed_generator.state.value)
            self._first_draw = np.array(state, copy=True)  # not a view (torch)
        self.default_batch_size = DEFAULT_BATCH_SIZE
        if self.layer.smoothing is not None:
            wrt = self.layer.wrt if self.layer.wrt is not None else range(d)
            cost = smoothing.rows_per_point(list(wrt))
            self.default_batch_size = max(1, SMOOTHED_ROWS // cost)

    def restart_draws(self):
        """Back to the first draw of a seeded estimator: each call of
        `derivatives()` with `Hutchinson(seed=...)` draws the same
        directions."""
        if self._first_draw is not None and self.layer.estimator.seed is not None:
            self.layer.seed_generator.state.assign(self._first_draw)

    def is_current(self, graph=None):
        """Whether the model still has the structure this function was
        compiled for (not edited in place since)."""
        graph = graph if graph is not None else walk(self.model, read_config=False)
        return graph.fingerprint() == self.fingerprint

    def chunks(self, x, batch_size):
        """Yield `(start, stop, values)` for each chunk of `batch_size`
        points of `x`: the outputs at `x[start:stop]`, a list in `keys`
        order. The last chunk is padded: one shape, one compiled function."""
        n = len(x)
        for start in range(0, n, batch_size):
            chunk = x[start : start + batch_size]
            stop = start + len(chunk)
            if len(chunk) < batch_size:
                chunk = np.concatenate(
                    [chunk, np.repeat(chunk[-1:], batch_size - len(chunk), 0)]
                )
            values = self._function.predict_on_batch(chunk)
            if self.named:
                values = [values[k] for k in self.keys]
            yield start, stop, [value[: stop - start] for value in values]

    def evaluate(self, x, batch_size, progress=None):
        """The outputs at all points of `x`, a list in `keys` order;
        `progress` (a `keras.utils.Progbar`) counts the points done."""
        outputs = None
        for start, stop, values in self.chunks(x, batch_size):
            if outputs is None:  # preallocate: memory is the outputs, once
                outputs = [np.empty((len(x), *v.shape[1:]), v.dtype) for v in values]
            for out, value in zip(outputs, values, strict=True):
                out[start:stop] = value
            if progress is not None:
                progress.update(stop)
        return outputs

    def pack(self, values):
        """`values` (in `keys` order) as `derivatives()` returns them."""
        if self.named:
            return dict(zip(self.keys, values, strict=True))
        return tuple(values)

    def __call__(self, x, batch_size=None):
        if batch_size is None:
            batch_size = min(len(x), self.default_batch_size)
        batch_size = check_batch_size(batch_size)
        return self.pack(self.evaluate(x, batch_size))


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
    x: npt.ArrayLike | Iterable,
    order: int = 2,
    hessian: str = "diagonal",
    wrt: list[int] | None = None,
    batch_size: int | None = None,
    method: str = "auto",
    smoothing: float | None = None,
    partials: dict | None = None,
    variables: str | list | None = None,
    *,
    out: str | os.PathLike | None = None,
    verbose: str | int = "auto",
    estimator: Hutchinson | None = None,
    precision: str = "default",
) -> Results | Iterator[Results]:
    """Input derivatives of a Keras model at the points `x`, as NumPy arrays.

    The points are evaluated in chunks of `batch_size` by one compiled
    function (the last chunk is padded, so its shape never triggers a
    recompilation), which keeps memory bounded for millions of points.
    Repeated calls with the same model and options reuse that function.

    For more points than fit in memory, `x` can be a stream of point
    batches (a `tf.data.Dataset`, a `keras.utils.PyDataset` or any
    iterator, such as a generator): the results then come back batch by
    batch, lazily, or, with `out=`, go to one `.npy` file per output. A
    memory-mapped array (`np.load(path, mmap_mode="r")`) works as `x` too:
    it is read chunk by chunk, never whole.

    Args:
        model: a Keras model or layer mapping `(batch, d)` to `(batch, *out)`;
            or a model built around a `DerivativeModel` (whose outputs are
            derivatives, e.g. `{"d2y": ...}`), whose wrapped network is then
            differentiated.
        x: array-like of shape `(n, d)`, float. Its dtype is kept (use
            float64 with a float64 model for reference values). Or a stream
            of batches of points: a `tf.data.Dataset` (read with
            `as_numpy_iterator()`, on every backend where TensorFlow is
            installed), a `keras.utils.PyDataset` (batches `0` to
            `num_batches - 1`, read in order) or an iterator. Each batch is
            a float array `(b, d)` with `b >= 1`, or a tuple whose first
            entry is one (the `(x, y)` or `(x, y, sample_weight)` batches of
            training data: the rest is ignored); all batches have the width
            and dtype of the first. Each batch is padded to, or split
            into, chunks of `batch_size`, so batches of any size share one
            compiled function. A list of batches or an iterable that is no
            iterator (a torch `DataLoader`) is an error: pass
            `iter(loader)`.
        order: highest derivative order, 1 to 4. Defaults to `2`.
        hessian: `"diagonal"`, `"full"` or `"laplacian"`, as in
            `DerivativeModel`. Defaults to `"diagonal"`.
        wrt: indices of the input features to differentiate, or `None` for
            all. Defaults to `None`.
        batch_size: points per chunk; `None` evaluates up to 4096 points at
            a time (with `smoothing`, up to 65536 network evaluations, each
            point costing 1 + 64·d'); for a stream, as many as its first
            batch holds, up to that bound, grown to the next power of two
            (up to that bound) for a later batch that holds more, one more
            compiled shape each time. Defaults to `None`.
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
        out: a directory to write the results to instead of memory, one
            `.npy` file per output named after it (`y.npy`, `dy.npy`,
            `d2y.npy`, ...; with `partials`, `y.npy` and `<name>.npy`),
            created if missing. Existing files of those names are never
            overwritten: they are an error, before anything is computed
            and before a stream's first batch is read. Each file is
            written under a temporary name and given its name when all
            are complete, by a hard link that fails where the name was
            taken meanwhile (another writer): then none of this call's
            files keeps its name. (Without hard links, the name is first
            reserved as an empty file.) So an interrupted run leaves none
            under its final name (a killed process may leave hidden
            `.tmp-*` files). Output names must be portable file names
            (letters, digits, `_`, `.`, `-`; no `CON`, `NUL`, ...; none
            equal up to case). A stream's length need not be known, but
            an infinite one is an error. Defaults to `None`.
        verbose: `0` (silent), `1` (a progress bar: points of an array,
            batches of a stream), `2` (one line at the end), or `"auto"`:
            a progress bar when standard output is a terminal (or a
            notebook) and the run takes 16 chunks or more (for a stream, 16
            batches or more, or an unknown number). Defaults to `"auto"`.
        estimator: `None`, or `keras_deriv.Hutchinson(k)` to estimate the
            operators of `partials` from k random directions per chunk, as
            in `DerivativeModel`. With a `seed`, every call draws the same
            sequence of directions. Defaults to `None`.
        precision: `"default"` or `"highest"` (full float32 matmuls on
            GPUs), as in `DerivativeModel`. Defaults to `"default"`.

    Returns:
        For an array `x`: a tuple of `order + 1` arrays `(y, dy, d2y, ...)`
        with the shapes of `DerivativeModel`'s outputs; with `partials`, a
        dict `{"y": y, name: array}`, each of y's shape. For a stream: an
        iterator that yields that tuple (or dict) for each batch, computed
        when asked for, so no more than one batch's results are held. With
        `out`, for an array or a stream: that tuple (or dict) of all the
        results as read-only memory maps (`numpy.memmap`) of the files.

    Raises:
        ValueError: a bad option; `x` of the wrong shape, empty, or (with
            `out`) infinite; a batch of a stream of the wrong shape or
            width, or empty (the message names the batch, counting from 0).
        TypeError: integer points, a batch whose dtype differs from the
            first's, or `x` an iterable that is neither an array nor an
            iterator (pass `iter(x)`).
        FileExistsError: `out` names a file, or a directory that holds an
            output's file already (or does by the time the files are named).

    Not thread-safe: call it from one thread at a time per model (on JAX,
    two threads' first calls on one model fail inside Keras).

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

        Batches from a generator, results batch by batch, or to files:

        >>> import os, tempfile
        >>> batches = (x[i : i + 40] for i in range(0, 100, 40))
        >>> for y, dy, d2y in derivatives(net, batches, verbose=0):
        ...     print(d2y.shape)
        (40, 1, 1)
        (40, 1, 1)
        (20, 1, 1)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     y, dy, d2y = derivatives(net, x, out=folder, verbose=0)
        ...     print(type(d2y).__name__, d2y.shape, sorted(os.listdir(folder)))
        ...     del y, dy, d2y  # memory maps hold their files open
        memmap (100, 1, 1) ['d2y.npy', 'dy.npy', 'y.npy']
    """
    verbose = streaming.check_verbose(verbose)
    stream = streaming.is_stream(x)
    if not stream:
        streaming.refuse_batch_iterables(x)
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
    if not stream and len(x) == 0:
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
            ("estimator", check_estimator(estimator)),
            ("precision", check_choice("precision", precision, PRECISIONS)),
        )
    else:
        if variables is not None:
            raise ValueError(
                "derivatives(): variables= names the features partials= uses; "
                "without partials=, select features with wrt=."
            )
        if estimator is not None:
            raise ValueError(
                "derivatives(): estimator= estimates the operators named in "
                'partials=; pass them, e.g. partials={"lap": laplacian(d)}.'
            )
        order = check_order(order)
        options = (
            ("order", order),
            ("hessian", check_hessian(hessian, order)),
            ("method", check_method(method)),
            ("wrt", check_wrt(wrt)),
            ("smoothing", check_smoothing(smoothing)),
            ("precision", check_choice("precision", precision, PRECISIONS)),
        )
    if batch_size is not None:
        check_batch_size(batch_size)
    if not stream:
        evaluator = _cached_evaluator(model, x.shape[1], str(x.dtype), options, graph)
        evaluator.restart_draws()
        size = batch_size or min(len(x), evaluator.default_batch_size)
        chunks = math.ceil(len(x) / size)
        bar = streaming.progress_bar(verbose, len(x), chunks, unit="point")
        if out is None:
            return evaluator.pack(evaluator.evaluate(x, size, bar))
        paths = streaming.output_paths(out, evaluator.keys)
        pieces = _counted_in_points(evaluator.chunks(x, size), bar)
        return evaluator.pack(streaming.write_npy(paths, pieces))
    batches = streaming.PointBatches(x)  # reads nothing yet
    if out is not None and batches.infinite:
        raise ValueError(
            "derivatives(): x is an infinite stream, so out= would never be "
            "complete. Take a finite part, e.g. dataset.take(n)."
        )
    # out= checked before the first batch is read: an error leaves the
    # stream whole, to retry with. The output names do not depend on the
    # input width: an unbuilt layer knows them (and checks the options).
    paths = None
    if out is not None:
        keys = DerivativeModel(model, **dict(options)).output_keys
        paths = streaming.output_paths(out, keys)
    batches.read_first()
    if estimator is None:
        evaluator = _cached_evaluator(
            model, batches.width, str(batches.dtype), options, graph
        )
    else:  # its own draws: a lazy stream may be read while another call runs
        evaluator = Evaluator(model, batches.width, str(batches.dtype), **dict(options))
    bar = streaming.progress_bar(verbose, batches.count, batches.count, unit="batch")
    pieces = streaming.counted(
        streaming.evaluate_batches(evaluator, batches, batch_size), bar
    )
    if paths is None:
        return (evaluator.pack(values) for values in pieces)
    return evaluator.pack(streaming.write_npy(paths, pieces))


def _counted_in_points(chunks, bar):
    """The values of `Evaluator.chunks`, with the points done on `bar`."""
    for _, stop, values in chunks:
        if bar is not None:
            bar.update(stop)
        yield values


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
