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

from keras_deriv.graph.registry import LayerFacts, facts_for, inherited_facts

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
        input_key: graph key of its (first) input tensor.
        output_key: graph key of its output tensor.
        problem: why the steps cannot be run one by one as a graph from
            its inputs to one output (several outputs, a shared layer), or
            None.
        input_keys: graph keys of all its input tensors, in the order of
            `model.inputs` (empty: the one `input_key`).
    """

    model: Any
    steps: tuple
    input_key: Any = 0
    output_key: Any = 0
    problem: str | None = None
    input_keys: tuple = ()

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
                getattr(s.layer, "quantization_mode", None),
                str(getattr(s.layer, "dtype_policy", "")),
            )
            for s in self.all_steps()
        )


def walk(model: Any, prefix: str = "", read_config: bool = True) -> Graph:
    """Walk `model` (a Keras model, layer or operation).

    With `read_config=False` the walk does not read Functional models'
    configs (slow on large models): the steps and layers are the same, but
    training flags fixed in the graph are not known, and nested Functional
    models' tensors are not connected (enough for `fingerprint`)."""
    if _is_graph_model(model):
        if isinstance(model, keras.Sequential):
            return _walk_sequential(model, prefix, read_config)
        return _walk_functional(model, prefix, read_config)
    return Graph(model, (_step(model, f"{prefix}{model.name}", read_config),))


def fingerprint(model: Any) -> tuple:
    """`walk(model).fingerprint()`, without reading configs: cheap enough
    to check on every call."""
    return walk(model, read_config=False).fingerprint()


def _step(layer, path, read_config, **where):
    def inside(child):
        return walk(child, f"{path}/", read_config)

    if _is_graph_model(layer):
        return Step(path, layer, MODEL, inner=(inside(layer),), **where)
    facts = facts_for(layer) if isinstance(layer, keras.layers.Layer) else None
    if facts is not None and facts.inner is not None:
        inner = tuple(inside(child) for child in facts.inner(layer))
        return Step(path, layer, WRAPPER, facts, inner=inner, **where)
    if facts is not None:
        return Step(path, layer, KNOWN, facts, **where)
    children = _sublayers(layer) if path.count("/") < _MAX_DEPTH else []
    inner = tuple(inside(child) for child in children)
    return Step(path, layer, OPAQUE, inner=inner, **where)


def _walk_sequential(model, prefix, read_config):
    steps = tuple(
        _step(layer, f"{prefix}{layer.name}", read_config) for layer in model.layers
    )
    return Graph(model, steps)


def _walk_functional(model, prefix, read_config):
    problem = None
    if len(model.outputs) != 1:
        problem = f"{model.name!r} has several outputs"
    nested = any(_is_functional(op) for op in model.operations)
    wanted = read_config and (nested or _needs_flags(model))
    nodes = _first_calls(model) if wanted else {}
    if nested and nodes is None:
        problem = problem or f"{model.name!r} nests a model and has no config"
    # Tensors are keyed by object id; with a nested Functional model, by the
    # config's (layer, output index) names: its `input` and `output` are its
    # own, not the tensors of its call in this graph.
    by_name = nested and bool(nodes)
    steps, produced = [], set()
    if by_name:
        input_keys, output_key = nodes["__io__"]
        if isinstance(model.input, dict) and len(input_keys) > 1:
            problem = problem or f"{model.name!r} nests a model and takes a dict"
    else:
        input_keys = tuple(id(t) for t in keras.tree.flatten(model.inputs))
        output_key = id(model.outputs[0])
    input_key = input_keys[0]
    produced.update(input_keys)
    for op in model.operations:
        if isinstance(op, keras.layers.InputLayer):
            continue
        if by_name:
            keys = list(nodes[op.name][1])
            listed, output = len(keys) != 1, (op.name, 0)
            if nodes[op.name][2] > 1 and problem is None:
                problem = f"layer {op.name!r} is shared (called more than once)"
        else:
            inputs = op.input
            listed = isinstance(inputs, list | tuple)
            keys = [id(t) for t in inputs] if listed else [id(inputs)]
            output = id(op.output)
        if problem is None and not produced.issuperset(keys):
            problem = (
                f"layer {op.name!r} is shared (called more than once) or takes "
                "one of several outputs of a layer"
            )
        produced.add(output)
        if nodes is None:  # the config could not be read
            call_kwargs = {"training": UNKNOWN_TRAINING}
        else:
            call_kwargs = nodes.get(op.name, ({},))[0]
        steps.append(
            _step(
                op,
                f"{prefix}{op.name}",
                read_config,
                inputs=keys if listed else keys[0],
                output=output,
                call_kwargs=call_kwargs,
            )
        )
    if problem is None and output_key not in produced:
        problem = (
            f"the output of {model.name!r} comes from a shared layer (one "
            "called more than once)"
        )
    return Graph(
        model,
        tuple(steps),
        input_key=input_key,
        output_key=output_key,
        problem=problem,
        input_keys=tuple(input_keys) if len(input_keys) > 1 else (),
    )


def _is_functional(op):
    return _is_graph_model(op) and not isinstance(op, keras.Sequential)


# A training flag fixed in the graph that keras_deriv could not read.
UNKNOWN_TRAINING = "unknown"


def _needs_flags(model):
    """Whether a step of `model` may depend on its training flag, which
    only the model's config records: a random or batch-statistics layer
    (or a subclass of one), or anything that may hold one (a nested model,
    a wrapper, a custom layer)."""
    for op in model.operations:
        if isinstance(op, keras.layers.InputLayer):
            continue
        facts = facts_for(op) if isinstance(op, keras.layers.Layer) else None
        if facts is None or facts.inner is not None:
            safety = inherited_facts(op) if isinstance(op, keras.layers.Layer) else None
            if safety is None or safety.stochastic or safety.inner is not None:
                return True
            if safety.batch_dependent(op):
                return True
            continue
        if facts.stochastic or facts.batch_dependent(op):
            return True
    return False


def _first_calls(model):
    """Per layer name, `(kwargs, input names, number of calls)` of its
    calls in `model` (e.g. `Dropout(0.5)(h, training=True)`; a training
    flag of True in any call wins), and under `"__io__"` the names of the
    model's input and output tensors, read from the model's config: Keras
    keeps call arguments nowhere else public. A tensor's name is `(layer,
    output index)`. None when the config cannot be read (a layer without a
    config, a subclass with its own `get_config`)."""
    try:
        config = model.get_config()
        found = {}
        for entry in config["layers"]:
            nodes = [n for n in entry.get("inbound_nodes") or [] if isinstance(n, dict)]
            kwargs = dict(nodes[0].get("kwargs", {})) if nodes else {}
            if any(n.get("kwargs", {}).get("training") is True for n in nodes):
                kwargs["training"] = True
            simple = {
                k: v
                for k, v in kwargs.items()
                if isinstance(v, bool | int | float | str)
            }
            history = [
                (name, tensor)
                for name, _, tensor in _histories(
                    nodes[0].get("args", ()) if nodes else ()
                )
            ]
            found[entry["name"]] = (simple, history, len(nodes))
        ends = (_ends(config["input_layers"]), _ends(config["output_layers"])[0])
    except Exception:  # noqa: BLE001 - any failure: the flags are unknown
        return None
    found["__io__"] = tuple(ends)
    return found


def _ends(layers):
    """`(layer, output index)` of each entry of a config's
    `input_layers`/`output_layers` (a triple, a list or a dict of them)."""
    if isinstance(layers, dict):
        layers = list(layers.values())
    if not isinstance(layers[0], list | tuple):
        layers = [layers]
    return tuple((entry[0], entry[2]) for entry in layers)


def _histories(value):
    """The `keras_history` entries of the serialized tensors in `value`."""
    if isinstance(value, dict):
        history = value.get("config", {}).get("keras_history")
        if value.get("class_name") == "__keras_tensor__" and history:
            yield history
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _histories(item)


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
