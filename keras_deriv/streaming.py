"""Streams of point batches in, streams or memory-mapped `.npy` files out:
the parts of `derivatives()` for more points than fit in memory."""

import contextlib
import itertools
import os
import re
import sys

import keras
import numpy as np

from keras_deriv.atomic_files import atomic_paths

# verbose="auto" shows a progress bar from this many chunks (or batches) on.
AUTO_PROGRESS_CHUNKS = 16
_VERBOSE = ("auto", 0, 1, 2)
_END = object()
# out= file names: portable on every common file system.
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_WINDOWS_RESERVED = {
    "CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$",
    *(f"{port}{i}" for port in ("COM", "LPT") for i in "123456789"),
}  # fmt: skip


def is_stream(x) -> bool:
    """Whether `x` is a stream of point batches rather than an array: a
    `keras.utils.PyDataset`, a `tf.data.Dataset` (told by its
    `as_numpy_iterator`, so that nothing here imports TensorFlow) or an
    iterator (a generator, `iter(loader)`)."""
    if isinstance(x, np.ndarray):
        return False
    return (
        isinstance(x, keras.utils.PyDataset)
        or hasattr(x, "as_numpy_iterator")
        or hasattr(x, "__next__")
    )


def refuse_batch_iterables(x):
    """A clear error where `x`, which is no stream, looks like batches of
    points rather than an array of them: a list or tuple of 2-D arrays, or
    an iterable that is neither an array nor an iterator (a torch
    `DataLoader`, any object with `__iter__`), which NumPy would read as
    one object."""
    if isinstance(x, list | tuple):
        if x and np.ndim(x[0]) == 2:
            raise ValueError(
                f"derivatives(): x is a {type(x).__name__} of {len(x)} arrays of "
                "points, read as one array. To stream them as batches, pass "
                "iter(x); for one array, np.concatenate(x)."
            )
        return
    array_like = (
        isinstance(x, np.ndarray | str | bytes)
        or hasattr(x, "__array__")
        or hasattr(x, "__array_interface__")
        or hasattr(x, "__array_struct__")
    )
    if hasattr(x, "__iter__") and not array_like:
        raise TypeError(
            f"derivatives(): x is a {type(x).__name__}, iterable but neither an "
            "array nor an iterator. If it yields batches of points (a torch "
            "DataLoader, ...), pass iter(x) to stream them."
        )


def check_verbose(verbose):
    if isinstance(verbose, bool) or verbose not in _VERBOSE:
        raise ValueError(
            '`verbose` must be "auto" (a progress bar in a terminal or notebook, for '
            f"{AUTO_PROGRESS_CHUNKS} chunks or more), 0 (silent), 1 (a "
            f"progress bar) or 2 (one line at the end); got {verbose!r}."
        )
    return verbose


def progress_bar(verbose, target, chunks, unit):
    """A `keras.utils.Progbar` counting `target` `unit`s (None: unknown),
    or None where `verbose` says silent. `chunks`: how many chunks the run
    takes (None: unknown), which "auto" weighs."""
    if verbose == "auto":
        interactive = (
            getattr(sys.stdout, "isatty", lambda: False)() or "ipykernel" in sys.modules
        )
        long_run = chunks is None or chunks >= AUTO_PROGRESS_CHUNKS
        verbose = 1 if interactive and long_run else 0
    if verbose == 0:
        return None
    return keras.utils.Progbar(target, verbose=verbose, unit_name=unit)


def counted(pieces, bar):
    """`pieces`, unchanged, counted on `bar` (one unit each) as they pass."""
    if bar is None:
        yield from pieces
        return
    count = 0
    for count, piece in enumerate(pieces, 1):  # noqa: B007 - read after the loop
        bar.update(count)
        yield piece
    if bar.target != count:  # a length learnt at the end: now it is known
        bar.target = count
        bar.update(count, finalize=True)


class PointBatches:
    """The point batches of a stream, each checked as it is read: a float
    array `(b, d)` with `b >= 1`, or a tuple whose first entry is one (the
    `(x, y)` and `(x, y, sample_weight)` batches of training data; the
    other entries are ignored). Every batch has the width and dtype of the
    first, which `read_first()` reads: they key the compiled function.

    Attributes:
        count: the number of batches where the stream says it (a
            `PyDataset`'s `num_batches`, a `tf.data.Dataset`'s
            cardinality), else None.
        infinite: whether the stream says it never ends.
        width, dtype: those of the first batch, once read.
        first_size: the number of points in the first batch, once read.
    """

    def __init__(self, x):
        """Nothing is read yet: errors found before `read_first()` leave
        the stream whole."""
        elements, self.count, self.infinite = _elements(x)
        self._elements = iter(elements)
        self._first = None

    def read_first(self):
        """Read the first batch, which sets `width`, `dtype`, `first_size`."""
        first = next(self._elements, _END)
        if first is _END:
            raise ValueError("derivatives() got an empty stream: x gave no batches.")
        self._first = self._check(first, 0)
        self.width, self.dtype = self._first.shape[1], self._first.dtype
        self.first_size = len(self._first)

    def __iter__(self):
        first, self._first = self._first, None  # hold no batch once passed on
        if first is None:
            raise RuntimeError(
                "A stream of point batches is read once, after read_first()."
            )
        yield first
        for index, element in enumerate(self._elements, 1):
            yield self._check(element, index)

    def _check(self, element, index):
        where = f"derivatives(): batch {index} of x (counting from 0)"
        if isinstance(element, tuple):  # (x,), (x, y), (x, y, sample_weight)
            if not element:
                raise ValueError(f"{where} is an empty tuple; expected points.")
            element = element[0]
        if isinstance(element, dict):
            raise ValueError(
                f"{where} is a dict ({', '.join(map(repr, element))}); "
                "derivatives() takes networks with one input: give each batch "
                "as an array (b, d), or a tuple whose first entry is one."
            )
        batch = np.asarray(element)
        if batch.ndim != 2:
            raise ValueError(
                f"{where} has shape {batch.shape}; each batch must be an array "
                "(b, d) of points, or a tuple whose first entry is one."
            )
        if len(batch) == 0:
            raise ValueError(f"{where} has no points (shape {batch.shape}).")
        if index == 0:
            if not _is_float(batch.dtype):
                raise TypeError(
                    f"{where} has dtype {batch.dtype}; derivatives need float "
                    "inputs. Cast it first, e.g. x.astype('float32')."
                )
            return batch
        if batch.shape[1] != self.width:
            raise ValueError(
                f"{where} has {batch.shape[1]} features; batch 0 had "
                f"{self.width}. Every batch must have the same width."
            )
        if batch.dtype != self.dtype:
            raise TypeError(
                f"{where} has dtype {batch.dtype}; batch 0 had {self.dtype}. "
                "Give every batch one float dtype."
            )
        return batch


def _elements(x):
    """`(elements, count, infinite)` of a stream."""
    if isinstance(x, keras.utils.PyDataset):
        try:
            count = x.num_batches
        except NotImplementedError:  # as Keras reads it: no count is infinite
            count = None
        indices = itertools.count() if count is None else range(count)
        return (x[i] for i in indices), count, count is None
    if hasattr(x, "as_numpy_iterator"):  # tf.data.Dataset
        cardinality = int(x.cardinality())  # -1 infinite, -2 unknown
        count = cardinality if cardinality >= 0 else None
        return x.as_numpy_iterator(), count, cardinality == -1
    return x, None, False


def _is_float(dtype):
    try:
        return keras.backend.is_float_dtype(keras.backend.standardize_dtype(dtype))
    except ValueError:  # strings, objects: not a dtype Keras knows
        return False


def output_paths(out, keys):
    """The file `out/<key>.npy` of each output, or a clear error where one
    exists already (nothing is overwritten) or a key is no portable file
    name. The directory is created if missing."""
    out = os.fspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise FileExistsError(
            f"out={out!r} is a file; out= names a directory that receives one "
            ".npy file per output."
        )
    check_file_names(keys)
    paths = [os.path.join(out, f"{key}.npy") for key in keys]
    taken = [p for p in paths if os.path.exists(p)]
    if taken:
        raise FileExistsError(
            f"derivatives() does not overwrite files; these exist: "
            f"{', '.join(taken)}. Remove them or choose another out= directory."
        )
    os.makedirs(out, exist_ok=True)
    return paths


def check_file_names(keys):
    """A clear error unless every key makes a file name that is the same
    on every common file system: letters, digits, `_`, `.` and `-`, not
    starting with `.` or `-`, not a name Windows reserves (`CON`, `NUL`,
    `COM1`, ...), and no two equal up to case (macOS and Windows do not
    tell `Y` from `y`)."""
    bad = [
        k
        for k in keys
        if not isinstance(k, str)
        or not _FILE_NAME.fullmatch(k)
        or k.split(".")[0].upper() in _WINDOWS_RESERVED
    ]
    if bad:
        raise ValueError(
            f"out= writes one file per output, named after it; "
            f"{', '.join(map(repr, bad))} is no portable file name. Rename those "
            "partials: letters, digits, '_', '.' and '-', not starting with "
            "'.' or '-', and no name Windows reserves (CON, PRN, AUX, NUL, "
            "COM1-9, LPT1-9)."
        )
    folded = {}
    for key in keys:
        folded.setdefault(key.casefold(), []).append(key)
    clashes = [names for names in folded.values() if len(names) > 1]
    if clashes:
        raise ValueError(
            "out= writes one file per output, named after it; "
            f"{'; '.join(' and '.join(map(repr, c)) for c in clashes)} differ "
            "only in case, one file on macOS and Windows. Rename those partials."
        )


class _NpyAppender:
    """Rows appended to a `.npy` file whose length is known at the end only.
    NumPy pads a header so that the first dimension can grow to 21 digits
    at the same header length (numpy >= 1.23; the TensorFlow this package
    needs requires it), so the header is written for 0 rows and rewritten in
    place for the final count."""

    def __init__(self, path):
        self._file = open(path, "wb")  # noqa: SIM115 - closed by finish()
        self._rows = 0
        self._data_offset = None

    def append(self, value):
        value = np.ascontiguousarray(value)
        if self._data_offset is None:
            self._row_shape, self._dtype = value.shape[1:], value.dtype
            self._write_header()
            self._data_offset = self._file.tell()
        self._file.write(value.data)
        self._rows += len(value)

    def finish(self):
        self._file.seek(0)
        self._write_header()
        if self._file.tell() != self._data_offset:  # never with numpy >= 1.23
            raise RuntimeError(
                "numpy wrote a .npy header of another length for the final row "
                "count; upgrade numpy."
            )
        self._file.close()

    def close(self):
        self._file.close()

    def _write_header(self):
        np.lib.format.write_array_header_1_0(
            self._file,
            {
                "descr": np.lib.format.dtype_to_descr(self._dtype),
                "fortran_order": False,
                "shape": (self._rows, *self._row_shape),
            },
        )


def write_npy(paths, pieces):
    """Append each piece (a list of arrays, one per output) to the file of
    its output, then give the files their names, all or none, never
    replacing a file (one made meanwhile by another writer is a
    FileExistsError), and return them as read-only memory maps."""
    with atomic_paths(paths, replace=False) as temporary:
        with contextlib.ExitStack() as stack:
            appenders = []
            for tmp in temporary:
                appenders.append(_NpyAppender(tmp))
                stack.callback(appenders[-1].close)  # closed before the renames
            for values in pieces:
                for appender, value in zip(appenders, values, strict=True):
                    appender.append(value)
            for appender in appenders:
                appender.finish()
    return [np.load(path, mmap_mode="r") for path in paths]


def evaluate_batches(evaluator, batches, batch_size):
    """The outputs of `evaluator` (a list in its keys' order) for each
    batch of `batches`, in chunks of `batch_size` points. Without one: the
    first batch's size, up to the evaluator's default; where a later batch
    holds more, the chunk grows to the next power of two (up to that
    default again), so a small first batch does not split the later ones
    into many calls. Each growth is one more compiled shape: at most
    log2(default) + 1 of them, one in a stream of equal batches."""
    size = batch_size
    for batch in batches:
        if size is None:
            size = min(len(batch), evaluator.default_batch_size)
        elif batch_size is None and len(batch) > size:
            grown = 1 << (len(batch) - 1).bit_length()
            size = max(size, min(grown, evaluator.default_batch_size))
        yield evaluator.evaluate(batch, size)
