"""The logger's curves on disk: append-only, one file per logged epoch.

`log_dir/curves/` holds `x.npy` (the probe points) and one
`epoch_000012.npz` per logged epoch (its `y`, `dy`, `d2y`, ...), each
written atomically. A logged epoch costs one small file whatever the
number of epochs before it, a killed run leaves every completed epoch
readable, and a resumed run (`fit(initial_epoch=...)`) adds to what is
there. One logger writes to a `log_dir` at a time (a lock file says
which process); `load_curves` reads the whole history back as arrays.
"""

import glob
import os
import weakref

import numpy as np

from keras_deriv.atomic_files import write_atomically

DIRECTORY = "curves"
LOCK_FILE = ".derivative_logger.lock"
_PROBE = "x.npy"

# log_dir -> the logger of this process that holds its lock (a second
# logger here must not take over the first one's lock as if it were stale)
_HELD = weakref.WeakValueDictionary()


class LogDirInUse(RuntimeError):
    """Another DerivativeLogger writes to this log_dir."""


def _curves_dir(log_dir):
    return os.path.join(log_dir, DIRECTORY)


def _epoch_path(log_dir, epoch):
    return os.path.join(_curves_dir(log_dir), f"epoch_{epoch:06d}.npz")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def acquire(log_dir, owner):
    """Lock `log_dir` for `owner` (a logger), or raise `LogDirInUse`. A lock
    left by a process that no longer runs (a killed run) is taken over."""
    path = os.path.join(log_dir, LOCK_FILE)
    key = os.path.abspath(log_dir)
    holder = _HELD.get(key)
    if holder is owner:
        return
    if holder is not None:
        raise LogDirInUse(
            f"another DerivativeLogger of this process writes to {log_dir} (if "
            "its training stopped with an error, call its on_train_end() or "
            "delete it)"
        )
    os.makedirs(log_dir, exist_ok=True)
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                with open(path) as f:
                    pid = int(f.read().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and pid != os.getpid() and _alive(pid):
                raise LogDirInUse(
                    f"process {pid} (another DerivativeLogger) writes to {log_dir}"
                ) from None
            os.remove(path)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        _HELD[key] = owner
        return


def release(log_dir, owner):
    key = os.path.abspath(log_dir)
    if _HELD.get(key) is owner:
        del _HELD[key]
        try:
            os.remove(os.path.join(log_dir, LOCK_FILE))
        except OSError:
            pass


def remove_stale_temporaries(log_dir):
    """Temporary files of writes a killed run never finished."""
    for directory in (log_dir, _curves_dir(log_dir)):
        for path in glob.glob(os.path.join(directory, ".tmp-*")):
            try:
                os.remove(path)
            except OSError:
                pass


def write_probe(log_dir, x):
    """Record the probe points; a log_dir holding curves of other points is
    an error (their curves would not line up)."""
    os.makedirs(_curves_dir(log_dir), exist_ok=True)
    path = os.path.join(_curves_dir(log_dir), _PROBE)
    if os.path.exists(path):
        previous = np.load(path)
        if previous.shape != x.shape or not np.array_equal(previous, x):
            raise ValueError(
                f"{log_dir} holds curves logged at other probe points (shape "
                f"{previous.shape}); use another log_dir for these."
            )
        return
    write_atomically(path, lambda tmp: np.save(tmp, x))


def write_epoch(log_dir, epoch, arrays):
    """Write one logged epoch's curves (replacing that epoch if logged
    before, as a resumed run re-logs it)."""
    path = _epoch_path(log_dir, epoch)

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    write_atomically(path, write)


def load_curves(log_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every logged epoch in `log_dir`, as arrays.

    Args:
        log_dir: the `DerivativeLogger`'s `log_dir`.

    Returns:
        A dict: `"x"` the probe points `(n, d)`, `"epochs"` the logged
        epochs (counted from 1, as Keras shows them; sorted), and per
        output (`"y"`, `"dy"`, ...) an array `(epochs, n, ...)`.

    Example:
        >>> import numpy as np, keras, tempfile
        >>> from keras_deriv import DerivativeLogger, load_curves
        >>> net = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        >>> net.compile("sgd", "mse")
        >>> x = np.linspace(0, 1, 8, dtype="float32").reshape(-1, 1)
        >>> log_dir = tempfile.mkdtemp()
        >>> logger = DerivativeLogger(x, order=1, log_dir=log_dir, plot=False)
        >>> _ = net.fit(x, x, epochs=3, verbose=0, callbacks=[logger])
        >>> curves = load_curves(log_dir)
        >>> curves["epochs"].tolist(), curves["dy"].shape
        ([1, 2, 3], (3, 8, 1, 1))
    """
    log_dir = os.fspath(log_dir)
    directory = _curves_dir(log_dir)
    probe = os.path.join(directory, _PROBE)
    if not os.path.exists(probe):
        raise FileNotFoundError(f"{log_dir} holds no DerivativeLogger curves.")
    files = sorted(glob.glob(os.path.join(directory, "epoch_*.npz")))
    epochs, per_key = [], {}
    for path in files:
        with np.load(path) as data:
            for key in data.files:
                per_key.setdefault(key, []).append(data[key])
        epochs.append(int(os.path.basename(path)[len("epoch_") : -len(".npz")]))
    out = {"x": np.load(probe), "epochs": np.asarray(epochs, dtype=int)}
    out.update({key: np.stack(values) for key, values in per_key.items()})
    return out
