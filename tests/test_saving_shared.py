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

from keras_deriv import DerivativeModel, UnsavableModelError

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
    subclassed_outer_model,
]
X = np.random.default_rng(0).normal(size=(6, 2)).astype("float32")


def _outputs(model):
    out = model.predict(X, verbose=0)
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


def test_a_layer_inside_the_wrapped_network_also_used_outside_is_refused(tmp_path):
    # Keras cannot load a layer called both inside a sub-model and in its
    # parent (it finds the layer's calls by position). Saved before the
    # wrapper, the outside use is seen and the save refused.
    net, x, xi = _net(), keras.Input((2,)), keras.Input((2,))
    big = keras.Model(xi, keras.layers.Dense(1)(net(xi)), name="big")
    y = net(x)
    model = keras.Model(x, [y, DerivativeModel(big, order=1, name="dm")(x)[1]])
    with pytest.raises(UnsavableModelError, match=r"'net'.*'dm'.*save_weights"):
        model.save(tmp_path / "m.keras")


def test_a_layer_inside_the_wrapped_network_used_after_it_recovers_by_weights(tmp_path):
    # The same structure with the wrapper saved first: Keras writes a file
    # its own loader refuses; the weights are all there.
    def build():
        net, x, xi = _net(), keras.Input((2,)), keras.Input((2,))
        big = keras.Model(xi, keras.layers.Dense(1)(net(xi)), name="big")
        return keras.Model(x, [DerivativeModel(big, order=1)(x)[1], net(x)])

    model = _trained(build)
    path = tmp_path / "m.keras"
    model.save(path)
    with pytest.raises(ValueError, match="not connected"):
        keras.models.load_model(path)
    rebuilt = build()
    rebuilt.load_weights(path)
    for got, want in zip(_outputs(rebuilt), _outputs(model), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_a_network_inside_an_earlier_submodel_loads_through_its_weights(tmp_path):
    # Keras saves the sub-model's copy of the network before the wrapper's,
    # without the link that would make them one: load_model cannot rebuild
    # one network, says so, and the weights come back into a rebuilt model.
    keras.utils.set_random_seed(3)
    model = _trained(plain_inside_a_submodel)
    path = tmp_path / "m.keras"
    model.save(path)
    with pytest.raises(UnsavableModelError, match=r"load_weights"):
        keras.models.load_model(path)
    rebuilt = plain_inside_a_submodel()
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
