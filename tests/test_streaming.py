"""`derivatives()` on streams of point batches (generators, `tf.data`,
`keras.utils.PyDataset`), to memory-mapped `.npy` files, with progress."""

import itertools
import os
import tracemalloc

import keras
import numpy as np
import pytest
from conftest import BACKEND

from keras_deriv import derivatives

SIZES = [7, 20, 13, 1, 19]  # 60 points in batches of varying size


class CountCalls(keras.layers.Layer):
    """Identity that counts how often its Python `call` runs: once per trace
    in a compiled function, once per chunk when running eagerly."""

    calls = 0

    def call(self, inputs):
        CountCalls.calls += 1
        return inputs


def tanh_net(d=2, width=6, counting=False):
    return keras.Sequential(
        [
            keras.Input((d,)),
            *([CountCalls()] if counting else []),
            keras.layers.Dense(width, activation="tanh"),
            keras.layers.Dense(1),
        ]
    )


def closed_form(net, x):
    """y, dy, d2y (diagonal) of a `tanh_net` in float64 NumPy, from its
    weights: y = tanh(x W1 + b1) W2 + b2, so dy_i = sum_j W2_j t'_j W1_ij
    and d2y_i = sum_j W2_j t''_j W1_ij², with t' = 1 - t², t'' = -2 t t'."""
    (w1, b1), (w2, b2) = (
        [np.asarray(keras.ops.convert_to_numpy(v), "float64") for v in layer.weights]
        for layer in net.layers
        if layer.weights
    )
    t = np.tanh(np.asarray(x, "float64") @ w1 + b1)
    dt, d2t = 1 - t**2, -2 * t * (1 - t**2)
    y = t @ w2 + b2
    dy = np.einsum("nj,jo,ij->noi", dt, w2, w1)
    d2y = np.einsum("nj,jo,ij->noi", d2t, w2, w1**2)
    return y, dy, d2y


@pytest.fixture
def x():
    return np.random.default_rng(0).uniform(-1, 1, (sum(SIZES), 2)).astype("float32")


def split(x, sizes=SIZES):
    bounds = np.cumsum([0, *sizes])
    return [x[a:b] for a, b in itertools.pairwise(bounds)]


class Batches(keras.utils.PyDataset):
    """`(x, y)` training batches of the given sizes, by index."""

    def __init__(self, x, sizes=SIZES):
        super().__init__()
        self.batches = split(x, sizes)

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        batch = self.batches[index]
        return batch, batch[:, :1]


def stream(kind, x):
    if kind == "generator":
        return (batch for batch in split(x))
    if kind == "generator of (x, y)":
        return ((batch, batch[:, :1]) for batch in split(x))
    if kind == "PyDataset":
        return Batches(x)
    tf = pytest.importorskip("tensorflow")
    return tf.data.Dataset.from_tensor_slices((x, x[:, :1])).batch(16)


def concatenated(results):
    return tuple(np.concatenate(level) for level in zip(*results, strict=True))


def assert_float32_equal(got, want):
    """Equal up to float32 rounding: the chunks of a stream hold other
    points than the array's, and a matmul may round a row differently
    with other rows beside it."""
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "kind", ["generator", "generator of (x, y)", "PyDataset", "tf.data"]
)
def test_each_stream_kind_matches_the_array_path(kind, x):
    net = tanh_net()
    whole = derivatives(net, x, batch_size=16, verbose=0)
    results = list(derivatives(net, stream(kind, x), batch_size=16, verbose=0))
    sizes = [16, 16, 16, 12] if kind == "tf.data" else SIZES
    assert [len(r[0]) for r in results] == sizes  # one result per batch
    assert all(isinstance(r, tuple) and len(r) == 3 for r in results)
    assert_float32_equal(concatenated(results), whole)


def test_streamed_derivatives_match_the_closed_form(x):
    net = tanh_net()
    y, dy, d2y = closed_form(net, x)
    # float32 arithmetic on values of order 1: a few ulps, well below 1e-5
    got = concatenated(derivatives(net, iter(split(x)), verbose=0))
    for a, b in zip(got, (y, dy, d2y), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    named = list(
        derivatives(
            net,
            Batches(x),
            partials={"lap": {"xx": 1, "yy": 1}},
            variables="xy",
            verbose=0,
        )
    )
    assert all(set(r) == {"y", "lap"} for r in named)
    lap = np.concatenate([r["lap"] for r in named])
    np.testing.assert_allclose(lap, d2y.sum(-1), rtol=0, atol=1e-5)


def test_out_writes_memory_maps_that_round_trip(x, tmp_path):
    net = tanh_net()
    whole = derivatives(net, x, batch_size=16, verbose=0)
    np.save(tmp_path / "x.npy", x)
    points = np.load(tmp_path / "x.npy", mmap_mode="r")
    mapped = derivatives(net, points, batch_size=16, out=tmp_path / "a", verbose=0)
    assert all(isinstance(m, np.memmap) and not m.flags.writeable for m in mapped)
    for got, want in zip(mapped, whole, strict=True):  # the same chunks
        np.testing.assert_array_equal(got, want)
    assert sorted(os.listdir(tmp_path / "a")) == ["d2y.npy", "dy.npy", "y.npy"]
    reread = [np.load(tmp_path / "a" / f"{k}.npy") for k in ("y", "dy", "d2y")]
    for got, want in zip(reread, whole, strict=True):
        np.testing.assert_array_equal(got, want)

    streamed = derivatives(net, Batches(x), batch_size=16, out=tmp_path / "b")
    assert_float32_equal(tuple(streamed), whole)
    named = derivatives(
        net,
        stream("generator", x),
        partials={"lap": {"xx": 1, "yy": 1}},
        variables="xy",
        out=str(tmp_path / "c"),
        verbose=0,
    )
    assert set(named) == {"y", "lap"} and named["lap"].shape == (len(x), 1)
    assert sorted(os.listdir(tmp_path / "c")) == ["lap.npy", "y.npy"]


def test_memory_mapped_points_are_read_chunk_by_chunk(tmp_path):
    """A memory-mapped x is never copied whole, and out= holds no more than
    a chunk of results: NumPy's allocations (which tracemalloc sees) stay
    far below the size of x."""
    net = tanh_net(d=8, width=4)
    x = np.random.default_rng(1).uniform(-1, 1, (50_000, 8)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    points = np.load(tmp_path / "x.npy", mmap_mode="r")
    kwargs = dict(order=1, batch_size=2000, verbose=0)
    derivatives(net, points[:2000], out=tmp_path / "warm", **kwargs)  # compiled
    tracemalloc.start()
    try:
        y, dy = derivatives(net, points, out=tmp_path / "out", **kwargs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < x.nbytes / 3, (peak, x.nbytes)
    np.testing.assert_allclose(y[-5:], net.predict(x[-5:], verbose=0), atol=1e-6)


def test_a_generator_is_consumed_lazily(x):
    net = tanh_net()
    pulled = []

    def batches():
        for batch in split(x):
            pulled.append(len(batch))
            yield batch

    results = derivatives(net, batches(), verbose=0)
    assert len(pulled) == 1  # the first batch is read at once, to check it
    y, dy, d2y = next(results)
    assert len(pulled) == 1 and len(y) == SIZES[0]
    next(results)
    assert len(pulled) == 2
    assert len(list(results)) == len(SIZES) - 2 and len(pulled) == len(SIZES)


def test_one_compiled_function_for_batches_of_any_size(x):
    """Each batch is padded to (or split into) chunks of one size. Compiled
    (TensorFlow, JAX), the network's `call` runs at tracing only; eager
    (torch), once per chunk."""
    net = tanh_net(counting=True)
    list(derivatives(net, iter([x[:10]]), verbose=0))  # chunks of 10, traced
    before = CountCalls.calls
    list(derivatives(net, iter([x[:10]]), verbose=0))
    per_chunk = CountCalls.calls - before  # 0 compiled, 1 eager
    assert per_chunk == (1 if BACKEND == "torch" else 0)
    before = CountCalls.calls
    sizes = [10, 3, 1, 7]  # batch_size=None: the first batch's, 10
    results = list(derivatives(net, iter(split(x, sizes)), verbose=0))
    assert [len(r[0]) for r in results] == sizes
    assert CountCalls.calls - before == per_chunk * len(sizes)
    before = CountCalls.calls
    sizes = [10, 3, 25, 1, 7]  # batch_size=5: 25 points are five chunks
    results = list(derivatives(net, iter(split(x, sizes)), batch_size=5, verbose=0))
    assert [len(r[0]) for r in results] == sizes
    traced = 0 if BACKEND == "torch" else 1  # chunks of 5: one new shape
    assert CountCalls.calls - before == traced + per_chunk * (2 + 1 + 5 + 1 + 2)


def test_a_tiny_first_batch_does_not_split_the_later_ones(x, monkeypatch):
    """Without batch_size, the chunk grows (to a power of two) for a later,
    larger batch, instead of staying at the first batch's size."""
    net = tanh_net()
    calls = []
    predict = keras.Model.predict_on_batch

    def counting(self, chunk):
        calls.append(len(chunk))
        return predict(self, chunk)

    monkeypatch.setattr(keras.Model, "predict_on_batch", counting)
    many = np.resize(x, (2000, 2))
    results = list(derivatives(net, iter([x[:1], many, x[:3]]), verbose=0))
    assert [len(r[0]) for r in results] == [1, 2000, 3]
    assert calls == [1, 2048, 2048]
    np.testing.assert_allclose(results[1][2], derivatives(net, many)[2], atol=1e-6)


def test_bad_streams_are_clear_errors(x, tmp_path):
    net = tanh_net()
    cases = [
        ([x[:5], x[:5, :1]], ValueError, r"batch 1 .* 1 features; batch 0 had 2"),
        ([x[:5], x[0]], ValueError, r"batch 1 .*shape \(2,\)"),
        ([x[:5], x[:0]], ValueError, "batch 1 .*no points"),
        ([x[:5], x[:5].astype("float64")], TypeError, "batch 1 .*float64"),
        ([x[:5].astype("int32")], TypeError, r"batch 0 .*astype"),
        ([{"x": x[:5]}], ValueError, "batch 0 .*one input"),
        ([], ValueError, "empty stream"),
    ]
    for batches, error, message in cases:
        with pytest.raises(error, match=message):
            list(derivatives(net, iter(batches), verbose=0))

    def failing():
        yield x[:5]
        yield x[:5]
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):  # nothing half written
        derivatives(net, failing(), out=tmp_path / "failed", verbose=0)
    assert os.listdir(tmp_path / "failed") == []

    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "dy.npy").write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="dy.npy"):
        derivatives(net, x, out=tmp_path / "taken", verbose=0)
    assert (tmp_path / "taken" / "dy.npy").read_bytes() == b"mine"
    assert os.listdir(tmp_path / "taken") == ["dy.npy"]
    with pytest.raises(FileExistsError, match="is a file"):
        derivatives(net, x, out=tmp_path / "taken" / "dy.npy", verbose=0)
    with pytest.raises(ValueError, match="no portable file name"):
        derivatives(
            net,
            x,
            partials={"a/b": "xx"},
            variables="xy",
            out=tmp_path / "named",
            verbose=0,
        )
    with pytest.raises(ValueError, match=r"pass iter\(x\)"):
        derivatives(net, [x[:5], x[:7]], verbose=0)  # a list of batches

    class Loader:  # iterable, not an iterator: a torch DataLoader, ...
        def __iter__(self):
            return iter([x[:5], x[5:]])

    with pytest.raises(TypeError, match=r"Loader.*pass iter\(x\)"):
        derivatives(net, Loader(), verbose=0)
    assert len(list(derivatives(net, iter(Loader()), verbose=0))) == 2
    for verbose in ("loud", True, 3):
        with pytest.raises(ValueError, match="verbose"):
            derivatives(net, x, verbose=verbose)


def test_an_infinite_dataset_cannot_go_to_files(x, tmp_path):
    tf = pytest.importorskip("tensorflow")
    forever = tf.data.Dataset.from_tensor_slices(x).batch(16).repeat()
    with pytest.raises(ValueError, match="infinite"):
        derivatives(tanh_net(), forever, out=tmp_path, verbose=0)
    assert os.listdir(tmp_path) == []


def test_progress_bar_follows_verbose(x, capsys):
    net = tanh_net()
    derivatives(net, x, batch_size=16, verbose=0)
    list(derivatives(net, Batches(x), verbose=0))
    derivatives(net, x, batch_size=1, verbose="auto")  # not a terminal here
    assert capsys.readouterr().out == ""
    derivatives(net, x, batch_size=16, verbose=1)
    assert f"{len(x)}/{len(x)}" in capsys.readouterr().out  # points
    list(derivatives(net, Batches(x), verbose=1))
    assert f"{len(SIZES)}/{len(SIZES)}" in capsys.readouterr().out  # batches
    list(derivatives(net, iter(split(x)), verbose=2))
    assert capsys.readouterr().out.count("\n") == 1  # one line at the end


def test_out_is_checked_before_the_stream_is_read(x, tmp_path):
    """An out= error leaves the stream whole: a retry writes every batch."""
    net = tanh_net()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "y.npy").write_bytes(b"mine")
    batches = iter(split(x))
    with pytest.raises(FileExistsError, match="y.npy"):
        derivatives(net, batches, out=tmp_path / "taken", verbose=0)
    with pytest.raises(ValueError, match="portable"):
        derivatives(
            net, batches, partials={"u:x": "x"}, variables="xy", out=tmp_path / "n"
        )
    y, dy, d2y = derivatives(net, batches, out=tmp_path / "fresh", verbose=0)
    assert len(y) == len(x)
    np.testing.assert_allclose(d2y, derivatives(net, x)[2], atol=1e-6)
    del y, dy, d2y


@pytest.mark.parametrize(
    "names, message",
    [
        (["u", "U"], "differ only in case"),
        (["u:x"], "no portable file name"),
        (["CON"], "no portable"),
        (["nul"], "no portable"),
        (["a\\b"], "no portable"),
        ([".hidden"], "no portable"),
    ],
)
def test_out_file_names_are_portable(x, tmp_path, names, message):
    partials = dict.fromkeys(names, "x")
    with pytest.raises(ValueError, match=message):
        derivatives(tanh_net(), x, partials=partials, variables="xy", out=tmp_path)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("hard_links", [True, False])
def test_a_file_made_meanwhile_is_never_replaced(x, tmp_path, monkeypatch, hard_links):
    """A file another writer makes after the out= check (here: while the
    stream is read) is left as it is: FileExistsError, and none of this
    call's files keeps its name."""
    if not hard_links:  # a file system without them: the fallback

        def no_link(*args):
            raise OSError(1, "hard links not supported")

        monkeypatch.setattr(os, "link", no_link)
    net = tanh_net()

    def batches():
        yield x[:30]
        (tmp_path / "dy.npy").write_bytes(b"theirs")
        yield x[30:]

    with pytest.raises(FileExistsError, match="dy.npy"):
        derivatives(net, batches(), out=tmp_path, verbose=0)
    assert sorted(os.listdir(tmp_path)) == ["dy.npy"]
    assert (tmp_path / "dy.npy").read_bytes() == b"theirs"
    (tmp_path / "dy.npy").unlink()
    y, dy, d2y = derivatives(net, iter(split(x)), out=tmp_path, verbose=0)
    assert sorted(os.listdir(tmp_path)) == ["d2y.npy", "dy.npy", "y.npy"]
    np.testing.assert_allclose(dy, derivatives(net, x)[1], atol=1e-6)
    del y, dy, d2y
