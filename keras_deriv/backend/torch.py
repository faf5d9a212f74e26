"""Nested reverse mode on PyTorch: `torch.autograd.grad` with
`create_graph=True`, one backward pass per (output, input feature) pair.

Reverse mode works for every op that has a backward formula; forward mode
(`torch.func.jvp`) has no rule for some (e.g. `hardsigmoid`'s derivative).
Under `torch.no_grad()` (Keras's predict and evaluate) the graph of the last
level is not kept and the results are detached.
"""

import torch

from keras_deriv.errors import NotDifferentiableError

_NOT_CONNECTED = "the output does not depend differentiably on the input"


def _grad(scalar, x, keep_graph):
    (g,) = torch.autograd.grad(
        scalar, x, create_graph=keep_graph, retain_graph=True, allow_unused=True
    )
    return g


def _jacobian_columns(top, x, columns, keep_graph, first):
    """For each flattened component j of `top` (B, n): d top_j / dx, keeping
    only `columns(j)` of it. Returns `(B, n, len(columns(j)))`."""
    flat = top.reshape(top.shape[0], -1)
    rows = []
    for j in range(flat.shape[1]):
        g = _grad(flat[:, j].sum(), x, keep_graph) if flat.requires_grad else None
        if g is None:
            if first:
                raise NotDifferentiableError(_NOT_CONNECTED)
            g = torch.zeros_like(x)
        rows.append(g[:, columns(j)])
    return torch.stack(rows, dim=1)


def nested_derivatives(f, x, order, full_hessian):
    outer_grad = torch.is_grad_enabled()
    with torch.enable_grad():
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        y = f(x)
        if not y.requires_grad:
            raise NotDifferentiableError(_NOT_CONNECTED)
        m, d = y.shape[-1], x.shape[-1]
        levels = [y]
        for k in range(1, order + 1):
            keep_graph = outer_grad or k < order
            top = levels[-1]
            if k == 1 or full_hessian:
                cols = _jacobian_columns(
                    top, x, lambda j: slice(None), keep_graph, first=k == 1
                )
                shape = (-1, m, d) if k == 1 else (-1, m, d, d)
                levels.append(cols.reshape(shape))
            else:
                diag = _jacobian_columns(
                    top, x, lambda j: slice(j % d, j % d + 1), keep_graph, False
                )
                levels.append(diag.reshape(-1, m, d))
    if not outer_grad:
        levels = [t.detach() for t in levels]
    return levels


def depends_on_input(f, x):
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        y = f(x)
        if not (y.is_floating_point() and y.requires_grad):
            return False
        (g,) = torch.autograd.grad(y.sum(), x, allow_unused=True)
    return g is not None
