"""`method="auto"`: which engine computes the derivatives, in one table.

The choices come from `benchmarks/peers.py` and `benchmarks/overhead.py`
(results and commands on the docs' Performance page):

| case | engine | why |
|---|---|---|
| the Taylor engine cannot take the model | autodiff | it works for any layer |
| the backend's autodiff is wrong for a layer | Taylor | correctness first |
| Laplacian | Taylor | the forward Laplacian beats nested autodiff on every backend |
| full Hessian, d' <= 4 | Taylor | d'(d'+1)/2 coefficients: faster to 4 |
| full Hessian, d' > 4 | autodiff | 2x faster at d' = 10 |
| named partials, order <= 2, TF and torch | autodiff | 1.6-2.1x faster [1] |
| other named partials, operators | Taylor | 1.2-2.0x faster (tanh) [1] |
| proven piecewise-linear net | autodiff | d2y is known zero: one pass |
| pure partials of other nets | Taylor | faster than nested autodiff |

[1] `benchmarks/partials_engines.py` (3x64 tanh net, 1024 points): u_xy by
autodiff at 0.47x (TensorFlow) and 0.61x (torch) the Taylor engine's time,
at 1.67x on JAX (nested forward passes there); the biharmonic by Taylor at
1/1.5 to 1/2.0 of autodiff's time on every backend.
"""

TAYLOR, AUTODIFF = "taylor", "autodiff"
MAX_TAYLOR_HESSIAN_DIRECTIONS = 4


def choose_engine(
    method,
    *,
    taylor_gap,
    defect,
    verdict,
    order,
    hessian,
    directions,
    model_name,
    named=0,
    reverse_tree=False,
):
    """The engine for `method`, or a clear error when the requested engine
    cannot compute correct derivatives for this model. `named`: the highest
    order of named partials (0: none); `reverse_tree`: whether the backend's
    autodiff shares reverse passes over them."""
    if method == AUTODIFF:
        if defect is not None:
            raise defect_error(model_name, defect, 'Use method="taylor" or "auto".')
        return AUTODIFF
    if taylor_gap is not None:
        if method == TAYLOR:
            raise taylor_error(model_name, taylor_gap)
        if defect is not None:
            raise defect_error(
                model_name,
                defect,
                "The Taylor engine, which has no such defect, cannot take "
                f"this model either: {taylor_gap}.",
            )
        return AUTODIFF
    if method == TAYLOR or defect is not None:
        return TAYLOR
    if named:
        return AUTODIFF if named <= 2 and reverse_tree else TAYLOR
    if order >= 2 and hessian == "laplacian":
        return TAYLOR
    if order >= 2 and hessian == "full":
        return TAYLOR if directions <= MAX_TAYLOR_HESSIAN_DIRECTIONS else AUTODIFF
    return AUTODIFF if verdict == "piecewise_linear" else TAYLOR


def defect_error(model_name, defect, fix):
    path, reason = defect
    return ValueError(
        f"The autodiff engine would compute wrong derivatives for layer "
        f"{path!r} of {model_name!r}: {reason}. {fix}"
    )


def taylor_error(model_name, why):
    return ValueError(
        f'method="taylor" cannot differentiate {model_name!r}: {why}. '
        'Use method="auto", which falls back to autodiff.'
    )
