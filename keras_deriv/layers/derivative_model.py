"""`DerivativeModel`: a model's output and its input derivatives as outputs."""

import copy
import math
from typing import Any

import keras
from keras import ops

from keras_deriv import backend, curvature, differentiability
from keras_deriv.engines import autodiff, taylor
from keras_deriv.errors import NotDifferentiableError
from keras_deriv.options import (
    OUTPUT_KEYS,
    check_hessian,
    check_method,
    check_order,
    check_wrt,
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
        order: highest derivative order, an int from 1 to 4. Defaults to `2`.
        hessian: what the second derivative is: `"diagonal"` (pure partials
            ∂²y/∂x_i²), `"full"` (all ∂²y/∂x_i∂x_j) or `"laplacian"` (their
            trace). Orders 3 and 4 need `"diagonal"`. Defaults to
            `"diagonal"`.
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
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor `(batch, d)`. A single feature needs its axis:
            `x.reshape(-1, 1)`, not `x` of shape `(batch,)`.

    Call returns:
        A list of `order + 1` tensors `[y, dy, d2y, ...]`, shaped as above.

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
        order: int = 2,
        hessian: str = "diagonal",
        wrt: list[int] | None = None,
        method: str = "auto",
        **kwargs: Any,
    ):
        backend.get()  # fail at construction on a backend without autodiff
        super().__init__(**kwargs)
        if not isinstance(model, keras.layers.Layer):
            raise TypeError(
                "DerivativeModel wraps a Keras model or layer; got "
                f"{type(model).__name__}. Wrap plain functions in a "
                "keras.layers.Layer subclass."
            )
        self.order = check_order(order)
        self.hessian = check_hessian(hessian, self.order)
        self.wrt = check_wrt(wrt)
        self.method = check_method(method)
        self.model = model
        self._connection_checked = False

    @property
    def output_keys(self) -> tuple[str, ...]:
        """Names of the outputs in order: `("y", "dy", "d2y", ...)`."""
        return OUTPUT_KEYS[: self.order + 1]

    # -- shapes -------------------------------------------------------------

    def _check_input_shape(self, input_shape):
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

    def _inner_output_shape(self, input_shape):
        try:
            out = self.model.compute_output_shape(input_shape)
        except NotImplementedError:
            spec = self.model.compute_output_spec(
                keras.KerasTensor(input_shape, dtype=self.compute_dtype)
            )
            out = keras.tree.map_structure(lambda t: t.shape, spec)
        if not (
            isinstance(out, tuple | list)
            and all(s is None or isinstance(s, int) for s in out)
        ):
            raise ValueError(
                f"DerivativeModel wraps a model with one output tensor; "
                f"{self.model.name!r} returns several ({out}). Wrap each "
                "output in its own model."
            )
        return tuple(out)

    def build(self, input_shape):
        input_shape = self._check_input_shape(input_shape)
        if not self.model.built:
            self.model.build(input_shape)
        self._out_shape = self._inner_output_shape(input_shape)[1:]
        differentiability.raise_if_static_cut(self.model)
        zero_curvature = curvature.has_identically_zero_curvature(self.model)
        if zero_curvature and self.order >= 2:
            curvature.warn_if_zero_curvature(self.model, stacklevel=3)
        try:
            taylor.check_supported(self.model, self.order, self.hessian)
            taylor_gap = None
        except taylor.Unsupported as why:
            taylor_gap = why
        self._defect = differentiability.autodiff_defect(self.model, self.order)
        # Skipping the higher derivatives needs certainty: only for models
        # whose every layer the Taylor engine knows (no wrapper, no custom
        # layer or activation that the verdict could misjudge).
        self._piecewise_linear = (
            zero_curvature and self.order >= 2 and taylor_gap is None
        )
        directions = len(self.wrt) if self.wrt is not None else input_shape[-1]
        self._engine = self._choose_engine(taylor_gap, zero_curvature, directions)
        self.built = True

    def _choose_engine(self, taylor_gap, zero_curvature, directions):
        defect = self._defect
        if self.method == "autodiff":
            if defect is not None:
                raise self._defect_error(defect, 'Use method="taylor" or "auto".')
            return "autodiff"
        if taylor_gap is not None:
            if self.method == "taylor":
                raise self._taylor_error(taylor_gap)
            if defect is not None:
                raise self._defect_error(
                    defect,
                    "The Taylor engine, which has no such defect, cannot take "
                    f"this model either: {taylor_gap}.",
                )
            return "autodiff"
        if self.method == "taylor" or defect is not None:
            return "taylor"
        faster = self._taylor_is_faster(zero_curvature, directions)
        return "taylor" if faster else "autodiff"

    def _taylor_is_faster(self, zero_curvature, directions):
        """`method="auto"`, from benchmarks/peers.py and overhead.py (docs'
        Performance page): the forward Laplacian beats nested autodiff 1.3-3x
        on every backend; pure partials of smooth nets are 5-15% faster by
        Taylor; a full Hessian by forward propagation costs d'(d'+1)/2
        coefficients per unit (faster at d' = 3, 2x slower at d' = 10); and
        for piecewise-linear nets, whose second derivative is known to be
        zero, the reverse pass is the cheaper one (1.4x)."""
        if self.order >= 2 and self.hessian == "laplacian":
            return True
        if self.order >= 2 and self.hessian == "full":
            return directions <= 4
        return not zero_curvature

    def _defect_error(self, defect, fix):
        path, reason = defect
        return ValueError(
            f"The autodiff engine would compute wrong derivatives for layer "
            f"{path!r} of {self.model.name!r}: {reason}. {fix}"
        )

    def _taylor_error(self, why):
        return ValueError(
            f'method="taylor" cannot differentiate {self.model.name!r}: {why}. '
            'Use method="auto", which falls back to autodiff.'
        )

    def compute_output_shape(self, input_shape):
        input_shape = self._check_input_shape(input_shape)
        out = self._inner_output_shape(input_shape)
        batch, out = out[0], out[1:]
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

    def compute_output_spec(self, inputs):
        self._check_input_dtype(inputs.dtype)
        return [
            keras.KerasTensor(shape, dtype=self.compute_dtype)
            for shape in self.compute_output_shape(inputs.shape)
        ]

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
            connected = backend.get().depends_on_input(self.model, x)
        if not connected:
            self._raise_not_connected(x)
        self._connection_checked = True

    def _raise_not_connected(self, x, cause=None):
        culprit = differentiability.dynamic_cut(self.model, x)
        where = f" at layer {culprit!r}" if culprit else ""
        raise NotDifferentiableError(
            f"The output of {self.model.name!r} does not depend differentiably "
            f"on its input{where}: something on the path cuts the derivative "
            "(stop_gradient, argmax, round, a cast to an integer dtype, a "
            "lookup). Remove it from the wrapped model or move it after the "
            "DerivativeModel."
        ) from cause

    def call(self, inputs, training=None):
        self._check_input_dtype(inputs.dtype)
        x = inputs
        self._check_input_shape(x.shape)
        self._check_connected(x)
        if training:
            differentiability.raise_if_batch_dependent(self.model)
        m = math.prod(self._out_shape)

        def f(z):
            return ops.reshape(self.model(z), (-1, m))

        wrt = self.wrt if self.wrt is not None else tuple(range(x.shape[-1]))
        if self._engine == "taylor":
            try:
                levels = taylor.derivatives(
                    self.model, x, self.order, self.hessian, wrt, training
                )
                return self._unflatten(levels)
            except taylor.Unsupported as why:  # known only at call time
                if self.method == "taylor":
                    raise self._taylor_error(why) from None
                if self._defect is not None:
                    raise self._defect_error(
                        self._defect, f"The Taylor engine cannot take it: {why}."
                    ) from None
        try:
            levels = autodiff.derivatives(
                f, x, self.order, self.hessian, wrt, self._piecewise_linear
            )
        except NotDifferentiableError as err:
            self._raise_not_connected(x, cause=err)
        return self._unflatten(levels)

    def _unflatten(self, levels):
        # Trailing axes beyond (B, m) are the derivative axes: () for y and
        # the Laplacian, (d,) or (d, d) for the others.
        return [ops.reshape(t, (-1, *self._out_shape, *t.shape[2:])) for t in levels]

    # -- saving -------------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "model": keras.saving.serialize_keras_object(self.model),
                "order": self.order,
                "hessian": self.hessian,
                "wrt": list(self.wrt) if self.wrt is not None else None,
                "method": self.method,
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "DerivativeModel":
        config = copy.deepcopy(config)
        config["model"] = keras.saving.deserialize_keras_object(config["model"])
        return cls(**config)
