"""The `keras-deriv` command line (also `python -m keras_deriv`).

Exit codes: 0 success, 1 the model cannot be loaded, 2 usage error.
"""

import argparse
import re
import sys


def parser():
    root = argparse.ArgumentParser(
        prog="keras-deriv",
        description="Input derivatives of Keras models: the demo and model inspection.",
    )
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
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    inspect.add_argument(
        "--unsafe",
        action="store_true",
        help="load with safe_mode=False: runs Python code stored in the file; "
        "only for files you trust",
    )
    return root


def main(argv=None):
    args = parser().parse_args(argv)
    if args.command == "demo":
        from keras_deriv import demo

        demo.run(out_dir=args.out, seed=args.seed)
        return 0
    from keras_deriv import inspect_model

    if args.points < 2:
        print(
            "keras-deriv inspect: error: --points must be at least 2", file=sys.stderr
        )
        return 2
    try:
        inspect_model.run(args)
    except inspect_model.ModelLoadError as err:
        print(f"keras-deriv inspect: {inspect_model.printable(err)}", file=sys.stderr)
        return 1
    except inspect_model.UsageError as err:
        message = inspect_model.printable(err)
        print(f"keras-deriv inspect: error: {message}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - one sentence, never a traceback
        message = inspect_model.printable(one_line(err))
        print(f"keras-deriv inspect: {message}", file=sys.stderr)
        return 1
    return 0


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def one_line(err):
    """The first line of an exception's message that says something (not
    Keras's "Exception encountered when calling ..." wrapper), its type if
    the message is empty."""
    text = _ANSI.sub("", str(err))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("Exception encountered when")]
    return lines[0] if lines else type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
