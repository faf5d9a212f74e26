"""The keras-deriv command line: demo and inspect, exit codes and messages."""

import csv
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_deriv import DerivativeModel
from keras_deriv.cli import main


def test_demo_shows_the_relu_trap_and_a_curved_smooth_net(demo_run):
    results, text, out_dir = demo_run
    relu, smoothed, value_only, sobolev = results.values()
    assert relu["d2y_zero_fraction"] == 1.0
    assert [f.split()[-1] for f in relu["flagged"]] == ["(relu)"]
    # the same net smoothed at σ = 0.05: the curvature of what it fits
    assert 1.6 < smoothed["d2y_mean"] < 2.2
    assert "Smoothed at σ = 0.05" in text and "relu 1024 smoothed" in text
    assert value_only["flagged"] == [] and sobolev["flagged"] == []
    assert sobolev["d2y_max_error"] < 0.3  # within 0.3 of 2 on [0.1, 0.9]
    assert 1.5 < value_only["d2y_mean"] < 2.5
    assert "trained on" in text and "y, dy/dx and d2y/dx2" in text
    assert "exactly 0 everywhere" in text
    # not a terminal: one final progress line per network, no \r updates
    assert "epoch  10/10" in text and "epoch   1/10" not in text
    assert (out_dir / "demo.png").read_bytes().startswith(b"\x89PNG")


def save(model, path):
    model.save(path)
    return str(path)


@pytest.fixture
def relu_file(tmp_path):
    net = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(1),
        ]
    )
    return save(net, tmp_path / "relu.keras")


def test_inspect_json_reports_findings_curves_and_files(relu_file, tmp_path, capsys):
    code = main(
        [
            "inspect",
            relu_file,
            "--json",
            "--out",
            str(tmp_path / "out"),
            "--feature",
            "1",
            "--at",
            "0.5",
            "0.0",
            "--range",
            "-1",
            "1",
            "--points",
            "50",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["identically_zero_curvature"] is True
    assert [f["activation"] for f in report["findings"]] == ["relu"]
    assert report["d2y_zero_fraction"] == 1.0
    rows = list(csv.DictReader(open(report["files"]["csv"])))
    # a ReLU net: the smoothed curves come along (the exact d2y is 0)
    assert len(rows) == 50 and list(rows[0]) == [
        "x",
        "y_0",
        "dy_0",
        "d2y_0",
        "dy_smoothed_0",
        "d2y_smoothed_0",
    ]
    assert float(rows[0]["x"]) == -1.0 and float(rows[-1]["x"]) == 1.0
    assert open(report["files"]["png"], "rb").read(4) == b"\x89PNG"


def test_inspect_of_a_trained_derivative_model_uses_the_wrapped_net(tmp_path, capsys):
    inner = keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(1),
        ]
    )
    inputs = keras.Input((1,))
    layer = DerivativeModel(inner)
    model = keras.Model(
        inputs, dict(zip(layer.output_keys, layer(inputs), strict=True))
    )
    path = save(model, tmp_path / "sobolev.keras")
    assert main(["inspect", path, "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "No activation with a vanishing second derivative." in text
    assert "not identically zero" in text


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "No such file"),
        (lambda p: p.write_bytes(b"not a zip"), "not a Keras model file"),
    ],
)
def test_unloadable_files_exit_1_with_one_sentence(tmp_path, capsys, make, message):
    path = tmp_path / "model.keras"
    make(path)
    assert main(["inspect", str(path)]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_safe_mode_refusal_explains_unsafe(tmp_path, capsys):
    inputs = keras.Input((1,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * x)(inputs))
    path = save(model, tmp_path / "lambda.keras")
    assert main(["inspect", path, "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "--unsafe" in err and "execute" in err
    assert main(["inspect", path, "--unsafe", "--out", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(report["d2y_abs_mean"], 2.0, rtol=1e-5)


def test_usage_errors_exit_2(relu_file, capsys):
    assert main(["inspect", relu_file, "--feature", "5"]) == 2
    assert "--feature must be from 0 to 1" in capsys.readouterr().err
    assert main(["inspect", relu_file, "--at", "1"]) == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect"])
    assert exit_info.value.code == 2


def test_module_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "keras_deriv", "--help"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (
        result.returncode == 0
        and "demo" in result.stdout
        and "inspect" in result.stdout
    )


def test_the_command_prints_no_framework_start_up_lines(relu_file, tmp_path):
    # TensorFlow's C++ start-up lines (oneDNN, CUDA drivers, absl) ignore
    # TF_CPP_MIN_LOG_LEVEL; the command holds them back unless it fails.
    entry = "import sys, keras_deriv_cli; sys.exit(keras_deriv_cli.main())"
    result = subprocess.run(
        [sys.executable, "-c", entry, "inspect", relu_file, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "KERAS_BACKEND": "tensorflow"},
    )
    assert result.returncode == 0, result.stderr
    assert "piecewise linear" in result.stdout
    for noise in ("oneDNN", "cuda", "absl", "I0000"):
        assert noise not in result.stderr, result.stderr


def test_only_the_framework_banner_is_dropped_from_stderr():
    # Native lines reach file descriptor 2 directly; the filter drops the
    # start-up banner and passes everything else, as it comes.
    code = (
        "import os, sys, keras_deriv_cli\n"
        "with keras_deriv_cli.framework_banner_filtered():\n"
        "    os.write(2, b'I0000 00:00:1795780869.778822 8601 cudart_stub.cc:31] "
        "Could not find cuda drivers\\n')\n"
        "    os.write(2, b'F0000 00:00:1.1 8601 fatal.cc:1] native error\\n')\n"
        "    print('our message', file=sys.stderr)\n"
        "print('after', file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "cuda" not in result.stderr
    assert "native error" in result.stderr and "our message" in result.stderr
    assert "after" in result.stderr


def test_inspect_of_a_relu_net_shows_its_smoothed_curvature(
    relu_file, tmp_path, capsys
):
    from conftest import relu_layer_closed_form

    assert main(["inspect", relu_file, "--json", "--out", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    smoothed = report["smoothed"]
    assert smoothed["sigma"] == 0.05  # 1/20 of the default slice [0, 1]
    net = keras.models.load_model(relu_file)
    grid = np.linspace(0, 1, 200)
    _, d2y, _ = relu_layer_closed_form(net, grid, 0.05)
    assert np.abs(d2y).max() > 0.1  # curved when smoothed: not 0 == 0
    assert abs(smoothed["d2y_mean"] - d2y.mean()) < 0.05 * np.abs(d2y).max()
    with open(report["files"]["csv"]) as f:
        assert "d2y_smoothed_0" in f.readline()
    assert main(["inspect", relu_file, "--out", str(tmp_path)]) == 0
    assert "Smoothed at σ = 0.05" in capsys.readouterr().out
    assert main(["inspect", relu_file, "--smoothing", "0", "--out", str(tmp_path)]) == 2
