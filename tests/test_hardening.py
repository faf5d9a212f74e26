"""Hostile and unlucky inputs to the command line and the logger: clear
errors, nothing printed raw."""

import keras
import numpy as np
import pytest

from keras_deriv import DerivativeLogger
from keras_deriv.cli import main


def small_net(name="net"):
    return keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(4, activation="tanh"),
            keras.layers.Dense(1),
        ],
        name=name,
    )


def test_names_with_terminal_escapes_are_printed_escaped(tmp_path, capsys):
    net = small_net()
    net.layers[0].activation = keras.activations.relu
    net.name = "evil\x1b[2Jname"
    path = str(tmp_path / "evil.keras")
    net.save(path)
    # TensorFlow refuses such a name in its scopes: then a one-line error
    status = main(["inspect", path, "--out", str(tmp_path)])
    captured = capsys.readouterr()
    text = captured.out + captured.err
    # escaped, or (from Keras's error messages) stripped: never raw
    assert status in (0, 1) and "\x1b" not in text and "evil" in text


@pytest.mark.parametrize(
    "extra", [["--range", "nan", "nan"], ["--range", "1", "0"], ["--at", "inf"]]
)
def test_a_bad_slice_is_a_usage_error(tmp_path, capsys, extra):
    path = str(tmp_path / "net.keras")
    small_net().save(path)
    assert main(["inspect", path, "--out", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "finite" in err and len(err.strip().splitlines()) == 1, err


def test_logger_arguments_are_checked_when_made():
    x = np.ones((4, 1), "float32")
    with pytest.raises(ValueError, match="no probe points"):
        DerivativeLogger(np.ones((0, 1), "float32"))
    with pytest.raises(TypeError, match="`feature`"):
        DerivativeLogger(x, feature=0.5)
    with pytest.raises(TypeError, match="`output`"):
        DerivativeLogger(x, output=True)


def test_logger_output_beyond_the_network_is_refused_before_training():
    net = small_net()
    net.compile("adam", "mse")
    x = np.linspace(0, 1, 8, dtype="float32").reshape(-1, 1)
    weights = [w.copy() for w in net.get_weights()]
    with pytest.raises(ValueError, match="output component"):
        net.fit(x, x, epochs=1, verbose=0, callbacks=[DerivativeLogger(x, output=5)])
    for before, after in zip(weights, net.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)


def test_help_and_version_import_no_framework():
    import subprocess
    import sys

    code = (
        "import sys, keras_deriv_cli\n"
        "for argv in (['--version'], ['--help'], ['inspect', '--help']):\n"
        "    try:\n"
        "        keras_deriv_cli.main(argv)\n"
        "    except SystemExit as stop:\n"
        "        assert stop.code == 0, stop.code\n"
        "heavy = {'keras', 'tensorflow', 'jax', 'torch', 'keras_deriv'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "keras-deriv" in out and out.strip().endswith("[]")


def test_the_keras_floor_has_no_known_safe_mode_bypass_and_is_installed():
    import importlib.metadata
    import pathlib
    import re

    pyproject = pathlib.Path(__file__).resolve().parents[1] / "pyproject.toml"
    floor = re.search(r'"keras>=([\d.]+)"', pyproject.read_text()).group(1)

    def version(text):
        return tuple(int(part) for part in re.findall(r"\d+", text)[:3])

    # 3.15.1: the first release past every published safe-mode bypass
    # (see docs/security.md); the suite runs on an installed Keras above it
    assert version(floor) >= (3, 15, 1)
    assert version(importlib.metadata.version("keras")) >= version(floor)


def _archive(path, members):
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return str(path)


def test_inspect_limits_are_checked_before_extracting(tmp_path):
    import json

    from keras_deriv import inspect_model

    small = inspect_model.Limits(
        members_bytes=10**6, config_bytes=10**4, size_value=10**6
    )
    config = json.dumps({"class_name": "Sequential", "config": {"layers": []}})
    bomb = _archive(
        tmp_path / "bomb.keras", {"config.json": config, "a": b"\0" * 2 * 10**6}
    )
    with pytest.raises(inspect_model.ModelLoadError, match="would extract"):
        inspect_model.load(bomb, limits=small)
    big = _archive(tmp_path / "big.keras", {"config.json": " " * 20000 + config})
    with pytest.raises(inspect_model.ModelLoadError, match="config.json is"):
        inspect_model.load(big, limits=small)
    huge = json.dumps({"config": {"layers": [{"config": {"units": 2**31 - 1}}]}})
    wide = _archive(tmp_path / "wide.keras", {"config.json": huge})
    with pytest.raises(inspect_model.ModelLoadError, match="layer size of 2147483647"):
        inspect_model.load(wide)  # the default limits
    junk = _archive(tmp_path / "junk.keras", {"config.json": b"\xff\xfe not json"})
    with pytest.raises(inspect_model.ModelLoadError, match="not valid JSON"):
        inspect_model.load(junk)


def test_a_units_bomb_is_refused_by_the_command_in_one_line(tmp_path, capsys):
    import json

    huge = json.dumps({"config": {"layers": [{"config": {"units": 2**31 - 1}}]}})
    path = _archive(tmp_path / "wide.keras", {"config.json": huge})
    assert main(["inspect", path, "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "exhaust memory" in err


def test_only_keras_archives_are_loaded_even_a_zip_named_h5(tmp_path, capsys):
    polyglot = _archive(tmp_path / "model.h5", {"config.json": "{}"})
    assert main(["inspect", polyglot, "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "not a .keras file" in err and ".save('m.keras')" in err


def test_network_and_out_options(tmp_path, capsys):
    inputs = keras.Input((1,))
    h = keras.layers.Dense(4, activation="tanh", name="trunk")(inputs)
    two = keras.Model(inputs, [keras.layers.Dense(1)(h), keras.layers.Dense(1)(h)])
    path = str(tmp_path / "two.keras")
    two.save(path)
    assert main(["inspect", path, "--out", str(tmp_path), "--network", "trunk"]) == 0
    assert "network 'trunk'" in capsys.readouterr().out
    assert main(["inspect", path, "--network", "nope"]) == 2
    assert "no layer of that name" in capsys.readouterr().err
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    assert main(["inspect", path, "--network", "trunk", "--out", str(a_file)]) == 2
    assert "is a file" in capsys.readouterr().err
