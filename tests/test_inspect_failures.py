"""Every way `keras-deriv inspect` can fail, as a table: each row is a file
or an argument a hostile or unlucky user gives it, the exit status, and a
phrase of the one sentence it must print instead of a traceback.

Exit status 1: the model cannot be loaded or inspected. 2: a usage error.
"""

import json
import os
import zipfile

import keras
import pytest

from keras_deriv.cli import main

TENSORFLOW = keras.backend.backend() == "tensorflow"


def _saved(model, path):
    model.save(path)
    return [str(path)]


def _zip(path, members):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return [str(path)]


def _mlp(inputs, **dense):
    h = keras.layers.Dense(4, activation="tanh", **dense)(inputs)
    return keras.layers.Dense(1)(h)


def missing(tmp):
    return [str(tmp / "absent.keras")]


def not_a_zip(tmp):
    (tmp / "m.keras").write_bytes(b"not a zip")
    return [str(tmp / "m.keras")]


def legacy_h5(tmp):
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.save(tmp / "m.h5")
    return [str(tmp / "m.h5")]


def zip_named_h5(tmp):
    return _zip(tmp / "m.h5", {"config.json": "{}"})


def lambda_in_safe_mode(tmp):
    x = keras.Input((1,))
    return _saved(
        keras.Model(x, keras.layers.Lambda(lambda v: v * v)(x)), tmp / "m.keras"
    )


def class_named_safe_mode(tmp):
    # quotes safe mode's words without being its refusal: no --unsafe hint
    config = {
        "class_name": "enable_unsafe_deserialization() safe_mode",
        "config": {},
    }
    return _zip(tmp / "m.keras", {"config.json": json.dumps(config)})


def multi_output_without_network(tmp):
    x = keras.Input((1,))
    h = keras.layers.Dense(4, activation="tanh")(x)
    model = keras.Model(x, [keras.layers.Dense(1)(h), keras.layers.Dense(1)(h)])
    return _saved(model, tmp / "m.keras")


def multi_input(tmp):
    a, b = keras.Input((1,)), keras.Input((1,))
    model = keras.Model([a, b], _mlp(keras.layers.Concatenate()([a, b])))
    return _saved(model, tmp / "m.keras")


def conv1d(tmp):
    x = keras.Input((8, 1))
    y = keras.layers.Conv1D(2, 3, activation="tanh")(x)
    model = keras.Model(x, keras.layers.Dense(1)(keras.layers.Flatten()(y)))
    return _saved(model, tmp / "m.keras")


def embedding(tmp):
    x = keras.Input((1,), dtype="int32")
    y = keras.layers.Flatten()(keras.layers.Embedding(10, 3)(x))
    return _saved(keras.Model(x, keras.layers.Dense(1)(y)), tmp / "m.keras")


def name_tensorflow_rejects(tmp):
    x = keras.Input((1,))
    return _saved(keras.Model(x, _mlp(x, name="dense ä:b")), tmp / "m.keras")


def units_bomb(tmp):
    huge = json.dumps({"config": {"layers": [{"config": {"units": 2**31 - 1}}]}})
    return _zip(tmp / "m.keras", {"config.json": huge})


def wide_input(tmp):
    # a saved model whose input width was edited to 10⁹ (16 GB to build)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.save(tmp / "small.keras")
    with zipfile.ZipFile(tmp / "small.keras") as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = members["config.json"].decode()
    assert "[null, 2]" in config
    members["config.json"] = config.replace("[null, 2]", "[null, 1000000000]")
    return _zip(tmp / "m.keras", members)


def two_large_sizes(tmp):
    config = {
        "class_name": "Sequential",
        "config": {
            "layers": [
                {"class_name": "InputLayer", "config": {"batch_shape": [None, 10**5]}},
                {"class_name": "Dense", "config": {"units": 9 * 10**7}},
            ]
        },
    }
    return _zip(tmp / "m.keras", {"config.json": json.dumps(config)})


def deep_json(tmp):
    return _zip(tmp / "m.keras", {"config.json": "[" * 100000 + "]" * 100000})


def extraction_bomb(tmp):
    # Compressed to a few MB, 2.5 GB once extracted (over the 2 GiB limit).
    path = tmp / "m.keras"
    chunk = b"\0" * 2**24
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", json.dumps({"config": {"layers": []}}))
        for i in range(10):
            with archive.open(f"assets/{i}", "w", force_zip64=True) as member:
                for _ in range(16):
                    member.write(chunk)
    return [str(path)]


def config_json_bomb(tmp):
    return _zip(tmp / "m.keras", {"config.json": " " * (17 * 2**20) + "{}"})


def not_json(tmp):
    return _zip(tmp / "m.keras", {"config.json": b"\xff\xfe not json"})


def relu(tmp):
    x = keras.Input((1,))
    model = keras.Model(
        x, keras.layers.Dense(1)(keras.layers.Dense(4, activation="relu")(x))
    )
    return _saved(model, tmp / "m.keras")


def out_is_a_file(tmp):
    (tmp / "a_file").write_text("")
    return relu(tmp) + ["--out", str(tmp / "a_file")]


def out_not_writable(tmp):
    (tmp / "ro").mkdir()
    os.chmod(tmp / "ro", 0o500)
    return relu(tmp) + ["--out", str(tmp / "ro")]


def out_cannot_be_created(tmp):
    return relu(tmp) + ["--out", "/proc/keras_deriv_out"]


def unknown_network(tmp):
    return relu(tmp) + ["--network", "nope"]


def nan_range(tmp):
    return relu(tmp) + ["--range", "nan", "nan"]


def feature_out_of_range(tmp):
    return relu(tmp) + ["--feature", "3"]


TABLE = [
    (missing, 1, "No such file"),
    (not_a_zip, 1, "not a Keras model file"),
    (legacy_h5, 1, "not a .keras file"),
    (zip_named_h5, 1, "not a .keras file"),
    (lambda_in_safe_mode, 1, "--unsafe"),
    (class_named_safe_mode, 1, "Could not load"),
    (multi_output_without_network, 2, "--network NAME"),
    (multi_input, 2, "2 inputs"),
    (conv1d, 1, "shape (None, 8, 1)"),
    (embedding, 1, "Embedding"),
    # Keras accepts the name; TensorFlow's name scopes do not: one sentence
    # there, a report elsewhere.
    (
        name_tensorflow_rejects,
        *((1, "not a valid scope name") if TENSORFLOW else (0, None)),
    ),
    (units_bomb, 1, "exhaust memory"),
    (wide_input, 1, "layer size of 1000000000"),
    (two_large_sizes, 1, "a weight of"),
    (deep_json, 1, "nests deeper"),
    (extraction_bomb, 1, "would extract"),
    (config_json_bomb, 1, "config.json is"),
    (not_json, 1, "not valid JSON"),
    (out_is_a_file, 2, "is a file"),
    (out_not_writable, 2, "not writable"),
    (out_cannot_be_created, 2, "cannot be created"),
    (unknown_network, 2, "no layer of that name"),
    (nan_range, 2, "finite"),
    (feature_out_of_range, 2, "--feature must be"),
]


@pytest.mark.parametrize(
    "make, status, phrase", TABLE, ids=[row[0].__name__ for row in TABLE]
)
def test_every_failure_is_one_sentence(tmp_path, capsys, make, status, phrase):
    if make is out_not_writable and os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    argv = ["inspect", *make(tmp_path)]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    assert main(argv) == status
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if status == 0:
        return
    assert len(err.strip().splitlines()) == 1, err
    assert phrase in err, err
    if phrase != "--unsafe":
        assert "--unsafe" not in err, err  # only for safe mode's own refusals
