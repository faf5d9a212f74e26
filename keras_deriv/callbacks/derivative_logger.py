"""`DerivativeLogger`: derivative curves and zero-curvature checks while a
model trains."""

import math
import numbers
import os
import warnings
from typing import Any

import keras
import numpy as np
import numpy.typing as npt

from keras_deriv import curve_store, plotting
from keras_deriv.analysis import curvature
from keras_deriv.errors import ZeroCurvatureError, ZeroCurvatureWarning
from keras_deriv.evaluation import Evaluator, as_float_array, network_to_differentiate
from keras_deriv.options import (
    check_choice,
    check_hessian,
    check_order,
    check_smoothing,
    check_wrt,
    output_keys,
)
from keras_deriv.summary_writer import SummaryWriter, TensorBoardUnavailable

ON_ZERO_CURVATURE = ("warn", "raise", "stop", "ignore")
PLOT_FILE = "derivatives.png"
# In-memory curves kept when the full history is on disk.
KEEP_WITH_LOG_DIR = 64
# Lines on the plot: the first logged epoch, the latest, some in between.
PLOTTED_EPOCHS = 8
# The epoch logs' key for the (1-based) epoch a logged value belongs to.
LOGGED_EPOCH = "derivatives_epoch"


class DerivativeLogger(keras.callbacks.Callback):
    """Logs the derivatives of the model on probe inputs while it trains.

    Epochs are counted from 1, as Keras's progress bar shows them. It logs
    epochs 1, 1 + `every`, 1 + 2·`every`, ...: at each, it evaluates
    `[y, dy, d2y, ...]` on `x` with one compiled function (no retracing from
    epoch to epoch) and:

    - adds scalars to the epoch logs, so `History`, `CSVLogger` and
      `TensorBoard` (placed after it in `callbacks`) record them:
      `dy_abs_mean`, `d2y_abs_mean`, `d2y_zero_fraction` (the fraction of
      probe points where d²y/dx² is exactly 0), `d3y_abs_mean`, ... for
      higher orders, and `derivatives_epoch`, the epoch they belong to (with
      `every > 1` these lists are shorter than `loss`). With `smoothing`,
      the keys say so: `dy_smoothed_abs_mean`, `d2y_smoothed_abs_mean`, ...;
    - keeps the curves in memory: `logger.epochs` and `logger.curves`
      (`{"y": [...], "dy": [...], ...}`, one array per logged epoch);
    - with `log_dir`, writes one file per logged epoch to `log_dir/curves/`
      (append-only and atomic: a resumed run adds to them, a killed run
      loses no completed epoch; read them back with `load_curves(log_dir)`)
      and, with `plot=True`, `derivatives.png` (the first, the latest and a
      few logged epochs between); with `tensorboard=True`, the scalars and
      the figure as TensorBoard summaries in `log_dir`. One logger writes
      to a `log_dir` at a time.

    It checks for identically zero curvature (a piecewise-linear network,
    e.g. ReLU everywhere): statically at the start of training, and at each
    logged epoch on the measured d²y/dx² (all zero on the probe set). What
    then happens is `on_zero_curvature`. With `smoothing`, the static check
    is skipped: the smoothed curvature of a ReLU network is what is asked.

    The plot draws each output against one input feature: probe points on
    a line along it (`keras_deriv.slice_points`) give curves; points that
    differ in other features too give a zigzag, and a warning.

    Its own I/O never stops training: an unwritable `log_dir`, a failing
    plot or a missing TensorBoard gives one warning and training goes on.

    Args:
        x: probe inputs, array-like `(n, d)`, float, matching the model's
            input.
        every: log every `every` epochs. Defaults to `1`.
        order: highest derivative order, 1 to 4. Defaults to `2`.
        hessian: `"diagonal"`, `"full"` or `"laplacian"`, as in
            `DerivativeModel`. Defaults to `"diagonal"`.
        wrt: input features to differentiate, or `None` for all. Defaults
            to `None`.
        log_dir: folder for the curves, the PNG and TensorBoard events;
            `None` keeps everything in memory. Defaults to `None`.
        plot: write `derivatives.png` in `log_dir`. Defaults to `True`.
        tensorboard: write TensorBoard scalars and images in `log_dir`
            (needs the `tensorboard` package). Defaults to `False`.
        on_zero_curvature: `"warn"` (a `ZeroCurvatureWarning`), `"raise"`
            (a `ZeroCurvatureError`), `"stop"` (sets `model.stop_training`:
            Keras finishes the batch it is on, then ends the epoch, which is
            still logged; found at the start of training, that is after the
            first batch) or `"ignore"`. Defaults to `"warn"`.
        model: the network to differentiate. `None`: the model being
            trained, or, when its output is not a single tensor, the network
            wrapped by its (only) `DerivativeModel`. Defaults to `None`.
        feature: input feature on the plot's x axis (its index among the
            differentiated ones for the derivative panels). Defaults to `0`.
        output: which output component to plot (flat index into `out`).
            Defaults to `0`.
        batch_size: chunk size for large probe sets; `None` for up to 4096
            points at a time. Defaults to `None`.
        keep: how many of the latest logged epochs `logger.curves` holds in
            memory; `None` for all without `log_dir`, 64 with one (the whole
            history is on disk). Defaults to `None`.
        smoothing: `None` for exact derivatives, or a resolution σ to log
            those of the network smoothed along each differentiated feature
            (see `DerivativeModel`). Defaults to `None`.

    Examples:
        >>> import numpy as np, keras
        >>> from keras_deriv import DerivativeLogger
        >>> net = keras.Sequential([keras.Input((1,)),
        ...                         keras.layers.Dense(16, activation="tanh"),
        ...                         keras.layers.Dense(1)])
        >>> net.compile("adam", "mse")
        >>> x = np.linspace(0, 1, 64, dtype="float32").reshape(-1, 1)
        >>> logger = DerivativeLogger(x)
        >>> history = net.fit(x, x**2, epochs=2, verbose=0, callbacks=[logger])
        >>> sorted(k for k in history.history if k.startswith("d"))
        ['d2y_abs_mean', 'd2y_zero_fraction', 'derivatives_epoch', 'dy_abs_mean']
        >>> logger.epochs, logger.curves["d2y"][0].shape
        ([1, 2], (64, 1, 1))
    """

    def __init__(
        self,
        x: npt.ArrayLike,
        every: int = 1,
        order: int = 2,
        hessian: str = "diagonal",
        wrt: list[int] | None = None,
        log_dir: str | os.PathLike | None = None,
        plot: bool = True,
        tensorboard: bool = False,
        on_zero_curvature: str = "warn",
        model: keras.layers.Layer | None = None,
        feature: int = 0,
        output: int = 0,
        batch_size: int | None = None,
        keep: int | None = None,
        smoothing: float | None = None,
    ):
        super().__init__()
        self.x = as_float_array(x, "DerivativeLogger")
        if len(self.x) == 0:
            raise ValueError("DerivativeLogger got no probe points (x has 0 rows).")
        for name, value in (("feature", feature), ("output", output)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"`{name}` must be an int index; got {value!r}.")
            if value < 0:
                raise ValueError(f"`{name}` must be a non-negative index; got {value}.")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"`every` must be a positive int; got {every!r}.")
        self.every = every
        self.order = check_order(order)
        self.hessian = check_hessian(hessian, self.order)
        self.wrt = check_wrt(wrt)
        self.smoothing = check_smoothing(smoothing)
        self.on_zero_curvature = check_choice(
            "on_zero_curvature", on_zero_curvature, ON_ZERO_CURVATURE
        )
        if tensorboard and log_dir is None:
            raise ValueError("tensorboard=True needs a `log_dir` to write to.")
        self.log_dir = os.fspath(log_dir) if log_dir is not None else None
        self.plot = plot
        self.tensorboard = tensorboard
        self.network = model
        self.feature = feature
        self.output = output
        self.batch_size = batch_size
        if keep is None:
            keep = KEEP_WITH_LOG_DIR if self.log_dir is not None else None
        elif isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"`keep` must be a positive int or None; got {keep!r}.")
        self.keep = keep
        self._evaluator = None
        self._disk = False
        self.epochs = []
        self.curves = {}

    @property
    def keys(self) -> tuple[str, ...]:
        """The logged outputs: `("y", "dy", "d2y", ...)`, or
        `("y", "dy_smoothed", ...)` with `smoothing`."""
        return output_keys(self.order, self.smoothing)

    # -- setup ----------------------------------------------------------------

    def _target(self):
        if self.network is not None:
            return self.network
        try:
            return network_to_differentiate(self.model)
        except ValueError as err:
            raise ValueError(
                f"{err} Pass it: DerivativeLogger(x, model=net)."
            ) from None

    def _check_probe(self, net):
        try:
            width = net.inputs[0].shape[-1]
        except (AttributeError, IndexError, TypeError, ValueError):
            width = None  # a subclassed model: DerivativeModel checks at build
        d = self.x.shape[1]
        if width is not None and d != width:
            raise ValueError(
                f"DerivativeLogger's probe x has {d} features per point (shape "
                f"{self.x.shape}), but {net.name!r} expects {width}. Pass x of "
                f"shape (n, {width})."
            )
        if self.wrt is not None and max(self.wrt) >= d:
            raise ValueError(
                f"`wrt`={list(self.wrt)} names a feature beyond the probe's {d}."
            )
        n_wrt = len(self.wrt) if self.wrt is not None else d
        if not 0 <= self.feature < n_wrt:
            raise ValueError(
                f"`feature`={self.feature} must be from 0 to {n_wrt - 1} (an index "
                "among the differentiated features)."
            )

    def on_train_begin(self, logs=None):
        self.epochs = []
        self.curves = {key: [] for key in self.keys}
        self._warned = set()
        self._zero_curvature_reported = False
        net = self._target()
        self._check_probe(net)
        stale = self._evaluator is None or self._evaluator.model is not net
        if stale or not self._evaluator.is_current():
            with warnings.catch_warnings():
                # zero curvature is this callback's to report, as configured
                warnings.simplefilter("ignore", ZeroCurvatureWarning)
                self._evaluator = Evaluator(
                    net,
                    self.x.shape[1],
                    str(self.x.dtype),
                    order=self.order,
                    hessian=self.hessian,
                    wrt=self.wrt,
                    smoothing=self.smoothing,
                )
        y_shape = self._evaluator.layer.compute_output_shape((None, self.x.shape[1]))[0]
        components = math.prod(y_shape[1:])
        if self.output >= components:
            raise ValueError(
                f"`output`={self.output} names an output component beyond the "
                f"network's {components} (valid: 0 to {components - 1})."
            )
        self._verdict = self._evaluator.layer.curvature
        if self.plot or self.tensorboard:
            self._warn_if_not_a_slice()
        exact = self.smoothing is None  # a smoothed curvature is not zero
        if exact and self.order >= 2 and self._verdict == curvature.PIECEWISE_LINEAR:
            self._report_zero_curvature(curvature.zero_curvature_message(net))
        self._summaries = None
        self._disk = self._first_logged = False
        if self.log_dir is not None:
            self._open_log_dir()
        if self.tensorboard:
            self._summaries = self._guard(
                "open TensorBoard events", SummaryWriter, self.log_dir
            )

    def _open_log_dir(self):
        """Lock the log_dir, clean what a killed run left, record the probe
        points. Another logger writing there, or curves of other probe
        points, are errors before training; an unwritable log_dir is a
        warning (training goes on, in memory)."""
        try:
            curve_store.acquire(self.log_dir, self)
        except curve_store.LogDirInUse as err:
            raise ValueError(
                f"DerivativeLogger cannot write to log_dir: {err}. Give each "
                "logger its own log_dir."
            ) from None
        except OSError as err:
            self._guard("create log_dir", _raise, err)
            return
        try:
            curve_store.remove_stale_temporaries(self.log_dir)
            curve_store.open_run(self.log_dir, self.x, self._run_options())
        except curve_store.OtherRun:
            curve_store.release(self.log_dir, self)
            raise
        except Exception as err:  # noqa: BLE001 - a corrupt or unwritable file
            curve_store.release(self.log_dir, self)
            self._guard("record the probe points", _raise, err)
            return
        self._disk = True
        self._first_logged = True

    def _run_options(self):
        """What the stored curves are: a history holds one kind only."""
        return {
            "keys": list(self.keys),
            "hessian": self.hessian,
            "wrt": list(self.wrt) if self.wrt is not None else None,
            "smoothing": self.smoothing,
            "dtype": str(self.x.dtype),
        }

    def _supersede(self, epoch):
        """This run logs `epoch`: stored epochs from there on belong to an
        earlier run (resumed from an earlier checkpoint, or a new fit that
        counts from 1 again) and are moved aside, not overwritten."""
        moved, where = curve_store.supersede_from(self.log_dir, epoch)
        if moved:
            warnings.warn(
                f"DerivativeLogger: {self.log_dir} held epochs {moved[0]}-{moved[-1]} "
                f"of an earlier run, and this run logs epoch {epoch}: moved them "
                f"to {where} (load_curves reads this run's history). To continue "
                "an earlier run's numbering, pass fit(initial_epoch=...).",
                UserWarning,
                stacklevel=3,
            )

    def on_train_end(self, logs=None):
        if self._summaries is not None:
            self._guard("close TensorBoard events", self._summaries.close)
            self._summaries = None
        if self.log_dir is not None:
            curve_store.release(self.log_dir, self)

    # -- each logged epoch ----------------------------------------------------

    def on_epoch_end(self, epoch, logs=None):
        if epoch % self.every:
            return
        values = self._evaluator(self.x, self.batch_size)
        step, epoch = epoch, epoch + 1  # Keras's 0-based index; people count from 1
        self.epochs.append(epoch)
        for key, value in zip(self.keys, values, strict=True):
            self.curves[key].append(value)
        if self.keep is not None and len(self.epochs) > self.keep:
            del self.epochs[: -self.keep]
            for per_epoch in self.curves.values():
                del per_epoch[: -self.keep]
        scalars = self._scalars(values)
        if logs is not None:
            logs.update(scalars)
        if self._disk:
            if self._first_logged:
                self._first_logged = False
                self._guard("move superseded curves aside", self._supersede, epoch)
            arrays = dict(zip(self.keys, values, strict=True))
            self._guard(
                "write the curves", curve_store.write_epoch, self.log_dir, epoch, arrays
            )
            if self.plot or self._summaries is not None:
                fig = self._guard("plot the curves", self.figure)
                if fig is not None and self.plot:
                    path = os.path.join(self.log_dir, PLOT_FILE)
                    self._guard("write the plot", plotting.save_png, fig, path)
                if fig is not None and self._summaries is not None:
                    self._guard(
                        "log to TensorBoard", self._write_summaries, step, scalars, fig
                    )
        if self.order >= 2 and np.all(values[2] == 0.0):
            self._report_measured_zero(epoch)
        if logs is not None:
            logs[LOGGED_EPOCH] = epoch

    def _scalars(self, values):
        scalars = {}
        for key, value in zip(self.keys[1:], values[1:], strict=True):
            scalars[f"{key}_abs_mean"] = float(np.mean(np.abs(value)))
        if self.order >= 2:
            scalars[f"{self.keys[2]}_zero_fraction"] = float(np.mean(values[2] == 0.0))
        return scalars

    def _panel(self, level, value):
        """`(n,)` curve of one output component along `feature`."""
        n = value.shape[0]
        if level == 0 or (level == 2 and self.hessian == "laplacian"):
            return value.reshape(n, -1)[:, self.output]
        if level == 2 and self.hessian == "full":
            value = np.diagonal(value, axis1=-2, axis2=-1)
        return value.reshape(n, -1, value.shape[-1])[:, self.output, self.feature]

    def _warn_if_not_a_slice(self):
        """The plot draws each output against x[:, column]: points that also
        differ in other features make a zigzag, not a curve."""
        column = self.wrt[self.feature] if self.wrt is not None else self.feature
        others = np.delete(self.x, column, axis=1)
        if len(self.x) < 2 or np.all(others == others[:1]):
            return
        warnings.warn(
            f"DerivativeLogger plots against x[:, {column}], but the probe points "
            "differ in other features too, so the curves will zigzag. Probe a "
            "slice along that feature with the others fixed: "
            f"x = keras_deriv.slice_points(d={self.x.shape[1]}, feature={column}, "
            "lo=..., hi=..., at=[...]).",
            UserWarning,
            stacklevel=3,
        )

    def figure(self):
        """The figure of every logged epoch's curves (a matplotlib Figure)."""
        column = self.wrt[self.feature] if self.wrt is not None else self.feature
        shown = _spread(len(self.epochs), PLOTTED_EPOCHS)
        curves = {
            key: [self._panel(level, self.curves[key][i]) for i in shown]
            for level, key in enumerate(self.keys)
        }
        title = "Derivatives during training"
        if self.smoothing is not None:
            title += f" (smoothed, σ = {self.smoothing:g})"
        return plotting.epoch_curves_figure(
            self.x[:, column],
            curves,
            [self.epochs[i] for i in shown],
            xlabel=f"x[{column}]",
            title=title,
            smoothing=self.smoothing,
        )

    def _write_summaries(self, epoch, scalars, fig):
        for tag, value in scalars.items():
            self._summaries.scalar(f"derivatives/{tag}", value, epoch)
        self._summaries.image("derivatives/curves", plotting.png_bytes(fig), epoch)
        self._summaries.flush()

    # -- problems -------------------------------------------------------------

    def _guard(self, what, fn, *args, **kwargs) -> Any:
        """Run one I/O step; on failure warn once per kind, never raise."""
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - our I/O must not stop training
            if isinstance(err, TensorBoardUnavailable):
                message = str(err)
            else:
                message = f"could not {what} ({type(err).__name__}: {err})"
            if what not in self._warned:
                self._warned.add(what)
                warnings.warn(
                    f"DerivativeLogger {message}; training goes on.",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return None

    def _report_zero_curvature(self, message):
        """A proven verdict: `on_zero_curvature` acts on it."""
        action = self.on_zero_curvature
        if action == "ignore" or self._zero_curvature_reported:
            return
        self._zero_curvature_reported = True
        if action == "raise":
            raise ZeroCurvatureError(message)
        if action == "stop":
            self.model.stop_training = True
            message += " Training stopped (on_zero_curvature='stop')."
        warnings.warn(message, ZeroCurvatureWarning, stacklevel=2)

    def _report_measured_zero(self, epoch):
        """A measurement, not a proof: the second derivative can be 0 on
        these points for a curved network (e.g. u = x0 * N(x1) along x0).
        Reported once as what it is; never raises or stops training."""
        if self._zero_curvature_reported or self.on_zero_curvature == "ignore":
            return
        self._zero_curvature_reported = True
        which = (
            f"features {list(self.wrt)}" if self.wrt is not None else "every feature"
        )
        warnings.warn(
            f"{self.keys[2]} is exactly 0 at all {len(self.x)} probe points at "
            f"epoch {epoch} (measured with respect to {which}, on these points "
            "only). If the network should be curved there, check its "
            f"activations ({curvature.SMOOTH_ALTERNATIVES} are smooth).",
            ZeroCurvatureWarning,
            stacklevel=2,
        )


def _spread(count, most):
    """Up to `most` indices of `count`, first and last included, evenly
    spread."""
    if count <= most:
        return list(range(count))
    return sorted({round(i * (count - 1) / (most - 1)) for i in range(most)})


def _raise(err):
    raise err
