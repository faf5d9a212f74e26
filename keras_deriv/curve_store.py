"""The logger's curves on disk: append-only, one file per logged epoch.

`log_dir/curves/` holds `x.npy` (the probe points), `run.json` (what is
logged: the outputs and their options) and one `epoch_000012.npz` per
logged epoch (its `y`, `dy`, `d2y`, ...), each written atomically. A
logged epoch costs one small file whatever the number of epochs before it,
a killed run leaves every completed epoch readable, and a resumed run
(`fit(initial_epoch=...)`) adds to what is there. A run that logs an epoch
already on disk (a resume from an earlier checkpoint, or a new `fit` that
counts from epoch 1 again) moves the stored epochs from there on to
`curves/superseded/<time>/`: the history stays one run's, nothing is lost.

One logger writes to a `log_dir` at a time: it holds an advisory lock on
`log_dir/.derivative_logger.lock` (released by the system when its process
dies, so a killed run never blocks the next). `load_curves` reads the whole
history back as arrays.
"""

import glob
import json
import os
import threading
import time
import weakref

import numpy as np

from keras_deriv.atomic_files import write_atomically

try:
    import fcntl
except ImportError:  # Windows: a lock file with the holder's pid
    fcntl = None

DIRECTORY = "curves"
LOCK_FILE = ".derivative_logger.lock"
SUPERSEDED = "superseded"
_PROBE = "x.npy"
_RUN = "run.json"


class LogDirInUse(RuntimeError):
    """Another DerivativeLogger writes to this log_dir."""


class OtherRun(ValueError):
    """The log_dir holds curves of other probe points or options."""


class _Held:
    """A lock this process holds: its file descriptor, the logger holding
    it, the thread it trains on and the `fit` (Keras gives all callbacks of
    one `fit` the same `params` dict)."""

    def __init__(self, fd, owner):
        self.fd = fd
        self.owner = weakref.ref(owner)
        self.thread = threading.get_ident()
        self.fit = getattr(owner, "params", None)


# log_dir -> the lock of this process on it
_HELD = {}
_HELD_GUARD = threading.Lock()


def _curves_dir(log_dir):
    return os.path.join(log_dir, DIRECTORY)


def _epoch_path(log_dir, epoch):
    return os.path.join(_curves_dir(log_dir), f"epoch_{epoch:06d}.npz")


def acquire(log_dir, owner):
    """Lock `log_dir` for `owner` (a logger), or raise `LogDirInUse`.

    Another process holding it, another logger of the same `fit`, or one
    training on another thread, is an error. A logger of this process whose
    `fit` on this thread ended without `on_train_end` (an exception, Ctrl-C
    in a notebook) is done training: its lock is taken over.
    """
    key = os.path.abspath(log_dir)
    with _HELD_GUARD:
        held = _HELD.get(key)
        if held is not None:
            holder = held.owner()
            if holder is owner:
                return
            running = {t.ident for t in threading.enumerate()}
            fit = getattr(owner, "params", None)
            if holder is not None and fit is not None and held.fit is fit:
                raise LogDirInUse(
                    f"another DerivativeLogger of this fit writes to {log_dir}"
                )
            if (
                holder is not None
                and held.thread != threading.get_ident()
                and (held.thread in running)
            ):
                raise LogDirInUse(
                    f"another DerivativeLogger of this process, training on another "
                    f"thread, writes to {log_dir}"
                )
            _close(key)
        os.makedirs(log_dir, exist_ok=True)
        fd = _lock(os.path.join(log_dir, LOCK_FILE), log_dir)
        _HELD[key] = _Held(fd, owner)


def _lock(path, log_dir):
    if fcntl is None:
        return _lock_by_pid(path, log_dir)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        pid = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise LogDirInUse(
            f"process {pid} (another DerivativeLogger) writes to {log_dir}"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def _lock_by_pid(path, log_dir):
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                with open(path) as f:
                    pid = int(f.read().strip())
            except (OSError, ValueError):
                pid = None  # being written by its holder
            if pid is None or (pid != os.getpid() and _alive(pid)):
                raise LogDirInUse(
                    f"process {pid or '?'} (another DerivativeLogger) writes to "
                    f"{log_dir}"
                ) from None
            os.remove(path)  # stale: its process is gone
            continue
        os.write(fd, str(os.getpid()).encode())
        return fd


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's live process, or cannot tell
    return True


def _close(key):
    held = _HELD.pop(key)
    try:
        if fcntl is None:
            os.remove(os.path.join(key, LOCK_FILE))
        os.close(held.fd)  # releases the advisory lock
    except OSError:
        pass


def release(log_dir, owner):
    key = os.path.abspath(log_dir)
    with _HELD_GUARD:
        held = _HELD.get(key)
        if held is not None and held.owner() is owner:
            _close(key)


def remove_stale_temporaries(log_dir):
    """Temporary files of writes a killed run never finished."""
    for directory in (log_dir, _curves_dir(log_dir)):
        for path in glob.glob(os.path.join(directory, ".tmp-*")):
            try:
                os.remove(path)
            except OSError:
                pass


def open_run(log_dir, x, options):
    """Record the probe points and what is logged; curves of other points
    or options already there are an error (`OtherRun`): they would not line
    up as one history."""
    directory = _curves_dir(log_dir)
    os.makedirs(directory, exist_ok=True)
    probe, run = os.path.join(directory, _PROBE), os.path.join(directory, _RUN)
    options = json.loads(json.dumps(options))  # tuples as lists, as read back
    if os.path.exists(probe):
        previous = np.load(probe)
        if previous.shape != x.shape or not np.array_equal(previous, x):
            raise OtherRun(
                f"{log_dir} holds curves logged at other probe points (shape "
                f"{previous.shape}); use another log_dir for these."
            )
    if os.path.exists(run):
        with open(run) as f:
            logged = json.load(f)
        if logged != options:
            changed = sorted(
                k for k in {*logged, *options} if logged.get(k) != options.get(k)
            )
            raise OtherRun(
                f"{log_dir} holds curves logged with other options "
                + ", ".join(f"{k}={logged.get(k)!r}" for k in changed)
                + "; use another log_dir for these."
            )
    elif _stored_epochs(log_dir):
        raise OtherRun(
            f"{log_dir} holds curves of an earlier version that do not say what "
            "they are; use another log_dir."
        )
    if not os.path.exists(probe):
        write_atomically(probe, lambda tmp: np.save(tmp, x))
    if not os.path.exists(run):
        write_atomically(run, lambda tmp: _write_json(tmp, options))


def _write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f)


def _stored_epochs(log_dir):
    names = glob.glob(os.path.join(_curves_dir(log_dir), "epoch_*.npz"))
    return sorted(int(os.path.basename(n)[len("epoch_") : -len(".npz")]) for n in names)


def supersede_from(log_dir, epoch):
    """Move the stored epochs from `epoch` on to `curves/superseded/<time>/`
    (a run that logs `epoch` again replaces them); returns their epochs and
    where they went."""
    later = [e for e in _stored_epochs(log_dir) if e >= epoch]
    if not later:
        return [], None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    target = os.path.join(_curves_dir(log_dir), SUPERSEDED, stamp)
    suffix = 0
    while os.path.exists(target):
        suffix += 1
        target = os.path.join(_curves_dir(log_dir), SUPERSEDED, f"{stamp}-{suffix}")
    os.makedirs(target)
    for e in later:
        path = _epoch_path(log_dir, e)
        os.replace(path, os.path.join(target, os.path.basename(path)))
    return later, target


def write_epoch(log_dir, epoch, arrays):
    """Write one logged epoch's curves."""
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
