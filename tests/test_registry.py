"""The one walk and the one registry: lookups by class, what the walk calls
each step, and the guide's table of layers kept in step with the registry."""

import pathlib
import re

import keras
import pytest

from keras_deriv import DerivativeModel
from keras_deriv.graph.registry import (
    AFFINE,
    CURVED,
    PIECEWISE_LINEAR,
    facts_for,
    registered_classes,
)
from keras_deriv.graph.walk import KNOWN, MODEL, OPAQUE, WRAPPER, walk

GUIDE = pathlib.Path(__file__).resolve().parents[1] / "docs/guides/derivative_model.md"


def guide_table():
    text = GUIDE.read_text()
    table = text.split("<!-- registry-table")[1].split("<!-- /registry-table")[0]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`"):
            continue
        for name in re.findall(r"`(\w+)`", cells[0]):
            rows[name] = cells
    return rows


def test_the_guides_table_lists_exactly_the_registered_layers():
    rows = guide_table()
    registered = {cls.__name__: facts for cls, facts in registered_classes().items()}
    assert set(rows) == set(registered)
    words = {AFFINE: "affine", PIECEWISE_LINEAR: "piecewise linear", CURVED: "curved"}
    for name, facts in registered.items():
        taylor, curvature = rows[name][1], rows[name][2]
        assert (taylor == "yes") == (facts.taylor is not None), name
        if facts.cuts is not None:
            assert "cut" in rows[name][3], name
        elif facts.inner is not None or curvature.startswith(("its ", "that of")):
            continue
        else:
            assert curvature.startswith(words[facts.curvature]), name
        assert ("random" in rows[name][3]) == facts.stochastic, name


def test_lookup_is_by_class_and_refuses_subclasses_that_override_call():
    class Plain(keras.layers.Dense):  # a subclass that keeps Dense's call
        pass

    class Squared(keras.layers.Dense):
        def call(self, x):
            return super().call(x) ** 2

    class Dense(keras.layers.Layer):  # shares the name, nothing else
        def call(self, x):
            return x

    assert facts_for(keras.layers.Dense(2)) is facts_for(Plain(2))
    assert facts_for(Squared(2)) is None
    assert facts_for(Dense()) is None


def test_the_walk_names_each_kind_of_step():
    class Custom(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.inner = keras.layers.Dense(2, activation="relu", name="held")

        def call(self, x):
            return self.inner(x)

    inner = keras.Sequential([keras.layers.Dense(2, name="d")], name="block")
    inputs = keras.Input((2,))
    h = inner(inputs)
    h = keras.layers.Reshape((1, 2))(h)
    h = keras.layers.TimeDistributed(keras.layers.Dense(2), name="td")(h)
    h = keras.layers.Flatten()(h)
    h = Custom(name="custom")(h)
    out = keras.ops.sin(h)
    graph = walk(keras.Model(inputs, out))
    kinds = {step.path: step.kind for step in graph.all_steps()}
    assert kinds["block"] == MODEL and kinds["block/d"] == KNOWN
    assert kinds["td"] == WRAPPER and kinds["td/dense"] == KNOWN
    assert kinds["custom"] == OPAQUE and kinds["custom/held"] == KNOWN
    assert [k for p, k in kinds.items() if "sin" in p] == [OPAQUE]
    assert graph.problem is None


def test_a_subclassed_functional_model_that_overrides_call_is_opaque():
    class Doubled(keras.Model):
        def call(self, x):
            return 2.0 * super().call(x)

    inputs = keras.Input((1,))
    model = Doubled(inputs, keras.layers.Dense(1)(inputs))
    [step] = walk(model).steps
    assert step.kind == OPAQUE


@pytest.mark.parametrize("method", ["taylor", "auto"])
def test_a_shared_layer_is_a_graph_problem_that_taylor_names(method):
    inputs = keras.Input((2,))
    shared = keras.layers.Dense(2, activation="tanh", name="shared")
    net = keras.Model(inputs, shared(shared(inputs)))
    assert "shared" in walk(net).problem
    layer = DerivativeModel(net, method=method)
    if method == "taylor":
        with pytest.raises(ValueError, match="shared"):
            layer(keras.ops.ones((2, 2)))
    else:
        layer(keras.ops.ones((2, 2)))
        assert layer.engine == "autodiff"
