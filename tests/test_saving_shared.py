"""Saving models that use the wrapped network in more than one place.

Keras links a layer used twice in one saved model through a
`shared_object_id`; a `DerivativeModel` holds its network's config inside
its own, where Keras's tag arrived too late, so these files once saved and
then failed to load ("expected 2 variables, but received 0"). Each case is
trained a little, saved, loaded in safe mode without `custom_objects`, and
must give the same outputs *and* still share one network: a change to the
loaded network's weights moves every output that reads it.
"""

import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_deriv import DerivativeModel, SharedLayerError

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _net(name="net"):
    return keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(1),
        ],
        name=name,
    )


def plain_branch_first():
    net, x = _net(), keras.Input((2,))
    y = net(x)
    dy = DerivativeModel(net, order=1)(x)[1]
    return keras.Model(x, [y, dy])


def wrapper_first():
    net, x = _net(), keras.Input((2,))
    dy = DerivativeModel(net, order=1)(x)[1]
    y = net(x)
    return keras.Model(x, [dy, y])


def as_reported():
    net, inp = _net(), keras.Input((2,))
    return keras.Model(
        inp, {"y": net(inp), "dy": DerivativeModel(net, order=1)(inp)[1]}
    )


def several_wrappers():
    net, x = _net(), keras.Input((2,))
    dy = DerivativeModel(net, order=1)(x)[1]
    d2y = DerivativeModel(net, order=2, hessian="full")(x)[2]
    lap = DerivativeModel(net, order=2, hessian="laplacian")(x)[2]
    return keras.Model(x, [dy, d2y, lap])


def wrapper_inside_a_submodel():
    net, x, xi = _net(), keras.Input((2,)), keras.Input((2,))
    sub = keras.Model(xi, DerivativeModel(net, order=1)(xi)[1], name="sub")
    return keras.Model(x, [sub(x), net(x)])


def plain_inside_a_submodel():
    net, x, xi = _net(), keras.Input((2,)), keras.Input((2,))
    sub = keras.Model(xi, net(xi), name="sub")
    return keras.Model(x, [sub(x), DerivativeModel(net, order=1)(x)[1]])


def nested_wrappers():
    # A DerivativeModel of a model that holds a DerivativeModel of the net:
    # d/dx of dy/dx, next to the net itself.
    net, x, xi = _net(), keras.Input((2,)), keras.Input((2,))
    inner = keras.Model(xi, DerivativeModel(net, order=1)(xi)[1], name="inner")
    return keras.Model(x, [DerivativeModel(inner, order=1)(x)[1], net(x)])


def wrapper_of_a_model_around_the_net_and_of_the_net():
    net, x, xi = _net(), keras.Input((2,)), keras.Input((2,))
    big = keras.Model(xi, keras.layers.Dense(1)(net(xi)), name="big")
    return keras.Model(
        x, [DerivativeModel(big, order=1)(x)[1], DerivativeModel(net, order=2)(x)[2]]
    )


def the_networks_own_tensors():
    # The outer model reuses the network's graph: its layers are the outer
    # model's own, and the wrapper holds them again.
    net = _net()
    net(np.zeros((1, 2)))
    u_x = DerivativeModel(net, order=1)(net.inputs[0])[1]
    return keras.Model(net.inputs[0], {"u": net.outputs[0], "u_x": u_x})


def the_functional_networks_own_tensors():
    xi = keras.Input((2,))
    h = keras.layers.Dense(8, activation="tanh")(xi)
    net = keras.Model(xi, keras.layers.Dense(1)(h))
    u_x = DerivativeModel(net, order=1)(xi)[1]
    return keras.Model(xi, {"u": net.outputs[0], "u_x": u_x})


def wrapper_then_time_distributed():
    net, x, xs = _net(), keras.Input((2,)), keras.Input((3, 2))
    dy = DerivativeModel(net, order=1)(x)[1]
    return keras.Model([x, xs], [dy, keras.layers.TimeDistributed(net)(xs)])


def time_distributed_then_wrapper():
    net, x, xs = _net(), keras.Input((2,)), keras.Input((3, 2))
    seq = keras.layers.TimeDistributed(net)(xs)
    return keras.Model([x, xs], [seq, DerivativeModel(net, order=1)(x)[1]])


def plain_then_wrapper_of_a_model_around_it():
    net, x, xi = _net(), keras.Input((2,)), keras.Input((2,))
    big = keras.Model(xi, keras.layers.Dense(1)(net(xi)), name="big")
    y = net(x)
    return keras.Model(x, [y, DerivativeModel(big, order=1)(x)[1]])


def wrapper_of_a_model_around_it_then_plain():
    net, x, xi = _net(), keras.Input((2,)), keras.Input((2,))
    big = keras.Model(xi, keras.layers.Dense(1)(net(xi)), name="big")
    return keras.Model(x, [DerivativeModel(big, order=1)(x)[1], net(x)])


@keras.saving.register_keras_serializable("keras_deriv_tests")
class NetWithDerivative(keras.Model):
    """A subclassed model that uses its net directly and through a wrapper."""

    def __init__(self, net=None, **kwargs):
        super().__init__(**kwargs)
        self.net = net if net is not None else _net()
        self.derivative = DerivativeModel(self.net, order=2)

    def call(self, x):
        y, dy, d2y = self.derivative(x)
        return [self.net(x), dy, d2y]

    def get_config(self):
        return {
            **super().get_config(),
            "net": keras.saving.serialize_keras_object(self.net),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["net"] = keras.saving.deserialize_keras_object(config["net"])
        return cls(**config)


def subclassed_outer_model():
    model = NetWithDerivative()
    model(np.zeros((1, 2), "float32"))
    return model


COMPOSITIONS = [
    as_reported,
    plain_branch_first,
    wrapper_first,
    several_wrappers,
    wrapper_inside_a_submodel,
    nested_wrappers,
    wrapper_of_a_model_around_the_net_and_of_the_net,
    the_networks_own_tensors,
    the_functional_networks_own_tensors,
    wrapper_then_time_distributed,
    subclassed_outer_model,
]
X = np.random.default_rng(0).normal(size=(6, 2)).astype("float32")
SEQUENCES = np.random.default_rng(1).normal(size=(6, 3, 2)).astype("float32")


def _outputs(model):
    two = len(getattr(model, "inputs", None) or []) == 2
    out = model.predict([X, SEQUENCES] if two else X, verbose=0)
    values = [out[key] for key in sorted(out)] if isinstance(out, dict) else out
    return [np.asarray(v) for v in values]


def _trained(build):
    model = build()
    # Move every weight off its initial value, as training would, so a
    # loaded model that fell back to fresh weights cannot pass.
    rng = np.random.default_rng(1)
    for variable in model.weights:
        variable.assign(variable + rng.normal(scale=0.1, size=variable.shape))
    return model


def _check_loaded(model, loaded):
    for got, want in zip(_outputs(loaded), _outputs(model), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    # One network, not two copies: as many distinct variables as before,
    # and a change to one kernel moves every output.
    assert len({id(v) for v in loaded.weights}) == len({id(v) for v in model.weights})
    before = _outputs(loaded)
    kernel = next(v for v in loaded.weights if len(v.shape) == 2)
    kernel.assign(kernel + 0.5)
    for old, new in zip(before, _outputs(loaded), strict=True):
        assert np.abs(new - old).max() > 1e-4


@pytest.mark.parametrize("build", COMPOSITIONS, ids=lambda f: f.__name__)
def test_shared_network_round_trips(tmp_path, build):
    model = _trained(build)
    path = tmp_path / "m.keras"
    model.save(path)
    _check_loaded(model, keras.models.load_model(path))


@pytest.mark.parametrize(
    "build, error",
    [
        # Keras saves the other use's copy of the network before the
        # wrapper's, without the link that would make them one: the loader
        # says so.
        (plain_inside_a_submodel, SharedLayerError),
        (time_distributed_then_wrapper, SharedLayerError),
        # A layer called in a sub-model's graph and in the outer graph:
        # Keras's own loader finds its calls by position and fails, with or
        # without a wrapper.
        (plain_then_wrapper_of_a_model_around_it, ValueError),
        (wrapper_of_a_model_around_it_then_plain, ValueError),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_what_keras_cannot_load_keeps_every_weight(tmp_path, build, error):
    model = _trained(build)
    path = tmp_path / "m.keras"
    model.save(path)
    with pytest.raises(error, match="load_weights|not connected"):
        keras.models.load_model(path)
    rebuilt = build()
    rebuilt.load_weights(path)
    for got, want in zip(_outputs(rebuilt), _outputs(model), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


SAVE_ON_TENSORFLOW = """
import sys
import numpy as np
sys.path.insert(0, {tests!r})
import test_saving_shared as cases
model = cases._trained(cases.{build})
model.save({path!r})
np.savez({path!r} + ".npz", *cases._outputs(model))
"""


@pytest.mark.skipif(
    keras.backend.backend() == "tensorflow", reason="loads a TensorFlow-saved file"
)
@pytest.mark.parametrize(
    "build", [as_reported, several_wrappers], ids=lambda f: f.__name__
)
def test_saved_on_tensorflow_loads_here(tmp_path, build):
    path = str(tmp_path / "m.keras")
    code = SAVE_ON_TENSORFLOW.format(
        tests=str(ROOT / "tests"), build=build.__name__, path=path
    )
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)
    saved = np.load(path + ".npz")
    got = _outputs(keras.models.load_model(path))
    assert len(got) == len(saved.files)
    # float32 on two backends: the same weights, summed in another order
    for i, value in enumerate(got):
        np.testing.assert_allclose(value, saved[f"arr_{i}"], rtol=1e-5, atol=1e-6)
