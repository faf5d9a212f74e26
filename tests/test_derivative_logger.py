"""DerivativeLogger: logs, files, checks, and robustness."""

import csv
import sys
import warnings

import keras
import numpy as np
import pytest
from conftest import BACKEND, to_numpy

from keras_deriv import (
    DerivativeLogger,
    DerivativeModel,
    ZeroCurvatureError,
    ZeroCurvatureWarning,
)
from keras_deriv import plotting as plotting_module
from keras_deriv.atomic_files import write_atomically
from keras_deriv.curve_store import load_curves

X = np.linspace(0, 1, 200, dtype="float32").reshape(-1, 1)
PROBE = X[::4]


@keras.saving.register_keras_serializable(package="keras_deriv_tests")
class CountCalls(keras.layers.Layer):
    calls = 0

    def call(self, inputs):
        CountCalls.calls += 1
        return inputs


@keras.saving.register_keras_serializable(package="keras_deriv_tests")
class Fold(keras.layers.Layer):
    """A piecewise-linear layer that no rule knows: |x| written by hand."""

    def call(self, inputs):
        return keras.ops.where(inputs > 0, inputs, -inputs)


def net(activation="tanh", *extra, width=16):
    model = keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(width, activation=activation),
            *extra,
            keras.layers.Dense(1),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    return model


def fit(model, logger, epochs=3, **kwargs):
    return model.fit(
        X,
        X**2,
        epochs=epochs,
        batch_size=50,
        verbose=0,
        callbacks=[logger, *kwargs.pop("callbacks", [])],
        **kwargs,
    )


def test_scalars_reach_history_and_csv_logger(tmp_path):
    csv_path = tmp_path / "log.csv"
    model = net()
    history = fit(
        model,
        DerivativeLogger(PROBE),
        epochs=3,
        callbacks=[keras.callbacks.CSVLogger(str(csv_path))],
    )
    for key in ("dy_abs_mean", "d2y_abs_mean", "d2y_zero_fraction"):
        assert len(history.history[key]) == 3
    assert history.history["d2y_zero_fraction"] == [0.0, 0.0, 0.0]
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 3 and float(rows[-1]["dy_abs_mean"]) > 0
    _, dy, _ = [to_numpy(t) for t in DerivativeModel(model)(PROBE)]
    assert history.history["dy_abs_mean"][-1] == pytest.approx(
        np.abs(dy).mean(), rel=1e-4
    )


def test_curves_in_memory_follow_every_and_training():
    logger = DerivativeLogger(PROBE, every=2, order=3)
    history = fit(net(), logger, epochs=5)
    assert logger.epochs == [1, 3, 5]  # counted from 1, as Keras shows them
    assert [len(v) for v in logger.curves.values()] == [3, 3, 3, 3]
    assert logger.curves["d3y"][0].shape == (50, 1, 1)
    # the weights moved between logged epochs, and the logger saw it
    assert not np.allclose(logger.curves["y"][0], logger.curves["y"][-1])
    assert len(history.history["loss"]) == 5
    assert "d3y_abs_mean" in history.history


def test_files_hold_every_logged_epoch(tmp_path):
    logger = DerivativeLogger(PROBE, log_dir=tmp_path, every=1)
    fit(net(), logger, epochs=3)
    data = load_curves(tmp_path)
    assert list(data["epochs"]) == [1, 2, 3]
    assert data["y"].shape == (3, 50, 1) and data["d2y"].shape == (3, 50, 1, 1)
    np.testing.assert_array_equal(data["x"], PROBE)
    np.testing.assert_array_equal(data["dy"][-1], logger.curves["dy"][-1])
    png = (tmp_path / "derivatives.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert not [p for p in tmp_path.rglob(".tmp-*")]


def test_interrupted_fit_leaves_logged_epochs_readable(tmp_path):
    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    logger = DerivativeLogger(PROBE, log_dir=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        fit(net(), logger, epochs=10, callbacks=[Interrupt()])
    assert list(load_curves(tmp_path)["epochs"]) == [1, 2, 3]


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "f.npz"
    write_atomically(path, lambda tmp: np.savez(tmp, a=np.ones(3)))

    def broken(tmp):
        open(tmp, "wb").write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_atomically(path, broken)
    np.testing.assert_array_equal(np.load(path)["a"], np.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["f.npz"]


def test_unwritable_log_dir_warns_and_training_goes_on(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    logger = DerivativeLogger(PROBE, log_dir=blocker / "logs")
    with pytest.warns(RuntimeWarning, match="DerivativeLogger could not"):
        history = fit(net(), logger, epochs=3)
    assert len(history.history["loss"]) == 3
    assert len(logger.epochs) == 3


def test_a_failing_plot_warns_once_and_the_curves_are_still_written(
    tmp_path, monkeypatch
):
    def broken(*args, **kwargs):
        raise RuntimeError("no display")

    monkeypatch.setattr(plotting_module, "epoch_curves_figure", broken)
    logger = DerivativeLogger(PROBE, log_dir=tmp_path)
    with pytest.warns(RuntimeWarning, match="could not plot the curves") as record:
        fit(net(), logger, epochs=3)
    assert len([w for w in record if "plot" in str(w.message)]) == 1
    assert list(load_curves(tmp_path)["epochs"]) == [1, 2, 3]


def test_tensorboard_events_hold_scalars_and_the_figure(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    fit(net(), DerivativeLogger(PROBE, log_dir=tmp_path, tensorboard=True), epochs=2)
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert "derivatives/d2y_abs_mean" in tags["scalars"]
    assert [e.step for e in events.Scalars("derivatives/dy_abs_mean")] == [0, 1]
    [*_, image] = events.Images("derivatives/curves")
    assert image.encoded_image_string.startswith(b"\x89PNG") and image.width > 100


def test_missing_tensorboard_is_a_clear_warning(tmp_path, monkeypatch):
    for module in (
        "tensorboard",
        "tensorboard.compat.proto",
        "tensorboard.summary.writer.event_file_writer",
    ):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    logger = DerivativeLogger(PROBE, log_dir=tmp_path, tensorboard=True)
    with pytest.warns(RuntimeWarning, match="pip install tensorboard"):
        history = fit(net(), logger, epochs=2)
    assert len(history.history["loss"]) == 2
    assert (tmp_path / "derivatives.png").exists()


def test_relu_net_warns_once():
    with pytest.warns(ZeroCurvatureWarning, match="identically zero") as record:
        history = fit(net("relu"), DerivativeLogger(PROBE), epochs=3)
    assert len([w for w in record if w.category is ZeroCurvatureWarning]) == 1
    assert history.history["d2y_zero_fraction"] == [1.0, 1.0, 1.0]


def test_raise_happens_before_any_step():
    model = net("relu")
    before = [to_numpy(w).copy() for w in model.weights]
    with pytest.raises(ZeroCurvatureError, match="softplus"):
        fit(model, DerivativeLogger(PROBE, on_zero_curvature="raise"))
    for w, b in zip(model.weights, before, strict=True):
        np.testing.assert_array_equal(to_numpy(w), b)


def test_stop_ends_training_cleanly_and_ignore_says_nothing():
    with pytest.warns(ZeroCurvatureWarning, match="Training stopped"):
        history = fit(
            net("relu"), DerivativeLogger(PROBE, on_zero_curvature="stop"), epochs=5
        )
    assert len(history.history["loss"]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", ZeroCurvatureWarning)
        history = fit(net("relu"), DerivativeLogger(PROBE, on_zero_curvature="ignore"))
    assert len(history.history["loss"]) == 3


def test_dynamic_check_tells_a_relu_net_from_a_relu_net_with_a_nonlinear_op():
    # |x| written by hand is unknown to the static rules: only the measured
    # d2y tells that this net is piecewise linear...
    with pytest.warns(ZeroCurvatureWarning, match="exactly 0 at all 50 probe points"):
        fit(net(None, Fold()), DerivativeLogger(PROBE, on_zero_curvature="warn"))
    # ...while a ReLU net followed by a product is curved, and nothing is said.
    inputs = keras.Input((1,))
    h = keras.layers.Dense(1)(keras.layers.Dense(16, activation="relu")(inputs))
    model = keras.Model(inputs, keras.layers.Multiply()([h, h]))
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ZeroCurvatureWarning)
        history = fit(model, DerivativeLogger(PROBE))
    assert history.history["d2y_zero_fraction"][-1] < 0.5


@pytest.mark.skipif(
    BACKEND == "torch", reason="torch predicts eagerly: nothing is traced"
)
def test_probe_function_is_traced_once_across_epochs_and_fits():
    model = net("tanh", CountCalls())
    logger = DerivativeLogger(PROBE, batch_size=16)  # 4 chunks, the last padded
    fit(model, logger, epochs=1)
    after_first_epoch = CountCalls.calls
    fit(model, logger, epochs=20)
    fit(model, logger, epochs=2)
    assert CountCalls.calls == after_first_epoch
    assert logger.epochs == [1, 2]  # state reset by each fit


def test_wrong_probe_shape_fails_before_any_step():
    model = keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(4), keras.layers.Dense(1)]
    )
    model.compile("adam", "mse")
    before = [to_numpy(w).copy() for w in model.weights]
    xy = np.ones((8, 2), "float32")
    with pytest.raises(ValueError, match=r"has 3 features.*expects 2.*\(n, 2\)"):
        model.fit(
            xy,
            np.ones((8, 1)),
            epochs=1,
            verbose=0,
            callbacks=[DerivativeLogger(np.ones((5, 3), "float32"))],
        )
    for w, b in zip(model.weights, before, strict=True):
        np.testing.assert_array_equal(to_numpy(w), b)
    with pytest.raises(ValueError, match=r"reshape\(-1, 1\)"):
        DerivativeLogger(np.ones(5, "float32"))
    with pytest.raises(ValueError, match="Unknown `on_zero_curvature`"):
        DerivativeLogger(PROBE, on_zero_curvature="panic")
    with pytest.raises(ValueError, match="needs a `log_dir`"):
        DerivativeLogger(PROBE, tensorboard=True)
    with pytest.raises(ValueError, match='order=3 needs hessian="diagonal"'):
        DerivativeLogger(PROBE, order=3, hessian="full")


def test_logs_the_wrapped_network_of_a_sobolev_model(tmp_path):
    inner = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(1),
        ]
    )
    inputs = keras.Input((2,))
    layer = DerivativeModel(inner)
    model = keras.Model(
        inputs, dict(zip(layer.output_keys, layer(inputs), strict=True))
    )
    model.compile("adam", loss={"y": "mse"})
    xy = np.random.default_rng(0).uniform(size=(32, 2)).astype("float32")
    logger = DerivativeLogger(xy[:10], wrt=[1], feature=0, log_dir=tmp_path)
    model.fit(xy, {"y": xy[:, :1]}, epochs=2, verbose=0, callbacks=[logger])
    assert logger.curves["dy"][-1].shape == (10, 1, 1)
    assert (tmp_path / "derivatives.png").exists()


def test_history_says_which_epochs_the_derivative_logs_belong_to():
    logger = DerivativeLogger(PROBE, every=2)
    history = fit(net(), logger, epochs=5)
    assert len(history.history["loss"]) == 5
    assert history.history["derivatives_epoch"] == [1, 3, 5]
    assert len(history.history["d2y_abs_mean"]) == 3


def test_a_probe_that_is_not_a_slice_warns_and_slice_points_makes_one():
    from keras_deriv import slice_points

    two = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(1),
        ]
    )
    two.compile("adam", "mse")
    scattered = np.random.default_rng(0).uniform(size=(30, 2)).astype("float32")
    target = scattered[:, :1] ** 2
    with pytest.warns(UserWarning, match="zigzag"):
        two.fit(
            scattered,
            target,
            epochs=1,
            verbose=0,
            callbacks=[DerivativeLogger(scattered)],
        )
    line = slice_points(d=2, feature=0, lo=0.0, hi=1.0, points=30, at=[0.0, 0.25])
    assert line.shape == (30, 2) and np.all(line[:, 1] == 0.25)
    np.testing.assert_allclose(line[:, 0], np.linspace(0, 1, 30))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        two.fit(
            scattered, target, epochs=1, verbose=0, callbacks=[DerivativeLogger(line)]
        )
    # the plotted feature among wrt: x[:, 1] varies, x[:, 0] fixed
    column = slice_points(d=2, feature=1, lo=-1.0, hi=1.0, points=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        two.fit(
            scattered,
            target,
            epochs=1,
            verbose=0,
            callbacks=[DerivativeLogger(column, wrt=[1])],
        )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"d": 2, "feature": 2, "lo": 0, "hi": 1}, "feature"),
        ({"d": 2, "feature": 0, "lo": 1, "hi": 0}, "lo < hi"),
        ({"d": 2, "feature": 0, "lo": 0, "hi": float("nan")}, "finite"),
        ({"d": 2, "feature": 0, "lo": 0, "hi": 1, "at": [0.0]}, "2 values"),
        ({"d": 2, "feature": 0, "lo": 0, "hi": 1, "points": 1}, "points"),
        ({"d": 2, "feature": 0.5, "lo": 0, "hi": 1}, "feature"),
    ],
)
def test_slice_points_refuses_bad_arguments(kwargs, match):
    from keras_deriv import slice_points

    with pytest.raises((ValueError, TypeError), match=match):
        slice_points(**kwargs)


def test_smoothed_logs_say_so():
    logger = DerivativeLogger(PROBE, smoothing=0.05)
    history = fit(net(), logger, epochs=2)
    assert "d2y_smoothed_abs_mean" in history.history
    assert "d2y_abs_mean" not in history.history
    assert set(logger.curves) == {"y", "dy_smoothed", "d2y_smoothed"}
    labels = [axis.get_title() for axis in logger.figure().axes[:3]]
    assert "d²y/dx² (smoothed, σ = 0.05)" in labels
