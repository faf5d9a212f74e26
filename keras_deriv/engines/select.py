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
| named partials in <= order + 2 nested passes | autodiff | [1] |
| other named partials, operators | Taylor | [1] |
| proven piecewise-linear net | autodiff | d2y is known zero: one pass |
| pure partials of other nets | Taylor | faster than nested autodiff |

[1] `benchmarks/partials_peers.py` and `benchmarks/partials_engines.py`
(tanh nets, 1000 points): on TensorFlow (tf.function) autodiff's reverse
passes, shared over the multi-indices' prefixes, take 0.40-0.69x the Taylor
engine's time for u_xy (2 passes), u_xxyy (4) and the Laplacian in 2-D and
3-D (3, 4); the Taylor engine 0.53x autodiff's for the biharmonic (8
passes in 2-D, 13 in 3-D). On JAX autodiff nests one forward pass per
partial (u_xy 2, u_xxyy 4, the 3-D Laplacian 6, the biharmonic 10).
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
    autodiff_passes=None,
):
    """The engine for `method`, or a clear error when the requested engine
    cannot compute correct derivatives for this model. `named`: the highest
    order of named partials (0: none); `autodiff_passes`: how many nested
    passes the backend's autodiff takes for them."""
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
        cheap = autodiff_passes is not None and autodiff_passes <= named + 2
        return AUTODIFF if cheap else TAYLOR
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
