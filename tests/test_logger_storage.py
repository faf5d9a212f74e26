"""The logger's files on long, resumed, shared and killed runs: nothing
logged is lost, nothing grows without bound, nobody overwrites anybody."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

from keras_deriv import DerivativeLogger, load_curves

PROBE = np.linspace(0, 1, 20, dtype="float32").reshape(-1, 1)


def net():
    return keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(4, activation="tanh"),
            keras.layers.Dense(1),
        ]
    )


def fit(model, logger, epochs, **kwargs):
    model.compile("adam", "mse")
    return model.fit(
        PROBE, PROBE**2, epochs=epochs, verbose=0, callbacks=[logger], **kwargs
    )


def test_a_resumed_run_appends_to_what_is_there(tmp_path):
    model = net()
    fit(model, DerivativeLogger(PROBE, log_dir=tmp_path, plot=False), epochs=3)
    fit(
        model,
        DerivativeLogger(PROBE, log_dir=tmp_path, plot=False),
        epochs=5,
        initial_epoch=3,
    )
    curves = load_curves(tmp_path)
    assert list(curves["epochs"]) == [1, 2, 3, 4, 5]
    assert curves["d2y"].shape == (5, 20, 1, 1)
    assert not np.allclose(curves["y"][0], curves["y"][-1])  # it trained


def test_two_loggers_never_share_a_log_dir(tmp_path):
    first = DerivativeLogger(PROBE, log_dir=tmp_path, plot=False)
    second = DerivativeLogger(PROBE, log_dir=tmp_path, plot=False)
    model = net()
    model.compile("adam", "mse")
    with pytest.raises(ValueError, match="own log_dir"):
        model.fit(PROBE, PROBE**2, epochs=1, verbose=0, callbacks=[first, second])
    # the first logger's lock goes with it: a later run can use the folder
    del first
    fit(net(), DerivativeLogger(PROBE, log_dir=tmp_path, plot=False), epochs=1)


def test_other_probe_points_in_the_same_log_dir_are_refused(tmp_path):
    fit(net(), DerivativeLogger(PROBE, log_dir=tmp_path, plot=False), epochs=1)
    other = DerivativeLogger(PROBE * 2, log_dir=tmp_path, plot=False)
    with pytest.raises(ValueError, match="other probe points"):
        fit(net(), other, epochs=1)
    # the refused logger holds no lock: the folder stays usable
    fit(net(), DerivativeLogger(PROBE, log_dir=tmp_path, plot=False), epochs=1)


def test_a_stale_lock_and_temporaries_of_a_killed_run_are_cleaned(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (tmp_path / ".derivative_logger.lock").write_text(dead.strip())
    (tmp_path / "curves").mkdir()
    (tmp_path / "curves" / ".tmp-abc.npz").write_bytes(b"half")
    (tmp_path / ".tmp-def.png").write_bytes(b"half")
    fit(net(), DerivativeLogger(PROBE, log_dir=tmp_path), epochs=1)
    assert not list(tmp_path.rglob(".tmp-*"))
    assert list(load_curves(tmp_path)["epochs"]) == [1]


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="storage does not depend on the backend; one long run is enough",
)
def test_a_long_run_keeps_memory_and_per_epoch_writes_flat(tmp_path):
    logger = DerivativeLogger(PROBE, log_dir=tmp_path, plot=False, keep=16)
    fit(net(), logger, epochs=200, batch_size=20)
    assert len(logger.epochs) == 16 and logger.epochs[-1] == 200
    assert all(len(v) == 16 for v in logger.curves.values())
    sizes = [p.stat().st_size for p in sorted((tmp_path / "curves").glob("epoch_*"))]
    assert len(sizes) == 200 and max(sizes) == min(sizes)  # one fixed-size file
    assert load_curves(tmp_path)["y"].shape == (200, 20, 1)
    figure = logger.figure()  # a bounded number of curves per panel
    assert max(len(axis.get_lines()) for axis in figure.axes) <= 8


def test_files_follow_the_umask(tmp_path):
    fit(net(), DerivativeLogger(PROBE, log_dir=tmp_path), epochs=1)
    old = os.umask(0o022)
    os.umask(old)
    expected = 0o666 & ~old
    for name in ("derivatives.png", "curves/x.npy", "curves/epoch_000001.npz"):
        assert (tmp_path / name).stat().st_mode & 0o777 == expected, name


def test_a_killed_run_leaves_every_completed_epoch_readable(tmp_path):
    script = textwrap.dedent(
        f"""
        import keras, numpy as np
        from keras_deriv import DerivativeLogger
        x = np.linspace(0, 1, 20, dtype="float32").reshape(-1, 1)
        net = keras.Sequential([keras.Input((1,)), keras.layers.Dense(4, "tanh"),
                                keras.layers.Dense(1)])
        net.compile("adam", "mse")
        logger = DerivativeLogger(x, log_dir={str(tmp_path)!r})
        net.fit(x, x**2, epochs=100000, verbose=0, callbacks=[logger])
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 120
        curves = tmp_path / "curves"
        while time.monotonic() < deadline:
            if len(list(curves.glob("epoch_*.npz"))) >= 5:
                break
            time.sleep(0.05)
        # While it runs, its lock keeps every other logger out.
        with pytest.raises(ValueError, match=rf"process {proc.pid} .*own log_dir"):
            fit(net(), DerivativeLogger(PROBE, log_dir=tmp_path, plot=False), 1)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    data = load_curves(tmp_path)  # every file there is a whole epoch
    n = len(data["epochs"])
    assert n >= 5 and list(data["epochs"]) == list(range(1, n + 1))
    assert data["d2y"].shape == (n, 20, 1, 1)
    # The system released the dead run's lock: the next run resumes there.
    fit(
        net(),
        DerivativeLogger(PROBE, log_dir=tmp_path, plot=False),
        epochs=n + 2,
        initial_epoch=n,
    )
    assert list(load_curves(tmp_path)["epochs"]) == list(range(1, n + 3))


def test_a_new_fit_from_epoch_one_moves_the_old_history_aside(tmp_path):
    fit(net(), DerivativeLogger(PROBE, log_dir=tmp_path, plot=False), epochs=3)
    first = load_curves(tmp_path)
    with pytest.warns(UserWarning, match="held epochs 1-3 of an earlier run"):
        fit(net(), DerivativeLogger(PROBE, log_dir=tmp_path, plot=False), epochs=2)
    assert list(load_curves(tmp_path)["epochs"]) == [1, 2]
    (moved,) = (tmp_path / "curves" / "superseded").iterdir()
    assert sorted(p.name for p in moved.iterdir()) == [
        f"epoch_00000{i}.npz" for i in (1, 2, 3)
    ]
    with np.load(moved / "epoch_000003.npz") as old:
        np.testing.assert_array_equal(old["d2y"], first["d2y"][2])


def test_other_options_in_the_same_log_dir_are_refused(tmp_path):
    fit(net(), DerivativeLogger(PROBE, log_dir=tmp_path, plot=False), epochs=2)
    for other in (
        DerivativeLogger(PROBE, order=3, log_dir=tmp_path, plot=False),
        DerivativeLogger(PROBE, smoothing=0.1, log_dir=tmp_path, plot=False),
    ):
        with pytest.raises(ValueError, match="other options"):
            fit(net(), other, epochs=4, initial_epoch=2)
    assert list(load_curves(tmp_path)["epochs"]) == [1, 2]


def test_an_interrupted_fit_does_not_lock_out_the_next(tmp_path):
    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt

    stuck = DerivativeLogger(PROBE, log_dir=tmp_path, plot=False)
    model = net()
    model.compile("adam", "mse")
    with pytest.raises(KeyboardInterrupt):
        model.fit(PROBE, PROBE**2, epochs=5, verbose=0, callbacks=[stuck, Interrupt()])
    # `stuck` is alive (a notebook's traceback holds it) and never saw
    # on_train_end; its fit is over, so a new run on this thread goes on.
    fit(
        model, DerivativeLogger(PROBE, log_dir=tmp_path, plot=False), 3, initial_epoch=1
    )
    assert list(load_curves(tmp_path)["epochs"]) == [1, 2, 3]
    assert stuck.epochs == [1]


def test_a_corrupt_probe_file_warns_and_training_goes_on(tmp_path):
    (tmp_path / "curves").mkdir()
    (tmp_path / "curves" / "x.npy").write_bytes(b"")  # a power loss mid-write
    logger = DerivativeLogger(PROBE, log_dir=tmp_path, plot=False)
    with pytest.warns(RuntimeWarning, match="could not record the probe points"):
        history = fit(net(), logger, epochs=2)
    assert len(history.history["loss"]) == 2 and logger.epochs == [1, 2]
    fit(net(), DerivativeLogger(PROBE, log_dir=tmp_path / "fresh", plot=False), 1)
