"""The `keras-deriv` command's entry point: parses the command line and
answers `--help` and `--version` without importing keras_deriv, Keras or a
framework (importing keras_deriv imports Keras and its backend, which takes
seconds). The commands themselves run in `keras_deriv.cli`.

Exit codes: 0 success, 1 the model cannot be loaded or inspected, 2 usage
error.
"""

import argparse
import contextlib
import importlib.metadata
import os
import re
import sys
import threading


def version():
    try:
        return importlib.metadata.version("keras-deriv")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def parser():
    root = argparse.ArgumentParser(
        prog="keras-deriv",
        description="Input derivatives of Keras models: the demo and model inspection.",
    )
    root.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    commands = root.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="fit y = x^2 with a ReLU and smooth nets and compare their derivatives",
    )
    demo.add_argument("--out", default="keras_deriv_demo", help="folder for demo.png")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    inspect = commands.add_parser(
        "inspect", help="zero-curvature findings and derivative curves of a saved model"
    )
    inspect.add_argument("model", help="path of a .keras file")
    inspect.add_argument(
        "--range",
        nargs=2,
        type=float,
        default=(0.0, 1.0),
        metavar=("LO", "HI"),
        help="slice of the feature (default 0 1)",
    )
    inspect.add_argument("--points", type=int, default=200, help="points on the slice")
    inspect.add_argument("--feature", type=int, default=0, help="input feature to vary")
    inspect.add_argument(
        "--at",
        nargs="+",
        type=float,
        default=None,
        metavar="V",
        help="values of all input features off the slice (default 0)",
    )
    inspect.add_argument("--out", default=".", help="folder for the PNG and CSV")
    inspect.add_argument(
        "--network",
        default=None,
        metavar="NAME",
        help="the layer or sub-model to differentiate (default: the model, or the "
        "network its DerivativeModel wraps)",
    )
    inspect.add_argument(
        "--smoothing",
        type=float,
        default=None,
        metavar="SIGMA",
        help="also show the derivatives smoothed at resolution SIGMA (default: "
        "1/20 of the range for a piecewise-linear network, else none)",
    )
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    inspect.add_argument(
        "--unsafe",
        action="store_true",
        help="load with safe_mode=False: runs Python code stored in the file; "
        "only for files you trust",
    )
    return root


# Lines native code (TensorFlow, XLA, absl) writes at start-up on every
# run, whatever TF_CPP_MIN_LOG_LEVEL says.
_BANNER = re.compile(
    rb"WARNING: All log messages before absl::InitializeLog|"
    rb"^[IW]0000 00:00:|"
    rb"^E0000 00:00:[0-9.]+ +[0-9]+ cuda_|"
    rb"oneDNN custom operations are on|"
    rb"cudart_stub|Could not find cuda drivers|"
    rb"This TensorFlow binary is optimized|"
    rb"rebuild TensorFlow with the appropriate compiler flags"
)


@contextlib.contextmanager
def framework_banner_filtered():
    """Drops the start-up lines native code writes to file descriptor 2
    (TensorFlow's and XLA's lines about oneDNN and CUDA drivers, which
    ignore TF_CPP_MIN_LOG_LEVEL); every other line, ours and native errors
    alike, passes through as it is written."""
    try:
        sys.stderr.flush()
        if sys.stderr.fileno() != 2:
            raise ValueError("stderr is redirected")
        terminal = os.dup(2)
    except (AttributeError, OSError, ValueError):  # captured, embedded, closed
        yield
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    forwarder = threading.Thread(
        target=_forward, args=(read_end, terminal), daemon=True
    )
    forwarder.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(terminal, 2)  # the pipe's last writer: the forwarder sees EOF
        forwarder.join(timeout=5)
        os.close(terminal)


def _forward(read_end, terminal):
    with os.fdopen(read_end, "rb") as lines:
        for line in lines:
            if not _BANNER.search(line):
                os.write(terminal, line)


def main(argv=None):
    args = parser().parse_args(argv)
    # This process is the command line's own: TensorFlow's start-up banner
    # is noise here (a library would not touch the environment).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with framework_banner_filtered():
        from keras_deriv.cli import run_command

        status = run_command(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
