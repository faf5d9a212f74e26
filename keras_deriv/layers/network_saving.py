"""How a `DerivativeModel`'s wrapped network keeps its identity in a save.

A model often uses its network twice: `net(x)` for y and
`DerivativeModel(net)(x)` for the derivatives, or several wrappers around
one net. Keras links the uses of one object in a `.keras` file by a
`shared_object_id` in each config, but it tags the first config only when
the second use is serialized, and by then it has copied the network's
config into the wrapper's: the file loaded two networks, one without
weights. While saving, every config we hold (the network's and each layer's in its
graph) is tagged up front with the id Keras itself uses, so the loader
finds one network whichever use it meets first.

What Keras then still cannot load cannot be told apart, at save time, from
what it can: another use saved *before* this one left its tag on a config
that is either still part of the file (it loads) or already copied into a
finished sub-model's or wrapper's config without it (it does not). So the
save records which tags another use saved first, and the loader checks
that it met them: where it did not, it raises `SharedLayerError` with the
way back to the weights, instead of Keras's "expected 2 variables, but
received 0". A layer of the network's *Functional graph* also called in
the outer graph can still fail in Keras's own loader, which finds a
layer's calls by position ("not connected to inputs").

Outside a save, configs are untagged: `get_config()` of a clone equals the
original's.
"""

from typing import Any

import keras

from keras_deriv.errors import SharedLayerError

_TAG = "shared_object_id"
# Serialized twice to learn whether Keras is saving (only then does the
# second serialization come back tagged). Module-level so that its id is
# never reused by another object during a save.
_PROBE = keras.initializers.Zeros()
_PROBE_CONFIG = keras.saving.serialize_keras_object(_PROBE)


def _saving() -> bool:
    keras.saving.serialize_keras_object(_PROBE)
    return _TAG in keras.saving.serialize_keras_object(_PROBE)


def network_entries(network) -> dict[str, Any]:
    """The config entries for a wrapped network: `model`, and while saving,
    `model_saved_before`: the tags of what another use saved before this
    one (the network, or layers of its graph), which the loader must find."""
    config = keras.saving.serialize_keras_object(network)
    if not _saving():
        return {"model": config}
    saved_before = _tag(config, network)
    # The whole network saved before brings every layer inside it along.
    if _TAG in config:
        saved_before = [config[_TAG]] if config[_TAG] in saved_before else []
    return {"model": config, "model_saved_before": saved_before}


def pop_network(config: dict[str, Any], owner: str):
    """Takes `network_entries`' entries out of `config`; returns the network."""
    network = config.pop("model")
    saved_before = config.pop("model_saved_before", [])
    if isinstance(saved_before, bool):  # written by an earlier version
        saved_before = [network[_TAG]] if saved_before else []
    if not all(_already_loaded(tag) for tag in saved_before):
        raise SharedLayerError(
            f"This file cannot be loaded as a whole: the network that "
            f"DerivativeModel {owner!r} wraps, or a layer of it, is also used "
            "inside another layer (a sub-model, or a wrapper such as "
            "TimeDistributed) that Keras saved before it, without the link "
            "that makes the two one. Every weight is in the file: build the "
            "model again in code, as it was built when saved, and call "
            "`model.load_weights(path)`. To save such a model whole, call the "
            "network directly in the outer model next to the DerivativeModel."
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


def _tag(config: dict, layer) -> list[int]:
    """Tags `config` and the configs of the layers in its graph; returns the
    tags of those that arrived tagged (saved before by another use)."""
    seen = [id(layer)] if _TAG in config else []
    config[_TAG] = id(layer)
    inner = config.get("config")
    if not isinstance(inner, dict):
        return seen
    if isinstance(layer, keras.Model) and isinstance(inner.get("layers"), list):
        by_name = {sublayer.name: sublayer for sublayer in layer.layers}
        for entry in inner["layers"]:
            if not isinstance(entry, dict):
                continue
            name = entry.get("config", {}).get("name")
            if name in by_name:
                seen += _tag(entry, by_name[name])
    elif isinstance(inner.get("layer"), dict) and isinstance(
        getattr(layer, "layer", None), keras.layers.Layer
    ):
        seen += _tag(inner["layer"], layer.layer)
    return seen
