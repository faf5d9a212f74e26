"""Models with several inputs, seen as a function of one flat input.

A DeepONet takes `[branch, trunk]` and is differentiated through its trunk
only; a PINN may take `x` and `t` as separate inputs. The engines
differentiate a function of one float tensor `(B, D)`: every input's
features side by side, in `model.inputs` order, each input flattened. Inputs
that are not differentiated ride along in the same rows (so that every row
copy an engine makes carries its own branch input) and are never a
direction of differentiation.
"""

import dataclasses
import math

import keras
from keras import ops

from keras_deriv.partials import check_variables


@dataclasses.dataclass(frozen=True)
class Slot:
    name: str
    shape: tuple  # per point
    offset: int  # first feature in the flat input

    @property
    def size(self) -> int:
        return math.prod(self.shape)


class InputLayout:
    """Where each input of `model` sits in the flat input.

    Args:
        model: a Keras model with several inputs (`model.inputs`).
        variables: a dict from input name to the names of its features (a
            string of one-letter names or a list), for `partials`; or to
            `None` (differentiate all its features, for `order`). Inputs not
            in the dict are held fixed. `None`: every input differentiated.
    """

    def __init__(self, model, variables):
        try:
            tensors = keras.tree.flatten(model.inputs)
        except (AttributeError, ValueError):
            raise ValueError(
                f"`variables` as a dict names the inputs of a model with several "
                f"inputs; {model.name!r} declares no inputs (build it, e.g. with "
                "keras.Input, first)."
            ) from None
        self.structure = model.input
        self.slots, offset = [], 0
        for tensor in tensors:
            name = tensor.name
            shape = tuple(tensor.shape[1:])
            if any(s is None for s in shape):
                raise ValueError(
                    f"Input {name!r} of {model.name!r} has an unknown size "
                    f"{shape}; DerivativeModel needs every input's shape."
                )
            self.slots.append(Slot(name, shape, offset))
            offset += math.prod(shape)
        self.width = offset
        known = {slot.name: slot for slot in self.slots}
        if variables is None:
            variables = dict.fromkeys(known)
        if not isinstance(variables, dict):
            raise TypeError(
                f"{model.name!r} has {len(self.slots)} inputs "
                f"({', '.join(repr(n) for n in known)}): `variables` must be a dict "
                'from input name to its variable names, e.g. {"trunk": "xy"}.'
            )
        unknown = sorted(set(variables) - set(known))
        if unknown:
            raise ValueError(
                f"`variables` names inputs {unknown} that {model.name!r} does not "
                f"have (its inputs: {', '.join(repr(n) for n in known)})."
            )
        self.differentiated = []  # flat positions, in input order
        self.names = {}  # flat position -> variable name
        for slot in self.slots:
            if slot.name not in variables:
                continue
            names = variables[slot.name]
            if names is None:
                self.differentiated += range(slot.offset, slot.offset + slot.size)
                continue
            for j, name in check_variables(names, slot.size).items():
                if name in self.names.values():
                    raise ValueError(
                        f"`variables` uses the name {name!r} for two features."
                    )
                self.names[slot.offset + j] = name
                self.differentiated.append(slot.offset + j)
        if not self.differentiated:
            raise ValueError("`variables` differentiates no input feature.")

    def flat(self, inputs, dtype):
        """The inputs as one `(B, D)` tensor of `dtype`."""
        tensors = keras.tree.flatten(inputs)
        if len(tensors) != len(self.slots):
            raise ValueError(
                f"DerivativeModel expects {len(self.slots)} inputs "
                f"({', '.join(repr(s.name) for s in self.slots)}); got {len(tensors)}."
            )
        if isinstance(inputs, dict):
            missing = sorted({s.name for s in self.slots} - set(inputs))
            if missing:
                raise ValueError(
                    f"DerivativeModel's inputs lack {missing}; pass a dict with "
                    f"the keys {[s.name for s in self.slots]}, or a list in that "
                    "order."
                )
            tensors = [inputs[slot.name] for slot in self.slots]
        parts = []
        for slot, t in zip(self.slots, tensors, strict=True):
            if tuple(t.shape[1:]) != slot.shape:
                raise ValueError(
                    f"Input {slot.name!r} must have shape (batch, "
                    f"{', '.join(map(str, slot.shape))}); got {tuple(t.shape)}."
                )
            parts.append(ops.reshape(ops.cast(t, dtype), (-1, slot.size)))
        return ops.concatenate(parts, axis=-1)

    def unflat(self, z):
        """The model's inputs, in its structure, from the flat `z`."""
        tensors = [
            ops.reshape(z[:, slot.offset : slot.offset + slot.size], (-1, *slot.shape))
            for slot in self.slots
        ]
        return keras.tree.pack_sequence_as(self.structure, tensors)

    def specs(self, dtype):
        return keras.tree.pack_sequence_as(
            self.structure,
            [keras.KerasTensor((None, *slot.shape), dtype) for slot in self.slots],
        )
