"""Nested reverse mode on PyTorch: `torch.autograd.grad` with
`create_graph=True`.

As on TensorFlow, the gradient of a batch sum gives every point's
derivative, and each point is repeated once per input feature so that one
backward pass per output component serves every direction
(only the features in `wrt` get a copy). Reverse mode
works for every op with a backward formula; forward mode (`torch.func.jvp`)
has no rule for some (`hardsigmoid`'s derivative). Under `torch.no_grad()`
(Keras's predict and evaluate) the last level keeps no graph and the
results are detached.
"""

import concurrent.futures

import torch

from keras_deriv.errors import NotDifferentiableError

_NOT_CONNECTED = "the output does not depend differentiably on the input"


def _gradients(top, xt, keep_graph):
    """`(N, m, d)`, d top[:, j] / d xt for each component j, or None when no
    component depends on xt."""
    grads = []
    for j in range(top.shape[-1]):
        g = None
        if top.requires_grad:
            (g,) = torch.autograd.grad(
                top[:, j].sum(),
                xt,
                create_graph=keep_graph,
                retain_graph=True,
                allow_unused=True,
            )
        grads.append(g)
    if all(g is None for g in grads):
        return None
    # A component that does not depend on x has a zero derivative.
    return torch.stack([torch.zeros_like(xt) if g is None else g for g in grads], 1)


# torch.compile (Keras's jit_compile=True) cannot compile double backward:
# this part runs eagerly, the rest of a compiled step stays compiled.
@torch.compiler.disable
def nested_derivatives(f, x, order, full_hessian, wrt, jet=False):
    del jet  # JAX's alone (keras_deriv/backend/__init__.py)
    outer_grad = torch.is_grad_enabled()  # a training step will backprop
    n, wrt = len(wrt), list(wrt)
    with torch.enable_grad():
        xt = torch.repeat_interleave(x, n, dim=0) if n > 1 else x
        if not xt.requires_grad:
            xt = xt.detach().requires_grad_(True)
        eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
        # copy r of a point is differentiated along feature wrt[r]
        direction = eye[wrt].repeat(x.shape[0], 1)
        y = f(xt)
        levels = [y]
        for k in range(1, order + 1):
            jac = _gradients(levels[-1], xt, keep_graph=outer_grad or k < order)
            if jac is None:
                if k == 1:
                    raise NotDifferentiableError(_NOT_CONNECTED)
                # zero above a derivative constant in x: 0 * top, still
                # connected to the weights (a loss on it trains)
                ones = torch.ones_like(xt)[:, None, :]
                jac = 0.0 * levels[-1][..., None] * ones
            if full_hessian and k == 2:
                levels.append(jac[..., wrt])
            else:
                levels.append((jac * direction[:, None, :]).sum(-1))
    m = y.shape[-1]
    results = [y[::n]]
    for k, t in enumerate(levels[1:], start=1):
        if full_hessian and k == 2:  # (B*n, m, n) -> (B, m, n, n)
            results.append(t.reshape(-1, n, m, n).permute(0, 2, 1, 3))
        else:  # (B*n, m) -> (B, m, n)
            results.append(t.reshape(-1, n, m).permute(0, 2, 1))
    if not outer_grad:
        results = [t.detach() for t in results]
    return results


# Backward nodes whose gradient is zero everywhere: torch defines the
# derivative of round, floor, ceil, trunc and sign as 0 (TensorFlow and JAX
# have none), so a path through them carries no derivative, silently.
_ZERO_GRADIENT_NODES = (
    "RoundBackward",
    "FloorBackward",
    "CeilBackward",
    "TruncBackward",
    "SignBackward",
)


def _reaches(node, target):
    """Whether the autograd graph from `node` reaches the leaf `target`
    through nodes with a nonzero gradient (iterative: graphs are deep)."""
    stack, seen = [node], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node.name().startswith(_ZERO_GRADIENT_NODES):
            continue
        if getattr(node, "variable", None) is target:
            return True
        stack.extend(child for child, _ in node.next_functions)
    return False


@torch.compiler.disable
def depends_on_input(f, x):
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        y = f(x)
        if not (y.is_floating_point() and y.requires_grad):
            return False
        return _reaches(y.grad_fn, x)


def run_eagerly(fn):
    """`fn()` on real tensors with gradients on, even inside Keras's symbolic
    build (meta tensors, no_grad). Keras's device scope is per thread, so
    inside a symbolic build a fresh thread starts clean."""
    import keras

    if keras.ops.convert_to_tensor(0.0).device.type != "meta":
        with torch.enable_grad():
            return fn()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn).result()


@torch.compiler.disable
def derivative_tree(f, x, tree):
    outer_grad = torch.is_grad_enabled()  # a training step will backprop
    with torch.enable_grad():
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        levels = [[f(x)]]
        for depth in range(1, len(tree)):
            keep = outer_grad or depth < len(tree) - 1
            jacobians = {}
            for p in sorted({p for p, _ in tree[depth]}):
                top = levels[-1][p]
                jac = _gradients(top, x, keep_graph=keep)
                if jac is None:
                    if depth == 1:
                        raise NotDifferentiableError(_NOT_CONNECTED)
                    # constant in x: zeros, still connected to the weights
                    jac = 0.0 * top[..., None] * torch.ones_like(x)[:, None, :]
                jacobians[p] = jac
            levels.append([jacobians[p][:, :, i] for p, i in tree[depth]])
    if not outer_grad:
        levels = [[t.detach() for t in level] for level in levels]
    return levels


def tree_passes(tree, components):
    """Reverse passes of `derivative_tree`: one per output component of
    each node with children."""
    return components * sum(len({p for p, _ in level}) for level in tree[1:])
