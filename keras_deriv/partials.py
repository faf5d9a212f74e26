"""Named partials and linear operators: `DerivativeModel(partials=...,
variables=...)` parsed into what the engines compute.

`variables` names the differentiated input features: a string of one-letter
names, one per feature in order (`"xt"`), or a list of names
(`["x", "t"]`); features without a name are held fixed. `partials` maps
output names to a multi-index (`"xt"`, `("x", "t")`, `(0, 1)`) or to a
linear operator with constant coefficients (`{"t": 1, "xx": -0.1}`).
"""

import dataclasses
import math
import numbers

MAX_ORDER = 4


@dataclasses.dataclass(frozen=True)
class Partials:
    """What to compute.

    Attributes:
        names: the output names, in order (`y` first is implied).
        terms: per output, `{multi-index: coefficient}`; a multi-index is a
            sorted tuple of feature indices, its length the order.
        variables: feature index -> variable name, for messages.
    """

    names: tuple
    terms: tuple
    variables: dict

    @property
    def max_order(self) -> int:
        return max(len(index) for terms in self.terms for index in terms)


def check_variables(variables, width):
    """`{feature index: name}` for a one-input model of `width` features."""
    if variables is None:
        return {}
    if isinstance(variables, str):
        names = list(variables)
    elif isinstance(variables, (list, tuple)) and all(
        isinstance(v, str) for v in variables
    ):
        names = list(variables)
    else:
        raise TypeError(
            "`variables` must be a string of one-letter names, one per input "
            f'feature (e.g. "xt"), or a list of names; got {variables!r}.'
        )
    if not names or any(not name or not name.isidentifier() for name in names):
        raise ValueError(
            f"`variables` needs names that are identifiers; got {variables!r}."
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"`variables` repeats the names {repeated}.")
    letters = {n for n in names if len(n) == 1}
    for name in names:
        if len(name) > 1 and set(name) <= letters:
            raise ValueError(
                f"`variables` has both {name!r} and its letters "
                f"{', '.join(repr(c) for c in name)}: the partial {name!r} would "
                "be ambiguous. Rename it (e.g. with a digit)."
            )
    if width is not None and len(names) > width:
        raise ValueError(
            f"`variables` names {len(names)} features ({variables!r}), but the "
            f"input has {width}."
        )
    return dict(enumerate(names))


def _multi_index(spec, variables, width, where, allowed=None):
    """A multi-index (sorted feature indices) from `"xt"`, `("x", "t")` or
    `(0, 1)`."""
    by_name = {name: index for index, name in variables.items()}
    if isinstance(spec, str):
        if spec in by_name:  # a multi-letter variable name
            items = [spec]
        else:
            items = list(spec)
    elif isinstance(spec, (list, tuple)):
        items = list(spec)
    else:
        raise TypeError(
            f'{where}: a multi-index is a string of variable names ("xt") or a '
            f"tuple of names or feature indices; got {spec!r}."
        )
    if not items:
        raise ValueError(
            f"{where}: the multi-index is empty; name at least one variable."
        )
    if len(items) > MAX_ORDER:
        raise ValueError(
            f"{where}: {spec!r} is a derivative of order {len(items)}; orders "
            f"1 to {MAX_ORDER} are supported."
        )
    indices = []
    for item in items:
        if isinstance(item, bool):
            raise TypeError(f"{where}: {item!r} is not a variable name or index.")
        if isinstance(item, numbers.Integral):
            if width is not None and not 0 <= item < width:
                raise ValueError(
                    f"{where}: feature index {item} is beyond the input's "
                    f"{width} features."
                )
            if allowed is not None and int(item) not in allowed:
                raise ValueError(
                    f"{where}: feature {item} is held fixed (it has no name in "
                    "`variables`); name it to differentiate along it."
                )
            indices.append(int(item))
        elif isinstance(item, str):
            if item not in by_name:
                known = ", ".join(repr(n) for n in by_name) or "none"
                raise ValueError(
                    f"{where}: unknown variable {item!r} (variables: {known}). "
                    'Name the input features with variables=, e.g. variables="xt".'
                )
            indices.append(by_name[item])
        else:
            raise TypeError(f"{where}: {item!r} is not a variable name or index.")
    return tuple(sorted(indices))


def _is_pairs(spec):
    return (
        isinstance(spec, list)
        and bool(spec)
        and all(
            isinstance(pair, (list, tuple))
            and len(pair) == 2
            and isinstance(pair[0], (str, list, tuple))
            and isinstance(pair[1], numbers.Real)
            and not isinstance(pair[1], bool)
            for pair in spec
        )
    )


def check_partials(partials, variables, width, allowed=None):
    """`Partials` from the `partials` dict, or a clear error. `allowed`: the
    feature indices that may be differentiated (None: all)."""
    if not isinstance(partials, dict) or not partials:
        raise TypeError(
            "`partials` must be a non-empty dict from output name to a "
            'multi-index or an operator, e.g. {"u_t": "t", "u_xx": "xx"}.'
        )
    names, terms = [], []
    for name, spec in partials.items():
        if not isinstance(name, str) or not name:
            raise TypeError(
                f"`partials` keys are output names (strings); got {name!r}."
            )
        if name == "y":
            raise ValueError(
                '`partials` cannot name an output "y": y is always returned.'
            )
        where = f"partials[{name!r}]"
        if _is_pairs(spec):  # an operator as saved: [[multi-index, coefficient]]
            spec = {tuple(k) if isinstance(k, list) else k: c for k, c in spec}
        if isinstance(spec, dict):
            if not spec:
                raise ValueError(f"{where}: the operator has no terms.")
            operator = {}
            for index_spec, coefficient in spec.items():
                if isinstance(coefficient, bool) or not isinstance(
                    coefficient, numbers.Real
                ):
                    raise TypeError(
                        f"{where}: coefficients are numbers; got {coefficient!r} "
                        f"for {index_spec!r}."
                    )
                if not math.isfinite(coefficient):
                    raise ValueError(
                        f"{where}: coefficient {coefficient!r} is not finite."
                    )
                index = _multi_index(index_spec, variables, width, where, allowed)
                operator[index] = operator.get(index, 0.0) + float(coefficient)
            terms.append(operator)
        else:
            terms.append({_multi_index(spec, variables, width, where, allowed): 1.0})
        names.append(name)
    return Partials(tuple(names), tuple(terms), dict(variables))
