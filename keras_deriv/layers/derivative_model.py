"""`DerivativeModel`: a model's output and its input derivatives as outputs."""

import copy
import math
import types
import warnings
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_deriv import backend
from keras_deriv.analysis import checks, curvature
from keras_deriv.backend.precision import PRECISIONS, matmul_precision
from keras_deriv.engines import (
    autodiff,
    interpolation,
    random_directions,
    select,
    smoothing,
    taylor,
)
from keras_deriv.errors import NotDifferentiableError, PrecisionWarning
from keras_deriv.estimators import check_estimator
from keras_deriv.graph.walk import KNOWN, MODEL, fingerprint, walk
from keras_deriv.layers.input_layout import InputLayout
from keras_deriv.layers.network_saving import network_entries, pop_network
from keras_deriv.options import (
    check_choice,
    check_hessian,
    check_method,
    check_order,
    check_smoothing,
    check_wrt,
    output_keys,
)
from keras_deriv.partials import check_partials, check_variables

Tensor = Any

_HALF = ("float16", "bfloat16")
# Frames a warning should not point at: the user's line is the first
# frame outside these.
_FRAMEWORK_FILES = (
    "/keras/",
    "/keras_deriv/",
    "/tensorflow/",
    "/jax/",
    "/jaxlib/",
    "/torch/",
    "/concurrent/",
    "/threading.py",
    "/contextlib.py",
    "/functools.py",
)


@keras.saving.register_keras_serializable(package="keras_deriv")
class DerivativeModel(keras.layers.Layer):
    """Wraps a model so that its outputs are `[y, dy/dx, d²y/dx², ...]`.

    The wrapped `model` (any Keras model or layer) maps a float input of
    shape `(batch, d)` to one tensor of shape `(batch, *out)`. Derivatives
    are taken with respect to the input, point by point: each row of the
    batch is differentiated on its own, so the wrapped model must treat the
    rows independently (true of all usual layers; not of `BatchNormalization`
    in training mode).

    Output shapes, with `d'` the number of differentiated features
    (`len(wrt)`, or `d`):

    | output | shape |
    |---|---|
    | `y` | `(batch, *out)` |
    | `dy` | `(batch, *out, d')`: the Jacobian |
    | `d2y`, `hessian="diagonal"` | `(batch, *out, d')`: ∂²y/∂x_i² |
    | `d2y`, `hessian="full"` | `(batch, *out, d', d')` |
    | `d2y`, `hessian="laplacian"` | `(batch, *out)`: Σ_i ∂²y/∂x_i² |
    | order k ≥ 3 | `(batch, *out, d')`: ∂ᵏy/∂x_iᵏ |

    The layer's weights are the wrapped model's, so a loss on any output
    trains the wrapped model through `model.fit`. All outputs of one layer
    share its name in a Functional model; to put losses on some of them,
    return a dict, e.g. `dict(zip(layer.output_keys, layer(x)))`, and key
    the losses by `"y"`, `"dy"`, `"d2y"`, ... A loss on derivatives only
    cannot reach the last layer's bias (it has no effect on them), so Keras
    warns that its gradient does not exist: add a loss on `y`, or ignore it.

    Args:
        model: the Keras model or layer to differentiate. Its input is a
            float tensor `(batch, d)`, its output one tensor.
        order: highest derivative order, an int from 1 to 4. Defaults to `2`
            (`None`).
        hessian: what the second derivative is: `"diagonal"` (pure partials
            ∂²y/∂x_i²), `"full"` (all ∂²y/∂x_i∂x_j) or `"laplacian"` (their
            trace). Orders 3 and 4 need `"diagonal"`. Defaults to
            `"diagonal"` (`None`).
        wrt: indices of the input features to differentiate with respect to
            (e.g. `[0]` for x of an input `(x, t)`), the others held fixed;
            `None` for all. Defaults to `None`.
        method: `"autodiff"` (the backend's nested automatic
            differentiation, works for any differentiable layer),
            `"taylor"` (forward propagation of Taylor coefficients through
            Sequential and Functional models of supported layers; an error
            names an unsupported one) or `"auto"` (the faster correct engine
            in our benchmarks: Taylor where supported, except autodiff for
            piecewise-linear nets and for full Hessians of more than 4
            inputs; Taylor wherever the backend's autodiff is known to be
            wrong, e.g. TensorFlow's second derivatives of
            LayerNormalization). Defaults to `"auto"`.
        smoothing: `None` for the exact derivatives, or a resolution σ (in
            input units) for the derivatives of the model smoothed by a
            Gaussian of width σ along each differentiated feature: for a
            ReLU network, whose exact second derivative is 0, the curvature
            of the function it represents at that resolution. Computed by
            64-node Gauss–Hermite quadrature over shifted copies of each
            point (1 + 64·d' evaluations of the model per point), from the
            model's values where it has kinks, else from its first
            derivatives; the quadrature is exact for polynomial integrands
            of degree below 128. The Laplacian sums the smoothed
            ∂²/∂x_i², and the full Hessian's (i, j) entry smooths ∂y/∂x_i
            along x_j, symmetrized (from first derivatives: a loss on it
            does not move a ReLU network's kinks; the diagonal and the
            Laplacian do). `y` stays exact; the other outputs are
            named `dy_smoothed`, `d2y_smoothed`, ... (`output_keys`).
            Defaults to `None`.
        partials: a dict from output name to what to compute instead of
            `[y, dy, ...]`: a multi-index of order 1 to 4 (a string of
            variable names such as `"t"`, `"xx"`, `"xt"`, `"xxyy"`, or a
            tuple of names or feature indices such as `("x", "t")` or
            `(0, 1)`), or a linear operator with constant coefficients (a
            dict from multi-index to number, e.g. `{"t": 1, "xx": -0.1}`).
            The layer then returns a dict `{"y": y, name: ...}`, every entry
            of y's shape, keyed like the losses in `fit`. Mixed partials
            are interpolated from derivatives along a few directions.
            Cannot be combined with `order`, `hessian`, `wrt` or
            `smoothing`. Defaults to `None`.
        variables: names for the input features that `partials` refers to:
            a string of one-letter names in feature order (`"xt"`) or a list
            of names; features without a name are held fixed. Defaults to
            `None` (refer to features by index).
        estimator: `None` for exact operators, or `keras_deriv.Hutchinson(k)`
            to estimate every operator of `partials` (of order at most two:
            the Laplacian, `Σ a_ij ∂_i∂_j + Σ b_i ∂_i`) from k random
            directions drawn at each call: unbiased, its variance falling as
            1/k, its cost independent of the number of input features. For
            PDEs in hundreds or thousands of dimensions. Defaults to `None`.
        precision: `"default"` (float32 matmuls as the framework is set) or
            `"highest"`: full float32 matmuls for this layer's computation
            on GPUs, where TF32 matmuls (JAX's default) cost second
            derivatives about three digits. On JAX it holds for this
            layer's matmuls in the compiled step and for their gradients
            (the rest of the model keeps your setting); on PyTorch for the
            layer's forward computation; TensorFlow has only a process-wide
            switch, so there it is an error while TF32 is on and a GPU is
            visible (the message says how to turn it off). No effect on
            CPUs. Defaults to `"default"`.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor `(batch, d)`. A single feature needs its axis:
            `x.reshape(-1, 1)`, not `x` of shape `(batch,)`.

    Call returns:
        A list of `order + 1` tensors `[y, dy, d2y, ...]`, shaped as above;
        with `partials`, a dict `{"y": y, name: ...}` of tensors of y's
        shape.

    Warns:
        ZeroCurvatureWarning: once, at build, when order ≥ 2 is requested
            from a piecewise-linear network (e.g. ReLU activations only),
            whose second derivative is identically zero.

    Raises:
        ValueError: bad `order`, `hessian`, `method` or `wrt`, or an input
            of the wrong rank.
        TypeError: an integer input.
        NotDifferentiableError: a layer of `model` cuts the derivative
            (`Embedding`, `argmax`, `stop_gradient`, ...).

    Examples:
        >>> import numpy as np, keras
        >>> from keras_deriv import DerivativeModel
        >>> net = keras.Sequential([keras.Input((1,)),
        ...                         keras.layers.Dense(16, activation="tanh"),
        ...                         keras.layers.Dense(1)])
        >>> y, dy, d2y = DerivativeModel(net, order=2)(np.ones((5, 1), "float32"))
        >>> tuple(d2y.shape)
        (5, 1, 1)
    """

    def __init__(
        self,
        model: keras.layers.Layer,
        order: int | None = None,
        hessian: str | None = None,
        wrt: list[int] | None = None,
        method: str = "auto",
        smoothing: float | None = None,
        partials: dict | None = None,
        variables: str | list[str] | None = None,
        estimator: Any = None,
        precision: str = "default",
        **kwargs: Any,
    ):
        backend.get()  # fail at construction on a backend without autodiff
        # The input keeps its dtype: the layer decides the derivatives'
        # dtype from the wrapped model's (Keras would cast float64 to the
        # policy's float32 on the way in).
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if not isinstance(model, keras.layers.Layer):
            raise TypeError(
                "DerivativeModel wraps a Keras model or layer; got "
                f"{type(model).__name__}. Wrap plain functions in a "
                "keras.layers.Layer subclass."
            )
        self.wrt = check_wrt(wrt)
        self.method = check_method(method)
        self.smoothing = check_smoothing(smoothing)
        self._layout = None
        if isinstance(variables, dict) or len(_model_inputs(model)) > 1:
            self._layout = InputLayout(model, variables)
        self.partials = None
        self.partial_variables = variables  # Keras's Layer.variables is taken
        self.estimator = check_estimator(estimator)
        self.precision = check_choice("precision", precision, PRECISIONS)
        if self.estimator is not None:
            if partials is None:
                raise ValueError(
                    "`estimator` estimates the operators named in `partials`; "
                    'pass them, e.g. partials={"lap": keras_deriv.laplacian(d)}.'
                )
            # Its state is a variable of this layer: saved with the model,
            # and threaded through JAX's stateless training steps.
            self.seed_generator = keras.random.SeedGenerator(self.estimator.seed)
        if partials is not None:
            self._set_partials(partials, variables, order, hessian, wrt, smoothing)
        else:
            if variables is not None and not isinstance(variables, dict):
                raise ValueError(
                    "`variables` names the features that `partials` refers to; "
                    "pass `partials` too, or `wrt` to pick features by index."
                )
            self.order = check_order(2 if order is None else order)
            self.hessian = check_hessian(
                "diagonal" if hessian is None else hessian, self.order
            )
        self.model = model
        self._connection_checked = False
        self._engine = None
        # Custom activations are probed numerically: do it here, where
        # execution is eager, not in a build inside a traced function.
        curvature.judge_activations(walk(model, read_config=False))

    def _set_partials(self, partials, variables, order, hessian, wrt, smoothing):
        given = [
            name
            for name, value in (
                ("order", order),
                ("hessian", hessian),
                ("wrt", wrt),
                ("smoothing", smoothing),
            )
            if value is not None
        ]
        if given:
            raise ValueError(
                f"`partials` names every derivative to compute; it cannot be "
                f"combined with {', '.join(f'`{g}`' for g in given)}. Put the "
                'orders in the multi-indices instead, e.g. {"u_xx": "xx"}.'
            )
        if self._layout is not None:
            names, width = self._layout.names, self._layout.width
        else:
            names, width = check_variables(variables, None), None
        self._named = check_partials(partials, names, width, _allowed(names))
        self.partials = partials
        self.order = self._named.max_order
        self.hessian = "diagonal"

    @property
    def output_keys(self) -> tuple[str, ...]:
        """Names of the outputs in order: `("y", "dy", "d2y", ...)`,
        `("y", "dy_smoothed", "d2y_smoothed", ...)` with `smoothing`, or
        `("y", *partials)` with `partials`."""
        if self.partials is not None:
            return ("y", *self._named.names)
        return output_keys(self.order, self.smoothing)

    @property
    def engine(self) -> str | None:
        """The engine that computes the derivatives, `"taylor"` or
        `"autodiff"`, once the layer is built (None before)."""
        return self._engine

    @property
    def curvature(self) -> str | None:
        """What keras_deriv proved about the wrapped model's curvature, once
        built: `"piecewise_linear"`, `"affine"`, `"curved"` or `"unknown"`
        (see `keras_deriv.curvature_verdict`)."""
        return getattr(self, "_verdict", None)

    # -- shapes and dtypes ----------------------------------------------------

    def _check_input_shape(self, input_shape):
        if self._layout is not None:  # checked in InputLayout.flat
            return (None, self._layout.width)
        input_shape = tuple(input_shape)
        if len(input_shape) != 2:
            hint = (
                " For one feature, add its axis: x.reshape(-1, 1) or "
                "keras.ops.expand_dims(x, -1)."
                if len(input_shape) == 1
                else " Flatten the features to one axis first."
            )
            raise ValueError(
                f"DerivativeModel {self.name!r} expects inputs of shape "
                f"(batch, d); got shape {input_shape}.{hint}"
            )
        d = input_shape[-1]
        if d is None:
            raise ValueError(
                f"DerivativeModel {self.name!r} needs the number of input "
                f"features to be known; got shape {input_shape}."
            )
        if self.wrt is not None and max(self.wrt) >= d:
            raise ValueError(
                f"`wrt`={list(self.wrt)} names a feature beyond the input's "
                f"{d} features (valid indices: 0 to {d - 1})."
            )
        return input_shape

    def _check_input_dtype(self, dtype):
        dtype = keras.backend.standardize_dtype(dtype)
        if not keras.backend.is_float_dtype(dtype):
            raise TypeError(
                f"DerivativeModel {self.name!r} got an input of dtype {dtype}; "
                "derivatives need a float input. Cast it first, e.g. "
                "x.astype('float32') or keras.ops.cast(x, 'float32')."
            )
        return dtype

    def _inner_output(self, input_shape, dtype):
        """The wrapped model's output `(shape, dtype)` for this input."""
        if self._layout is not None:
            spec = self.model.compute_output_spec(self._layout.specs(dtype))
        else:
            spec = self.model.compute_output_spec(keras.KerasTensor(input_shape, dtype))
        outputs = keras.tree.flatten(spec)
        if len(outputs) != 1:
            raise ValueError(
                f"DerivativeModel wraps a model with one output tensor; "
                f"{self.model.name!r} returns {len(outputs)} "
                f"({keras.tree.map_structure(lambda t: t.shape, spec)}). Wrap "
                "each output in its own model."
            )
        return tuple(outputs[0].shape), keras.backend.standardize_dtype(
            outputs[0].dtype
        )

    def derivative_dtype(self, input_dtype: str = "float32") -> str:
        """The dtype of every output for inputs of `input_dtype`: float64
        where the wrapped model computes in float64, else float32 (also
        under a mixed precision policy, whose variables are float32)."""
        if not self.built:
            return "float32"
        if input_dtype not in self._dtypes:
            shape = (None, *self._input_shape[1:])
            _, dtype = self._inner_output(shape, input_dtype)
            wide = dtype == "float64" and checks.float64_available()
            self._dtypes[input_dtype] = "float64" if wide else "float32"
        return self._dtypes[input_dtype]

    def build(self, input_shape: tuple) -> None:
        input_shape = self._check_input_shape(input_shape)
        if self.partials is not None:
            width = input_shape[-1]
            if self._layout is not None:
                variables = self._layout.names
            else:
                variables = check_variables(self.partial_variables, width)
            self._named = check_partials(
                self.partials, variables, width, _allowed(variables)
            )
            if self.estimator is not None:
                self._plan = random_directions.RandomPlan(
                    self._named.terms, width, self.estimator, self._named.names
                )
            else:
                self._plan = interpolation.Plan(self._named.terms, width)
        if not self.model.built:
            self.model.build(input_shape)
        self._input_shape = input_shape
        self._analyse()
        self.built = True

    def _analyse(self):
        """Walk the wrapped model once and decide everything that depends
        on its structure: checks, verdict, engine. Done again if the model
        is edited in place (a swapped activation, `pop`, `quantize`)."""
        graph = walk(self.model)
        self._fingerprint = None  # set once every check below has passed
        self._out_shape = None  # known at the first call
        self._dtypes = {}
        self._connection_checked = False
        checks.raise_if_static_cut(graph)
        self._verdict = curvature.graph_verdict(graph)
        # Kinks (ReLU and kin): first derivatives piecewise constant in the
        # weights, so smoothing uses the values (engines/smoothing.py).
        self._kinked = self._verdict != curvature.CURVED or bool(
            curvature.findings_of(graph)
        )
        if (
            self._verdict == curvature.PIECEWISE_LINEAR
            and self.order >= 2
            and self.smoothing is None
        ):
            curvature.warn_zero_curvature(self.model, graph, stacklevel=self._stack())
        self._taylor_gap = taylor.taylor_gap(graph)
        self._defect = checks.autodiff_defect(graph, self.order)
        self._graph = graph
        directions = len(self._features())
        estimated = self.estimator is not None
        if estimated:
            directions = self._plan.count
        elif self.partials is not None:
            directions = len(self._plan.directions)
        self._engine = select.choose_engine(
            self.method,
            taylor_gap=self._taylor_gap,
            defect=self._defect,
            verdict=self._verdict,
            order=self.order,
            hessian=self.hessian,
            directions=directions,
            model_name=self.model.name,
            named=0 if self.partials is None or estimated else self._plan.order,
            autodiff_passes=None if estimated else self._autodiff_passes(),
        )
        self._fingerprint = fingerprint(self.model)
        half = sorted(
            {
                step.path
                for step in graph.all_steps()
                if getattr(step.layer, "compute_dtype", None) in _HALF
            }
        )
        if half:
            warnings.warn(
                f"Layers of {self.model.name!r} compute in float16/bfloat16 "
                f"(a mixed precision policy: {', '.join(half[:3])}"
                f"{', ...' if len(half) > 3 else ''}). keras_deriv returns "
                "float32 derivatives. The Taylor engine computes them in "
                "float32; the autodiff engine at the layers' precision, which "
                "we measured costs ~4e-3 (float16) to ~4e-2 (bfloat16) relative "
                "error in d2y. See the DerivativeModel guide, 'Dtypes'.",
                PrecisionWarning,
                stacklevel=self._stack(),
            )

    @staticmethod
    def _stack():
        """A stacklevel that points the warning at the user's line, past
        Keras's `__call__` and build machinery."""
        import inspect

        frame, level = inspect.currentframe().f_back, 1
        while frame is not None:
            name = frame.f_code.co_filename.replace("\\", "/")
            if not any(part in name for part in _FRAMEWORK_FILES):
                return level
            frame, level = frame.f_back, level + 1
        return 2

    def compute_output_shape(self, input_shape: tuple) -> list[tuple] | dict:
        input_shape = self._check_input_shape(input_shape)
        out, _ = self._inner_output(input_shape, "float32")
        return self._shapes(input_shape, out)

    def _shapes(self, input_shape, out):
        if self.partials is not None:  # every derivative has y's shape
            return {key: tuple(out) for key in self.output_keys}
        batch, out = out[0], out[1:]
        if self._layout is not None:
            d = len(self.wrt or self._layout.differentiated)
        else:
            d = len(self.wrt) if self.wrt is not None else input_shape[-1]
        shapes = [(batch, *out), (batch, *out, d)]
        if self.order >= 2:
            shapes.append(
                {
                    "diagonal": (batch, *out, d),
                    "full": (batch, *out, d, d),
                    "laplacian": (batch, *out),
                }[self.hessian]
            )
        shapes += [(batch, *out, d)] * (self.order - 2)
        return shapes

    def compute_output_spec(self, inputs: Tensor) -> list[keras.KerasTensor]:
        dtype = self._input_dtype(inputs)
        shape = None if self._layout is not None else inputs.shape
        input_shape = self._check_input_shape(shape)
        out, out_dtype = self._inner_output(input_shape, dtype)
        wide = out_dtype == "float64" and checks.float64_available()
        result = "float64" if wide else "float32"
        shapes = self._shapes(input_shape, out)
        if isinstance(shapes, dict):
            return {k: keras.KerasTensor(s, dtype=result) for k, s in shapes.items()}
        return [keras.KerasTensor(shape, dtype=result) for shape in shapes]

    # -- computation --------------------------------------------------------

    def _check_connected(self, x):
        if self._connection_checked:
            return
        # A stateless scope keeps stateful layers (dropout's seed) from
        # updating their state, or leaking a tracer, in this extra call. It
        # maps each variable to its current value: inside Keras's JAX loops
        # the variables themselves hold no value, only the outer scope does.
        current = [(v, v.value) for v in self.model.variables]
        with keras.StatelessScope(state_mapping=current):
            connected = backend.get().depends_on_input(self._output_of, x)
        if not connected:
            self._raise_not_connected(x)
        self._connection_checked = True

    def _output_of(self, x, **kwargs):
        """The wrapped model's one output tensor (a dict or list of one
        tensor, as `keras.Model(x, {"u": u})` returns, is unwrapped)."""
        if self._layout is not None:
            x = self._layout.unflat(x)
        (y,) = keras.tree.flatten(self.model(x, **kwargs))
        return y

    def _raise_not_connected(self, x, cause=None):
        culprit = None if self._layout else checks.dynamic_cut(self.model, x)
        where = f" at layer {culprit!r}" if culprit else ""
        raise NotDifferentiableError(
            f"The output of {self.model.name!r} does not depend differentiably "
            f"on its input{where}: something on the path cuts the derivative "
            "(stop_gradient, argmax, round, a cast to an integer dtype, a "
            "lookup). Remove it from the wrapped model or move it after the "
            "DerivativeModel."
        ) from cause

    def _autodiff_passes(self):
        if self.partials is None:
            return None
        shape, _ = self._inner_output(self._input_shape, "float32")
        components = math.prod(s for s in shape[1:] if s is not None)
        return autodiff.passes(self._plan.terms, components)

    def _check_random_masks(self, training):
        masks = checks.random_masks(self._graph, training)
        if not masks:
            return self._engine
        path, why = masks[0]
        if self.smoothing is not None:
            raise ValueError(
                f"Layer {path!r} of {self.model.name!r} may draw random masks "
                f"or noise in this call ({why}). Smoothed derivatives average "
                "the network over shifted copies of each point, which would "
                "each draw their own: call the DerivativeModel with "
                "training=False, or use smoothing=None."
            )
        taylor_can = self._taylor_gap is None and "could not be read" not in why
        if taylor_can and (self._engine == "taylor" or self.method != "autodiff"):
            return "taylor"  # one mask per point for every coefficient
        if self.method == "autodiff":
            engine = (
                'method="autodiff" may evaluate each point more than once, '
                "each time with its own draw"
            )
        elif "could not be read" in why:
            engine = "keras_deriv cannot tell whether it is active"
        else:
            engine = (
                "the Taylor engine, which shares one draw, cannot take this "
                f"model: {self._taylor_gap}"
            )
        raise ValueError(
            f"Layer {path!r} of {self.model.name!r} may draw random masks or "
            f"noise in this call ({why}), and the derivatives of a point must "
            f"be those of one random function, which cannot be guaranteed "
            f"here: {engine}. Call the DerivativeModel with training=False, "
            'or use method="auto" with layers the Taylor engine supports.'
        )

    def _warn_smoothing_precision(self):
        # The k-th smoothed derivative weighs the network's values (or first
        # derivatives) by ~1/σᵏ (or 1/σ^(k-1)): the float32 unit, ~1e-7,
        # grows by that much. Past ~1e4 it is a visible error.
        if getattr(self, "_smoothing_checked", False):
            return
        self._smoothing_checked = True
        power = self.order if self._kinked else self.order - 1
        if self.smoothing**-power <= 1e4:
            return
        warnings.warn(
            f"Smoothed derivatives of order {self.order} at σ = {self.smoothing:g} "
            f"in float32: their quadrature weights scale as 1/σ^{power}, which "
            f"amplifies float32 rounding (~1e-7) by ~{self.smoothing**-power:.0e}. "
            "Use a larger σ, or float64 inputs and model.",
            PrecisionWarning,
            stacklevel=self._stack(),
        )

    def _warn_float64_limits(self):
        if getattr(self, "_float64_checked", False):
            return
        self._float64_checked = True
        lossy = checks.float64_lossy_ops()
        if lossy:
            names = ", ".join(f"ops.{name}" for name in lossy)
            warnings.warn(
                f"On the {keras.backend.backend()} backend, Keras computes "
                f"{names} of float64 values in float32. Derivatives of "
                f"{self.model.name!r} are float64 arrays, but where the model "
                "uses those operations they are only float32-accurate. "
                "TensorFlow computes them in float64.",
                PrecisionWarning,
                stacklevel=self._stack(),
            )

    def _check_output_shape(self, shape):
        if self._out_shape is None:
            expected = self._inner_output(self._input_shape, "float32")[0][1:]
            self._out_shape = tuple(expected)
        if tuple(shape) != self._out_shape:
            raise ValueError(
                f"{self.model.name!r} returned per-point outputs of shape "
                f"{tuple(shape)}, but Keras infers {self._out_shape} for it "
                "(its compute_output_shape is wrong: e.g. Dense(activation="
                "'glu') halves the features). Derivatives would mix points. "
                "Put such an activation in its own Activation layer, or fix "
                "the layer's compute_output_shape."
            )

    def call(self, inputs: Tensor, training: bool | None = None) -> list[Tensor]:
        with matmul_precision(keras.backend.backend(), self.precision):
            return self._derivatives(inputs, training)

    def _derivatives(self, inputs, training):
        input_dtype = self._input_dtype(inputs)
        if fingerprint(self.model) != self._fingerprint:
            self._analyse()  # the model was edited in place since
        dtype = self.derivative_dtype(input_dtype)
        if dtype == "float64":
            self._warn_float64_limits()
        if self._layout is not None:
            x = self._layout.flat(inputs, dtype)
        else:
            self._check_input_shape(inputs.shape)
            x = ops.cast(inputs, dtype)
        if self.smoothing is not None and dtype == "float32":
            self._warn_smoothing_precision()
        self._check_connected(x)
        checks.raise_if_batch_dependent(self._graph, training)
        engine = self._check_random_masks(training)
        wrt = self._features()
        if self.partials is not None:
            return self._named_partials(x, training, engine, dtype)
        if self.smoothing is None:
            levels = self._levels(x, self.order, self.hessian, wrt, training, engine)
        else:
            network = types.SimpleNamespace(
                value=lambda z: self._flat_output(z, training, dtype),
                along=lambda z, v: self._along(z, v, training, engine),
                jacobian=lambda z: self._levels(
                    z, 1, "diagonal", wrt, training, engine
                ),
            )
            levels = smoothing.derivatives(
                network,
                x,
                self.smoothing,
                self.order,
                self.hessian,
                wrt,
                value_form=self._kinked,
            )
        return self._unflatten(levels, dtype)

    def _input_dtype(self, inputs):
        """The dtype the inputs are differentiated in (a float one)."""
        if self._layout is None:
            return self._check_input_dtype(inputs.dtype)
        tensors = keras.tree.flatten(inputs)
        if isinstance(inputs, dict):
            tensors = [inputs.get(slot.name) for slot in self._layout.slots]
        dtypes = []
        for slot, t in zip(self._layout.slots, tensors, strict=False):
            if t is None:  # InputLayout.flat names what is missing
                continue
            moved = any(
                slot.offset <= p < slot.offset + slot.size
                for p in self._layout.differentiated
            )
            if moved:
                dtypes.append(self._check_input_dtype(t.dtype))
        return "float64" if dtypes and set(dtypes) == {"float64"} else "float32"

    def _features(self):
        """The flat feature indices differentiated (`wrt` resolved)."""
        if self._layout is None:
            if self.wrt is not None:
                return self.wrt
            return tuple(range(self._input_shape[-1]))
        features = self._layout.differentiated
        if self.wrt is None:
            return tuple(features)
        if max(self.wrt) >= len(features):
            raise ValueError(
                f"`wrt`={list(self.wrt)} names a feature beyond the {len(features)} "
                "differentiated ones (wrt indexes the differentiated inputs' "
                "features, side by side)."
            )
        return tuple(features[i] for i in self.wrt)

    def _flat_output(self, z, training, dtype):
        """The wrapped model's output at `z`, `(B, m)`."""
        y = self._output_of(z, training=training)
        self._check_output_shape(y.shape[1:])
        return ops.reshape(ops.cast(y, dtype), (-1, math.prod(self._out_shape)))

    def _along(self, z, v, training, engine):
        """`(y, dy)` `(B, m)`: the derivative of each row along its own `v`."""
        if engine == "taylor" and self._layout is None:
            try:
                y, dy, shape = taylor.along(self._graph, z, v, training)
            except taylor.Unsupported:  # as _levels: the autodiff engine takes it
                shape = None
            if shape is not None:
                self._check_output_shape(shape)
                return y, dy
        return autodiff.along(lambda u: self._flat_output(u, training, z.dtype), z, v)

    def _named_partials(self, x, training, engine, dtype):
        """`{"y": y, name: partial or operator}`, each of y's shape."""
        if self.estimator is not None:
            values = self._estimate(x, training, engine)
        else:
            values = self._levels(
                x, self._plan.order, "diagonal", None, training, engine, self._plan
            )
        return dict(zip(self.output_keys, self._unflatten(values, dtype), strict=True))

    def _draw(self, shape, dtype):
        """Random ε `shape` with E[ε εᵀ] = I per row, from this layer's seed
        generator (or the fixed seed, for `resample=False`)."""
        seed = self.seed_generator
        if not self.estimator.resample:
            seed = self.estimator.seed
        if self.estimator.distribution == "gaussian":
            return keras.random.normal(shape, dtype=dtype, seed=seed)
        bits = keras.random.randint(shape, 0, 2, seed=seed)
        return 2.0 * ops.cast(bits, dtype) - 1.0

    def _estimate(self, x, training, engine):
        """`[y, *outputs]` of an estimated plan, each `(B, m)`."""
        plan, dtype = self._plan, x.dtype
        directions = plan.directions(lambda shape: self._draw(shape, dtype), dtype)
        weights = plan.weights
        if engine == "taylor":
            try:
                levels, shape = taylor.derivatives(
                    self._graph,
                    x,
                    plan.order,
                    "diagonal",
                    None,
                    training,
                    directions,
                    weights,
                    None if self._layout is None else self._layout.slots,
                    plan.support,
                )
                self._check_output_shape(shape)
                second = levels[2] if plan.order == 2 else None
                if second is not None and len(second.shape) == 2:
                    second = ops.expand_dims(second, -1)  # one plain sum
                return [levels[0], *plan.combine(levels[1], second)]
            except taylor.Unsupported as why:
                self._refuse_autodiff_fallback(why)

        def f(z):
            y = self._output_of(z, training=training)
            self._check_output_shape(y.shape[1:])
            return ops.reshape(ops.cast(y, dtype), (-1, math.prod(self._out_shape)))

        try:
            y, first, second = autodiff.along_directions(f, x, directions)
        except NotDifferentiableError as err:
            self._raise_not_connected(x, cause=err)
        if plan.order == 2:
            w = ops.convert_to_tensor(weights, dtype)
            second = ops.einsum("bmr,qr->bmq", second, w)
        else:
            second = None
        return [y, *plan.combine(first, second)]

    def _levels(self, x, order, hessian, wrt, training, engine, plan=None):
        """`[y, dy, ...]` at `x` by `engine`, flattened to `(B, m, ...)`;
        with a `plan` of named partials, `[y, *outputs]`, each `(B, m)`."""
        dtype = x.dtype
        if engine == "taylor":
            scheme = None if plan is None else plan.taylor
            directions, collapse = None, None
            if scheme is not None:
                directions, collapse = scheme.directions, scheme.collapse
            try:
                slots = None if self._layout is None else self._layout.slots
                levels, shape = taylor.derivatives(
                    self._graph,
                    x,
                    order,
                    hessian,
                    wrt,
                    training,
                    directions,
                    collapse,
                    slots,
                )
                self._check_output_shape(shape)
                if scheme is None:
                    return levels
                return [levels[0], *scheme.combine(levels, collapse is not None)]
            except taylor.Unsupported as why:  # known only at call time
                self._refuse_autodiff_fallback(why)

        def f(z):
            y = self._output_of(z, training=training)
            self._check_output_shape(y.shape[1:])
            return ops.reshape(ops.cast(y, dtype), (-1, math.prod(self._out_shape)))

        piecewise = self._verdict == curvature.PIECEWISE_LINEAR
        try:
            if plan is not None:
                return autodiff.named(f, x, plan.terms)
            return autodiff.derivatives(
                f,
                x,
                order,
                hessian,
                wrt,
                piecewise_linear=piecewise,
                jet=self._traceable_once(),
            )
        except NotDifferentiableError as err:
            self._raise_not_connected(x, cause=err)

    def _traceable_once(self):
        """Whether the model may be traced once and replayed (a JAX jet):
        only registered layers and models of them, no custom, wrapper or
        opaque layer, which is where updates of a layer's own state (e.g.
        `SpectralNormalization` in training) live."""
        return all(s.kind in (KNOWN, MODEL) for s in self._graph.all_steps())

    def _refuse_autodiff_fallback(self, why):
        """The Taylor engine gave up at call time (`why`): an error where
        the autodiff engine may not take over (`method="taylor"`, or a
        backend defect in the model), else nothing."""
        if self.method == "taylor":
            raise select.taylor_error(self.model.name, why) from None
        if self._defect is not None:
            raise select.defect_error(
                self.model.name,
                self._defect,
                f"The Taylor engine cannot take it: {why}.",
            ) from None

    def _unflatten(self, levels, dtype):
        # Trailing axes beyond (B, m) are the derivative axes: () for y and
        # the Laplacian, (d,) or (d, d) for the others.
        return [
            ops.cast(ops.reshape(t, (-1, *self._out_shape, *t.shape[2:])), dtype)
            for t in levels
        ]

    # -- saving -------------------------------------------------------------

    # Keras saves no seed generator's state (a Dropout's is not): the
    # estimator's is saved here, so a resumed run continues its draws.
    _SEED_STATE = "estimator_seed_state"

    def save_own_variables(self, store):
        super().save_own_variables(store)
        if self.estimator is not None:
            store[self._SEED_STATE] = self.seed_generator.state

    def load_own_variables(self, store):
        keys = list(store.keys())
        if self._SEED_STATE in keys:
            if self.estimator is not None:
                self.seed_generator.state.assign(np.asarray(store[self._SEED_STATE]))
            store = {k: store[k] for k in keys if k != self._SEED_STATE}
        super().load_own_variables(store)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                **network_entries(self.model),
                "order": self.order if self.partials is None else None,
                "hessian": self.hessian if self.partials is None else None,
                "wrt": list(self.wrt) if self.wrt is not None else None,
                "method": self.method,
                "smoothing": self.smoothing,
                "partials": _json_partials(self.partials),
                "variables": self.partial_variables,
                "estimator": None
                if self.estimator is None
                else self.estimator.get_config(),
                "precision": self.precision,
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "DerivativeModel":
        config = copy.deepcopy(config)
        model = pop_network(config, config.get("name", "?"))
        return cls(model, **config)


def _json_partials(partials):
    """`partials` as JSON keeps it: multi-indices as strings or lists, an
    operator as a list of `[multi-index, coefficient]` pairs (its keys may
    be tuples, which JSON objects cannot hold)."""
    if partials is None:
        return None

    def index(spec):
        return list(spec) if isinstance(spec, tuple) else spec

    return {
        name: (
            [[index(k), c] for k, c in spec.items()]
            if isinstance(spec, dict)
            else index(spec)
        )
        for name, spec in partials.items()
    }


def _model_inputs(model):
    try:
        return keras.tree.flatten(getattr(model, "inputs", None) or [])
    except (AttributeError, ValueError):
        return []


def _allowed(names):
    """Features a multi-index may name by index: the named ones, when any
    are named (the others are held fixed); all, when none are."""
    return set(names) if names else None
