"""Zero-curvature findings, the model-level verdict and the warning."""

import warnings

import keras
import numpy as np
import pytest

from keras_deriv import (
    DerivativeModel,
    ZeroCurvatureWarning,
    derivatives,
    find_zero_curvature_activations,
    has_identically_zero_curvature,
)
from keras_deriv.analysis.curvature import KNOWN_ZERO_FRACTIONS, _probe


def seq(*hidden, d=1):
    return keras.Sequential([keras.Input((d,)), *hidden, keras.layers.Dense(1)])


def dense(activation, name=None):
    return keras.layers.Dense(8, activation=activation, name=name)


@keras.saving.register_keras_serializable(package="keras_deriv_tests")
def zigzag(x):
    """A user's piecewise-linear activation."""
    return keras.ops.maximum(x, 0.3 * x) - 0.5 * keras.ops.relu(x - 1.0)


@keras.saving.register_keras_serializable(package="keras_deriv_tests")
def cubic(x):
    return x + 0.1 * x**3


@pytest.mark.parametrize(
    "make_layer, activation",
    [
        (lambda: dense("relu"), "relu"),
        (lambda: dense("leaky_relu"), "leaky_relu"),
        (lambda: dense("relu6"), "relu6"),
        (lambda: dense("hard_sigmoid"), "hard_sigmoid"),
        (lambda: dense("hard_tanh"), "hard_tanh"),
        (lambda: dense(zigzag), "zigzag"),
        (keras.layers.ReLU, "ReLU"),
        (keras.layers.LeakyReLU, "LeakyReLU"),
        (keras.layers.PReLU, "PReLU"),
        (lambda: keras.layers.Activation("relu"), "relu"),
    ],
)
def test_piecewise_linear_activations_are_findings(make_layer, activation):
    layer = make_layer()
    hidden = [layer] if isinstance(layer, keras.layers.Dense) else [dense(None), layer]
    net = seq(*hidden)
    findings = find_zero_curvature_activations(net)
    assert [(f.activation, f.zero_fraction) for f in findings] == [(activation, 1.0)]
    assert findings[0].layer == layer.name
    # A probed custom activation is judged on [-6, 6] only: a finding, but
    # never a proof that the network is piecewise linear.
    assert has_identically_zero_curvature(net) == (activation != "zigzag")


@pytest.mark.parametrize(
    "activation", ["tanh", "gelu", "silu", "softplus", "sigmoid", cubic]
)
def test_smooth_activations_are_not_findings(activation):
    net = seq(dense(activation), dense(activation))
    assert find_zero_curvature_activations(net) == []
    assert not has_identically_zero_curvature(net)


def test_linear_is_not_a_finding_and_a_linear_net_is_not_the_trap():
    net = seq(dense("linear"), keras.layers.Activation("linear"))
    assert find_zero_curvature_activations(net) == []
    assert not has_identically_zero_curvature(net)


@pytest.mark.parametrize("activation, fraction", [("elu", 0.5), ("selu", 0.5)])
def test_partly_flat_activations_have_their_measured_fraction(activation, fraction):
    net = seq(dense(activation))
    [finding] = find_zero_curvature_activations(net)
    assert finding.zero_fraction == fraction
    assert not has_identically_zero_curvature(net)  # curved on one side


def test_hard_silu_is_flat_outside_minus_three_to_three():
    [finding] = find_zero_curvature_activations(seq(dense("hard_silu")))
    assert 0.0 < finding.zero_fraction < 0.2  # the grid's share of |x| > 3


@pytest.mark.parametrize("fn", list(KNOWN_ZERO_FRACTIONS), ids=lambda fn: fn.__name__)
def test_known_fractions_agree_with_the_probe(fn):
    probed = _probe(fn)
    if probed is None:  # torch cannot differentiate hard_sigmoid twice
        pytest.skip(f"{fn.__name__}: no second-derivative rule on this backend")
    assert probed == (KNOWN_ZERO_FRACTIONS[fn], False)


def test_nested_models_are_walked_with_paths():
    inner = keras.Sequential(
        [keras.Input((2,)), dense("relu", name="hidden")], name="block"
    )
    inputs = keras.Input((2,))
    outputs = keras.layers.Dense(1)(inner(inputs))
    model = keras.Model(inputs, outputs)
    [finding] = find_zero_curvature_activations(model)
    assert finding.layer == "block/hidden"
    assert has_identically_zero_curvature(model)


def test_a_nonlinear_op_after_relu_makes_no_claim():
    inputs = keras.Input((1,))
    h = keras.layers.Dense(1)(dense("relu")(inputs))
    squared = keras.layers.Multiply()([h, h])
    model = keras.Model(inputs, squared)
    assert len(find_zero_curvature_activations(model)) == 1  # still listed
    assert not has_identically_zero_curvature(model)
    # and indeed its curvature is not zero
    x = np.linspace(-1, 1, 50, dtype="float32").reshape(-1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ZeroCurvatureWarning)
        _, _, d2y = derivatives(model, x)
    assert np.any(d2y != 0)


def test_mixed_relu_and_smooth_is_not_flagged_as_a_whole():
    net = seq(dense("relu"), dense("tanh"))
    assert [f.activation for f in find_zero_curvature_activations(net)] == ["relu"]
    assert not has_identically_zero_curvature(net)


def test_warning_once_at_build_naming_layers_and_alternatives():
    net = seq(dense("relu", name="hidden_relu"))
    layer = DerivativeModel(net, order=2)
    x = np.ones((4, 1), "float32")
    with pytest.warns(
        ZeroCurvatureWarning, match="hidden_relu.*relu.*softplus, gelu, silu"
    ) as record:
        layer(x)
        layer(x)
    assert len([w for w in record if w.category is ZeroCurvatureWarning]) == 1


def test_no_warning_for_first_order_or_smooth_nets():
    x = np.ones((4, 1), "float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ZeroCurvatureWarning)
        DerivativeModel(seq(dense("relu")), order=1)(x)
        DerivativeModel(seq(dense("tanh")), order=2)(x)


class Residual(keras.Model):
    """Builds its DerivativeModel on the first call, inside `fit`'s trace."""

    def __init__(self, net, **kwargs):
        super().__init__(**kwargs)
        self.derivs = DerivativeModel(net, order=2)

    def call(self, inputs):
        return self.derivs(inputs)[2][:, 0, 0]


@pytest.mark.parametrize(
    "activation, verdict", [(zigzag, "unknown"), (cubic, "curved")]
)
def test_custom_activations_are_probed_for_a_build_inside_fit(activation, verdict):
    model = Residual(seq(dense(activation)))
    model.compile("adam", "mse")
    x = np.linspace(-2, 2, 16, dtype="float32").reshape(-1, 1)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model.fit(x, np.zeros(16, "float32"), epochs=1, verbose=0)
    # probed (cubic is found curved), but a probe proves no zero curvature
    assert model.derivs.curvature == verdict
    assert not any(w.category is ZeroCurvatureWarning for w in record)
