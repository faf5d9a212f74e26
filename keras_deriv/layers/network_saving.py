"""How a `DerivativeModel`'s wrapped network keeps its identity in a save.

A model often uses its network twice: `net(x)` for y and
`DerivativeModel(net)(x)` for the derivatives, or several wrappers around
one net. Keras links the uses of one object in a `.keras` file by a
`shared_object_id` in each config, but it tags the first config only when
the second use is serialized, and by then it has copied the network's
config into the wrapper's: the file loaded two networks, one without
weights. Two things fix it:

- while saving, every config we hold (the network's and each layer's in
  its graph) is tagged up front with the id Keras itself uses, so the
  loader finds one network whichever use it meets first;
- what Keras cannot load is refused or, where only the loader can see it,
  reported with the way back to the weights (below).

Keras cannot load a layer called both inside a sub-model's graph and
outside it (it finds the layer's calls by position). A layer of the
wrapped network's graph saved before by another use is refused at save
time (`UnsavableModelError`). The network itself used inside an *earlier
sub-model* (`Model(x, [sub(x), DerivativeModel(net)(x)])` with
`sub = Model(xi, net(xi))`) is seen only when loading: the file keeps every
weight, and the error says how to read them into a rebuilt model.

Outside a save, configs are untagged: `get_config()` of a clone equals the
original's.
"""

from typing import Any

import keras

from keras_deriv.errors import UnsavableModelError

_TAG = "shared_object_id"
# Serialized twice to learn whether Keras is saving (only then does the
# second serialization come back tagged). Module-level so that its id is
# never reused by another object during a save.
_PROBE = keras.initializers.Zeros()
_PROBE_CONFIG = keras.saving.serialize_keras_object(_PROBE)


def _saving() -> bool:
    keras.saving.serialize_keras_object(_PROBE)
    return _TAG in keras.saving.serialize_keras_object(_PROBE)


def network_entries(network, owner: str) -> dict[str, Any]:
    """The config entries for the network `owner` wraps: `model`, and while
    saving, `model_saved_before` (another use saved the network first)."""
    config = keras.saving.serialize_keras_object(network)
    if not _saving():
        return {"model": config}
    # Tagged on arrival: another use saved the whole network before this
    # one, and with it every layer inside it.
    saved_before = _TAG in config
    _tag(config, network, owner, check=not saved_before)
    return {"model": config, "model_saved_before": saved_before}


def pop_network(config: dict[str, Any], owner: str):
    """Takes `network_entries`' entries out of `config`; returns the network."""
    network = config.pop("model")
    if config.pop("model_saved_before", False) and not _already_loaded(network[_TAG]):
        raise UnsavableModelError(
            f"This file cannot be loaded as a whole: the network that "
            f"DerivativeModel {owner!r} wraps is also called inside a "
            "sub-model that was saved before it, and Keras saved that "
            "sub-model's copy without its link to the shared network. Every "
            "weight is in the file: build the model again in code, as it was "
            "built when saved, and call `model.load_weights(path)`. To save "
            "such a model whole, call the network directly in the outer model "
            "instead of through a sub-model."
        )
    return keras.saving.deserialize_keras_object(network)


def _already_loaded(tag: int) -> bool:
    # A config with a tag Keras has seen deserializes to that object; an
    # unseen tag gives a fresh initializer (inside a load, recorded under
    # the tag: harmless, as the caller raises at once).
    probe = dict(_PROBE_CONFIG, **{_TAG: tag})
    first = keras.saving.deserialize_keras_object(probe)
    if not isinstance(first, type(_PROBE)):
        return True
    # Outside a load (a direct `from_config`), nothing is ever recorded.
    return keras.saving.deserialize_keras_object(probe) is not first


def _tag(config: dict, layer, owner: str, check: bool, nested: bool = False) -> None:
    if check and nested and _TAG in config:
        name = config.get("config", {}).get("name", "?")
        raise UnsavableModelError(
            f"Cannot save this model: layer {name!r} is called inside the "
            f"network that DerivativeModel {owner!r} wraps and also elsewhere "
            "in the model being saved. Keras cannot load a layer that is "
            "called both inside a sub-model and outside it, so the file would "
            "not load. Share the whole network instead (use the wrapped "
            "network itself next to the DerivativeModel), or save the weights "
            "with `model.save_weights(...)` and rebuild the model in code."
        )
    config[_TAG] = id(layer)
    inner = config.get("config")
    if not isinstance(inner, dict):
        return
    if isinstance(layer, keras.Model) and isinstance(inner.get("layers"), list):
        by_name = {sublayer.name: sublayer for sublayer in layer.layers}
        for entry in inner["layers"]:
            if not isinstance(entry, dict):
                continue
            name = entry.get("config", {}).get("name")
            if name in by_name:
                _tag(entry, by_name[name], owner, check, nested=True)
    elif isinstance(inner.get("layer"), dict) and isinstance(
        getattr(layer, "layer", None), keras.layers.Layer
    ):
        _tag(inner["layer"], layer.layer, owner, check, nested=True)
