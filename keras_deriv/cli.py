"""The `keras-deriv` commands (also `python -m keras_deriv`); the entry
point that parses the command line is `keras_deriv_cli`.

Exit codes: 0 success, 1 the model cannot be loaded or inspected, 2 usage
error.
"""

import re
import sys

import keras_deriv_cli


def parser():
    """The argument parser (defined with the entry point, which imports
    nothing heavy)."""
    return keras_deriv_cli.parser()


def main(argv=None):
    """`keras-deriv ARGS`; returns the exit code."""
    return keras_deriv_cli.main(argv)


def run_command(args):
    if args.command == "demo":
        from keras_deriv import demo

        demo.run(out_dir=args.out, seed=args.seed)
        return 0
    from keras_deriv import inspect_model

    if args.points < 2:
        error("keras-deriv inspect: error: --points must be at least 2")
        return 2
    try:
        inspect_model.run(args)
    except inspect_model.ModelLoadError as err:
        error(f"keras-deriv inspect: {inspect_model.printable(err)}")
        return 1
    except inspect_model.UsageError as err:
        message = inspect_model.printable(err)
        error(f"keras-deriv inspect: error: {message}")
        return 2
    except Exception as err:  # noqa: BLE001 - one sentence, never a traceback
        message = inspect_model.printable(one_line(err))
        error(f"keras-deriv inspect: {message}")
        return 1
    return 0


def error(message):
    """One line to stderr; none when the process has no stderr (started
    with it closed: `print` would write to stdout instead)."""
    if sys.stderr is not None:
        print(message, file=sys.stderr)


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
