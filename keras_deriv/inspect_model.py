"""`keras-deriv inspect MODEL.keras`: zero-curvature findings and derivative
curves of a saved model along one input feature."""

import csv
import dataclasses
import io
import json
import os
import sys
import warnings
import zipfile

import keras
import numpy as np

from keras_deriv import plotting
from keras_deriv.analysis.curvature import (
    curvature_verdict,
    find_zero_curvature_activations,
)
from keras_deriv.atomic_files import write_atomically
from keras_deriv.errors import ZeroCurvatureWarning
from keras_deriv.evaluation import derivatives, network_to_differentiate
from keras_deriv.probes import slice_points


class ModelLoadError(Exception):
    """The model file cannot be loaded; the message is one sentence."""


class UsageError(ValueError):
    """Arguments that do not fit the model (exit code 2)."""


@dataclasses.dataclass(frozen=True)
class Limits:
    """What `inspect` accepts from a model file, checked before anything is
    extracted or parsed (Keras checks archive members one by one, not their
    total, and builds whatever sizes the config names)."""

    archive_bytes: int = 2**30  # the file itself
    members_bytes: int = 2**31  # all members, uncompressed
    config_bytes: int = 16 * 2**20  # config.json, uncompressed
    size_value: int = 10**8  # any units/filters/dim/shape entry in the config
    # the two largest sizes multiplied: a bound on any one weight's entries
    weight_entries: int = 5 * 10**8


_SIZE_KEYS = ("units", "filters", "input_dim", "output_dim", "num_heads", "key_dim")


def check_archive(path, limits=Limits()):
    """Refuse, in one sentence, an archive beyond `limits`."""
    size = os.path.getsize(path)
    if size > limits.archive_bytes:
        raise ModelLoadError(
            f"{path} is {size} bytes, over inspect's limit of {limits.archive_bytes}."
        )
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
        total = sum(m.file_size for m in members)
        if total > limits.members_bytes:
            raise ModelLoadError(
                f"{path} would extract to {total} bytes, over inspect's limit of "
                f"{limits.members_bytes}."
            )
        config = next((m for m in members if m.filename == "config.json"), None)
        if config is None:
            raise ModelLoadError(f"{path} has no config.json: not a .keras model file.")
        if config.file_size > limits.config_bytes:
            raise ModelLoadError(
                f"{path}'s config.json is {config.file_size} bytes, over inspect's "
                f"limit of {limits.config_bytes}."
            )
        try:
            text = archive.read(config).decode("utf-8")
            parsed = json.loads(text)
        except (UnicodeDecodeError, ValueError) as err:
            raise ModelLoadError(f"{path}'s config.json is not valid JSON.") from err
        except RecursionError:
            raise ModelLoadError(
                f"{path}'s config.json nests deeper than Python can read."
            ) from None
    sizes = sorted(_sizes(parsed))[-2:]
    if sizes and sizes[-1] > limits.size_value:
        raise ModelLoadError(
            f"{path} asks for a layer size of {sizes[-1]}, over inspect's limit of "
            f"{limits.size_value}: building it would exhaust memory."
        )
    if len(sizes) == 2 and sizes[0] * sizes[1] > limits.weight_entries:
        raise ModelLoadError(
            f"{path} asks for sizes {sizes[1]} and {sizes[0]}, which could make a "
            f"weight of {sizes[0] * sizes[1]} entries, over inspect's limit of "
            f"{limits.weight_entries}: building it would exhaust memory."
        )


def _sizes(value):
    """Every integer a config gives a layer size or a shape entry."""
    sizes = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, v in item.items():
                if key in _SIZE_KEYS:
                    sizes += [v] if _is_int(v) else []
                elif isinstance(key, str) and key.endswith("shape"):
                    entries = v if isinstance(v, list) else []
                    sizes += [e for e in entries if _is_int(e)]
                stack.append(v)
        elif isinstance(item, list):
            stack.extend(item)
    return sizes


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_safe_mode_refusal(message):
    # Keras's own refusals, and not a message that merely quotes the words
    # (an unknown class named "safe_mode" in a hostile file)
    return message.startswith("Requested the ") and (
        "keras.config.enable_unsafe_deserialization()" in message
    )


def load(path, unsafe=False, limits=Limits()):
    """Load a `.keras` model (safe mode unless `unsafe`), or raise
    `ModelLoadError` with one clear sentence."""
    if not os.path.exists(path):
        raise ModelLoadError(f"No such file: {path}.")
    if not path.endswith(".keras"):
        # Keras picks its loader by the extension, and its legacy .h5
        # loader ignores safe mode: only .keras archives are loaded here.
        raise ModelLoadError(
            f"{path} is not a .keras file. inspect loads .keras archives only; a "
            "legacy .h5 file converts with keras.models.load_model('m.h5')"
            ".save('m.keras'), in a Python that trusts it."
        )
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(
            f"{path} is not a Keras model file (a .keras file is a zip archive); "
            "it may be corrupt or of another format. A legacy .h5 file converts "
            "with keras.models.load_model('m.h5').save('m.keras'), in a Python "
            "that trusts it."
        )
    check_archive(path, limits)
    try:
        return keras.models.load_model(path, compile=False, safe_mode=not unsafe)
    except Exception as err:  # noqa: BLE001 - any loading failure is reported
        text = str(err)
        chain = [text]
        cause = err.__cause__ or err.__context__
        while cause is not None and len(chain) < 20:
            chain.append(str(cause))
            cause = cause.__cause__ or cause.__context__
        refusal = next((link for link in chain if _is_safe_mode_refusal(link)), None)
        if refusal is not None:
            what = refusal.split(". ")[0].removeprefix("Requested the ")
            raise ModelLoadError(
                f"{path} needs what safe mode refuses ({what}). If you trust its "
                "source, pass --unsafe: loading it will then execute the code "
                "it holds, which can do anything your account can."
            ) from err
        first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
        raise ModelLoadError(f"Could not load {path}: {first}") from err


def _network(model, name):
    """The network to differentiate: `--network NAME` (a layer of the model,
    nested ones included), else what `derivatives()` would pick."""
    if name is None:
        try:
            return network_to_differentiate(model)
        except ValueError as err:
            raise UsageError(f"{err} Name one with --network NAME.") from None
    stack = [model]
    while stack:
        layer = stack.pop()
        if layer.name == name:
            return layer
        stack.extend(getattr(layer, "layers", []))
    raise UsageError(f"--network {name!r}: the model has no layer of that name.")


def input_width(net):
    """d, for a network taking points of shape (batch, d) with one output."""
    try:
        inputs = keras.tree.flatten(getattr(net, "inputs", None) or [net.input])
        outputs = keras.tree.flatten(getattr(net, "outputs", None) or [net.output])
    except (AttributeError, IndexError, TypeError, ValueError):
        inputs = outputs = []
    if len(inputs) > 1:
        raise UsageError(
            f"{net.name!r} has {len(inputs)} inputs; inspect varies one input of "
            "points (batch, d). Name a one-input part of the model with --network "
            "NAME, or call keras_deriv.derivatives() in Python."
        )
    if len(outputs) > 1:
        raise UsageError(
            f"{net.name!r} has {len(outputs)} outputs; name the one network to "
            "differentiate with --network NAME (a layer or sub-model)."
        )
    if not inputs or inputs[0].shape[-1] is None:
        raise ModelLoadError("The model does not declare its input width (d).")
    shape = tuple(inputs[0].shape)
    if len(shape) != 2:
        raise ModelLoadError(
            f"inspect varies one feature of points of shape (batch, d); "
            f"{net.name!r} takes inputs of shape {shape}. Call "
            "keras_deriv.derivatives() in Python with points of that shape."
        )
    return int(shape[-1])


def curves(values, feature):
    """Flatten the outputs to (points, m): y_j, dy_j (along feature), d2y_j."""
    y, dy, d2y = values
    n = len(y)
    return {
        "y": y.reshape(n, -1),
        "dy": dy.reshape(n, -1, dy.shape[-1])[:, :, feature],
        "d2y": d2y.reshape(n, -1, d2y.shape[-1])[:, :, feature],
    }


def write_csv(path, x_feature, table):
    columns = ["x"]
    for key, values in table.items():
        columns += [f"{key}_{j}" for j in range(values.shape[1])]
    rows = np.column_stack([x_feature, *table.values()])
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    writer.writerows([[repr(float(v)) for v in row] for row in rows])
    text = buffer.getvalue()

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            f.write(text)

    write_atomically(path, write)


def _check_out(out):
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out} is a file, not a folder.")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        raise UsageError(f"--out {out} cannot be created ({err.strerror}).") from None
    if not os.access(out, os.W_OK):
        raise UsageError(f"--out {out} is not writable.")


def run(args, stream=None):
    """Inspect `args.model`; returns the report dict (also printed)."""
    stream = stream or sys.stdout
    _check_out(args.out)  # before the work, not after
    model = load(args.model, unsafe=args.unsafe)
    net = _network(model, args.network)
    width = input_width(net)
    if not 0 <= args.feature < width:
        raise UsageError(
            f"--feature must be from 0 to {width - 1}; got {args.feature}."
        )
    if args.at is not None and len(args.at) != width:
        raise UsageError(f"--at needs {width} values (one per input feature).")
    lo, hi = args.range
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise UsageError(f"--range needs two finite numbers LO < HI; got {lo} {hi}.")
    if args.at is not None and not np.all(np.isfinite(args.at)):
        raise UsageError("--at needs finite numbers.")
    if args.smoothing is not None and not (
        np.isfinite(args.smoothing) and args.smoothing > 0
    ):
        raise UsageError(f"--smoothing needs a positive number; got {args.smoothing}.")
    findings = find_zero_curvature_activations(net)
    verdict = curvature_verdict(net)
    x = slice_points(width, args.feature, lo, hi, args.points, args.at)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ZeroCurvatureWarning)  # reported below
        values = derivatives(net, x, order=2)
    table = curves(values, args.feature)
    # A piecewise-linear net's exact curvature is 0: show what it represents,
    # smoothed at a resolution of 1/20 of the slice unless told.
    sigma = args.smoothing
    if sigma is None and verdict in ("piecewise_linear", "affine"):
        sigma = (hi - lo) / 20
    smoothed = None
    if sigma is not None:
        along = derivatives(net, x, order=2, smoothing=sigma, wrt=[args.feature])
        smoothed = curves(along, 0)  # smoothed along the slice's feature only
        table.update({f"{k}_smoothed": smoothed[k] for k in ("dy", "d2y")})
    stem = os.path.splitext(os.path.basename(args.model))[0]
    png = os.path.join(args.out, f"{stem}_derivatives.png")
    csv_path = os.path.join(args.out, f"{stem}_derivatives.csv")
    x_feature = x[:, args.feature]
    panels = {
        key: {f"output {j}": table[key][:, j] for j in range(table[key].shape[1])}
        for key in ("y", "dy", "d2y")
    }
    if smoothed is not None:
        for key in ("dy", "d2y"):
            for j in range(smoothed[key].shape[1]):
                label = f"output {j}, smoothed σ = {sigma:g}"
                panels[key][label] = smoothed[key][:, j]
    fig = plotting.comparison_figure(
        x_feature,
        panels,
        xlabel=f"x[{args.feature}]",
        title=f"{stem}: derivatives along x[{args.feature}]",
    )
    plotting.save_png(fig, png)
    write_csv(csv_path, x_feature, table)
    report = {
        "model": args.model,
        "network": net.name,
        "input_width": width,
        "findings": [
            {
                "layer": f.layer,
                "activation": f.activation,
                "zero_fraction": f.zero_fraction,
            }
            for f in findings
        ],
        "identically_zero_curvature": verdict == "piecewise_linear",
        "curvature": verdict,
        "slice": {
            "feature": args.feature,
            "range": list(args.range),
            "points": args.points,
        },
        "dy_abs_mean": float(np.abs(table["dy"]).mean()),
        "d2y_abs_mean": float(np.abs(table["d2y"]).mean()),
        "d2y_zero_fraction": float(np.mean(table["d2y"] == 0.0)),
        "smoothed": None
        if smoothed is None
        else {
            "sigma": sigma,
            "dy_abs_mean": float(np.abs(smoothed["dy"]).mean()),
            "d2y_mean": float(smoothed["d2y"].mean()),
            "d2y_abs_mean": float(np.abs(smoothed["d2y"]).mean()),
        },
        "files": {"png": png, "csv": csv_path},
    }
    if args.json:
        print(json.dumps(report, indent=2), file=stream)
    else:
        print_report(report, stream)
    return report


def printable(text):
    """`text` with control characters escaped: names come from the model
    file, and a terminal escape sequence in one could redraw the screen."""
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
        for c in str(text)
    )


def print_report(report, stream):
    model, network = printable(report["model"]), printable(report["network"])
    print(
        f"{model}: network '{network}', {report['input_width']} input feature(s)",
        file=stream,
    )
    if report["findings"]:
        print("Activations whose second derivative vanishes:", file=stream)
        for f in report["findings"]:
            print(
                f"  {printable(f['layer'])}: {printable(f['activation'])} (zero on "
                f"{f['zero_fraction']:.0%} of the probe grid)",
                file=stream,
            )
    else:
        print("No activation with a vanishing second derivative.", file=stream)
    verdict = {
        "piecewise_linear": "identically zero: the network is piecewise linear",
        "affine": "identically zero: the network is affine",
        "curved": "not identically zero",
        "unknown": "unknown: the model has layers keras_deriv cannot see "
        "into (custom or subclassed); see the measured values below",
    }[report["curvature"]]
    print(f"Curvature (d2y/dx2): {verdict}.", file=stream)
    s = report["slice"]
    lo, hi = s["range"]
    print(
        f"Along x[{s['feature']}] in [{lo}, {hi}] ({s['points']} points): mean |dy| "
        f"{report['dy_abs_mean']:.4g}, mean |d2y| {report['d2y_abs_mean']:.4g}, d2y "
        f"exactly 0 at {report['d2y_zero_fraction']:.0%} of the points.",
        file=stream,
    )
    smoothed = report["smoothed"]
    if smoothed is not None:
        print(
            f"Smoothed at σ = {smoothed['sigma']:.4g} along x[{s['feature']}] (set it "
            f"with --smoothing): mean d2y {smoothed['d2y_mean']:.4g}, mean |dy| "
            f"{smoothed['dy_abs_mean']:.4g}. This is the curvature of the function "
            "the network represents, seen at resolution σ (a Gaussian average over "
            "about ±σ), not its exact derivative.",
            file=stream,
        )
    files = report["files"]
    print(f"Wrote {printable(files['png'])} and {printable(files['csv'])}", file=stream)
