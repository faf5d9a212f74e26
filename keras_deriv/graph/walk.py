"""THE walk over a model: every consumer sees the same steps.

`walk(model)` returns a `Graph`: the model's steps in order of evaluation,
each one of

- `KNOWN`: a layer with registered facts (`registry.facts_for`);
- `MODEL`: a nested Sequential or Functional model, walked as its own
  `Graph`;
- `WRAPPER`: a registered wrapper (`TimeDistributed`) whose inner layers
  are walked;
- `OPAQUE`: anything else (a subclassed `call`, a custom layer, a raw
  `keras.ops` operation, a user subclass of a Keras layer that overrides
  `call`). Its sublayers are walked too, so findings and defects inside it
  are seen, but nothing is concluded from how it combines them.

A plain layer or an opaque model is a graph of one step.
"""

import dataclasses
from collections.abc import Iterator
from typing import Any

import keras

from keras_deriv.graph.registry import LayerFacts, facts_for

KNOWN, MODEL, WRAPPER, OPAQUE = "known", "model", "wrapper", "opaque"
# Opaque layers may hold references in cycles: look this deep, no deeper.
_MAX_DEPTH = 32


@dataclasses.dataclass(frozen=True)
class Step:
    """One step of a walk.

    Attributes:
        path: where the layer sits, e.g. `"outer/sequential/dense_1"`.
        layer: the layer or operation.
        kind: `KNOWN`, `MODEL`, `WRAPPER` or `OPAQUE`.
        facts: the registry's facts (None unless `KNOWN` or `WRAPPER`).
        inputs: graph key of its input tensor, or a list of keys.
        output: graph key of its output tensor.
        call_kwargs: arguments the graph calls it with (e.g. a hard-coded
            `training=True`), as far as the model's config records them.
        inner: the graphs inside it (a `MODEL`'s own graph; a wrapper's or
            opaque layer's sublayers).
    """

    path: str
    layer: Any
    kind: str
    facts: LayerFacts | None = None
    inputs: Any = 0
    output: Any = 0
    call_kwargs: dict = dataclasses.field(default_factory=dict)
    inner: tuple = ()

    @property
    def training(self) -> bool | None:
        """The `training` flag the graph records for this call, or None."""
        return self.call_kwargs.get("training")


def effective_training(step: Step, training: bool | None) -> bool | None:
    """The training mode a step runs in when its model is called with
    `training`. As Keras's Functional models do: the call's flag when it is
    given, else the one recorded in the graph (a hard-coded
    `Dropout(0.5)(h, training=True)` is honoured only then: `predict`,
    which passes training=False, turns it off)."""
    return training if training is not None else step.training


@dataclasses.dataclass(frozen=True)
class Graph:
    """A walked model.

    Attributes:
        model: the model or layer walked.
        steps: its steps in order of evaluation.
        input_key: graph key of its input tensor.
        output_key: graph key of its output tensor.
        problem: why the steps cannot be run one by one as a graph from
            one input to one output (several inputs, a shared layer), or None.
    """

    model: Any
    steps: tuple
    input_key: Any = 0
    output_key: Any = 0
    problem: str | None = None

    def all_steps(self) -> Iterator[Step]:
        """Every step, depth first, inner graphs included."""
        for step in self.steps:
            yield step
            for graph in step.inner:
                yield from graph.all_steps()

    def fingerprint(self) -> tuple:
        """What a compiled function of this model depends on: which layers,
        in which structure, with which activations. Changes when the model
        is edited in place (`pop`, `add`, a swapped activation)."""
        return tuple(
            (
                s.path,
                id(s.layer),
                s.kind,
                id(getattr(s.layer, "activation", None)),
                tuple(sorted(s.call_kwargs.items())),
            )
            for s in self.all_steps()
        )


def walk(model: Any, prefix: str = "") -> Graph:
    """Walk `model` (a Keras model, layer or operation)."""
    if _is_graph_model(model):
        if isinstance(model, keras.Sequential):
            return _walk_sequential(model, prefix)
        return _walk_functional(model, prefix)
    return Graph(model, (_step(model, f"{prefix}{model.name}"),))


def _step(layer, path, **where):
    if _is_graph_model(layer):
        return Step(path, layer, MODEL, inner=(walk(layer, f"{path}/"),), **where)
    facts = facts_for(layer) if isinstance(layer, keras.layers.Layer) else None
    if facts is not None and facts.inner is not None:
        inner = tuple(walk(child, f"{path}/") for child in facts.inner(layer))
        return Step(path, layer, WRAPPER, facts, inner=inner, **where)
    if facts is not None:
        return Step(path, layer, KNOWN, facts, **where)
    children = _sublayers(layer) if path.count("/") < _MAX_DEPTH else []
    inner = tuple(walk(child, f"{path}/") for child in children)
    return Step(path, layer, OPAQUE, inner=inner, **where)


def _walk_sequential(model, prefix):
    steps = tuple(_step(layer, f"{prefix}{layer.name}") for layer in model.layers)
    return Graph(model, steps)


def _walk_functional(model, prefix):
    problem = None
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        problem = f"{model.name!r} has several inputs or outputs"
    call_kwargs = _call_kwargs(model)
    # A layer's `input`/`output` are those of its first call: a layer called
    # twice (shared) leaves tensors that no step produces.
    steps, produced = [], {id(t) for t in model.inputs}
    for op in model.operations:
        if isinstance(op, keras.layers.InputLayer):
            continue
        inputs = op.input
        listed = isinstance(inputs, list | tuple)
        keys = [id(t) for t in inputs] if listed else [id(inputs)]
        if problem is None and not produced.issuperset(keys):
            problem = f"layer {op.name!r} is shared (called more than once)"
        produced.add(id(op.output))
        steps.append(
            _step(
                op,
                f"{prefix}{op.name}",
                inputs=keys if listed else keys[0],
                output=id(op.output),
                call_kwargs=call_kwargs.get(op.name, {}),
            )
        )
    if problem is None and id(model.outputs[0]) not in produced:
        problem = (
            f"the output of {model.name!r} comes from a shared layer (one "
            "called more than once)"
        )
    return Graph(
        model,
        tuple(steps),
        input_key=id(model.inputs[0]),
        output_key=id(model.outputs[0]),
        problem=problem,
    )


def _call_kwargs(model):
    """Per layer name, the keyword arguments of its first call in `model`
    (e.g. `Dropout(0.5)(h, training=True)`), read from the model's config:
    Keras keeps them nowhere else public."""
    try:
        layers = model.get_config()["layers"]
    except Exception:  # noqa: BLE001 - a layer without a config: nothing known
        return {}
    found = {}
    for entry in layers:
        nodes = entry.get("inbound_nodes") or []
        kwargs = (
            nodes[0].get("kwargs", {}) if nodes and isinstance(nodes[0], dict) else {}
        )
        simple = {
            k: v for k, v in kwargs.items() if isinstance(v, bool | int | float | str)
        }
        found[entry.get("name")] = simple
    return found


_FUNCTIONAL = []


def _functional_class():
    if not _FUNCTIONAL:
        x = keras.Input((1,))
        _FUNCTIONAL.append(type(keras.Model(x, keras.layers.Identity()(x))))
    return _FUNCTIONAL[0]


def _is_graph_model(layer):
    """A Sequential or Functional model that runs its own graph (a subclass
    that overrides `call` may compute anything)."""
    for cls in (keras.Sequential, _functional_class()):
        if isinstance(layer, cls) and type(layer).call is cls.call:
            return True
    return False


def _sublayers(layer):
    """The layers an opaque layer holds (Keras tracks them, but lists them
    publicly only for models)."""
    if isinstance(layer, keras.Model):
        return [child for child in layer.layers if child is not layer]
    found, seen = [], {id(layer)}

    def visit(value, depth=0):
        if isinstance(value, keras.layers.Layer):
            if id(value) not in seen:
                seen.add(id(value))
                found.append(value)
        elif depth < 2 and isinstance(value, list | tuple):
            for item in value:
                visit(item, depth + 1)
        elif depth < 2 and isinstance(value, dict):
            for item in value.values():
                visit(item, depth + 1)

    for value in vars(layer).values():
        visit(value)
    return found
