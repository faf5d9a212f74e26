"""The one place that picks a framework: `get()` returns the module of the
active Keras backend. Every module here offers the same functions:

- `nested_derivatives(f, x, order, full_hessian, wrt, jet=False)`: for `f` mapping
  `(N, d)` to `(N, m)`, with the rows independent of each other (f may be
  called on more rows than x has), and the features `wrt` (d' of them),
  returns `[y, J, D2, ..., Dk]`: `y` `(B, m)`, the Jacobian `J` `(B, m, d')`,
  then the pure partials `D_k[b, j, i] = d^k y_j / dx_wrt[i]^k` `(B, m, d')`,
  or for `full_hessian=True` and order 2 the Hessian `(B, m, d', d')`.
  Raises `NotDifferentiableError` when `y` does not depend differentiably
  on `x`. `jet=True` lets JAX differentiate pure partials of order 3 and up
  through `jax.experimental.jet` (traced once by `jax.make_jaxpr`, so `f`
  must update no state in its call); TensorFlow and PyTorch ignore it.
- `derivative_tree(f, x, tree)`: the partials of a tree of multi-indices
  sharing prefixes. `tree[0]` is `[None]` (the value), `tree[k]` lists the
  nodes of order k as `(parent, feature)`: the derivative along `feature`
  of node `parent` of order k - 1. Returns one list of `(B, m)` tensors per
  order, in `tree`'s order. Nested reverse passes on TensorFlow and
  PyTorch (one per output component of each parent gives all its
  children), nested forward passes on JAX (one per node).
- `tree_passes(tree, components)`: the number of those passes for an
  output of `components` entries, the cost `auto` weighs.
- `depends_on_input(f, x)`: whether `f(x)` is differentiably connected to `x`.
- `run_eagerly(fn)`: `fn()` on concrete values, even inside a traced
  (compiled) function.
"""

import importlib

import keras

SUPPORTED_BACKENDS = ("tensorflow", "jax", "torch")


def get():
    name = keras.backend.backend()
    if name not in SUPPORTED_BACKENDS:
        raise RuntimeError(
            f"keras_deriv cannot differentiate on the Keras backend {name!r}: "
            "it has no automatic differentiation. Use one of "
            f"{', '.join(SUPPORTED_BACKENDS)}, e.g. `KERAS_BACKEND=tensorflow` "
            "set before keras is imported."
        )
    return importlib.import_module(f"keras_deriv.backend.{name}")
