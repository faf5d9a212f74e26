"""Float32 matmul precision for one computation, on each backend.

On NVIDIA GPUs from Ampere on, float32 matmuls may run as TF32 (a 10-bit
mantissa): JAX does by default, TensorFlow where
`tf.config.experimental.enable_tensor_float_32_execution` is on (its
default), PyTorch where `torch.backends.cuda.matmul.allow_tf32` is. Second
derivatives then lose about three digits. `matmul_precision("highest")`
makes the matmuls of the computation it encloses full float32:

- JAX: `jax.default_matmul_precision("float32")`, a scoped setting read
  when the function is traced, so a jitted step keeps it, gradients
  included (the transposed matmuls carry the same precision).
- PyTorch: `torch.set_float32_matmul_precision("highest")` and cuDNN's
  TF32 off for the enclosed (eager) computation, restored on exit (when
  the last of several threads inside leaves). The setting is process-wide
  while it holds. The backward pass runs later, at the user's setting.
- TensorFlow: TF32 is one process-wide switch, read when kernels run, so no
  scope can set it for part of a graph: where it is on and a GPU is
  visible, a clear error says how to turn it off; elsewhere (CPUs) there is
  nothing to do.
"""

import contextlib
import threading

PRECISIONS = ("default", "highest")


def matmul_precision(backend, precision):
    """A context manager: the enclosed computation's float32 matmuls at
    `precision` on `backend` (`"default"`: as the framework is set)."""
    if precision == "default":
        return contextlib.nullcontext()
    return _SCOPES[backend]()


def _jax():
    import jax

    return jax.default_matmul_precision("float32")


_TORCH_LOCK = threading.Lock()
_torch_scopes = {"depth": 0, "saved": None}


@contextlib.contextmanager
def _torch():
    # PyTorch's setting is process-wide: the first scope to enter saves it
    # and the last to leave restores it, so threads computing at once do
    # not restore each other's "highest" as the user's setting.
    import torch

    with _TORCH_LOCK:
        if _torch_scopes["depth"] == 0:
            _torch_scopes["saved"] = (
                torch.get_float32_matmul_precision(),
                torch.backends.cudnn.allow_tf32,
            )
            torch.set_float32_matmul_precision("highest")
            torch.backends.cudnn.allow_tf32 = False
        _torch_scopes["depth"] += 1
    try:
        yield
    finally:
        with _TORCH_LOCK:
            _torch_scopes["depth"] -= 1
            if _torch_scopes["depth"] == 0:
                precision, cudnn = _torch_scopes["saved"]
                torch.set_float32_matmul_precision(precision)
                torch.backends.cudnn.allow_tf32 = cudnn


def _tensorflow():
    import tensorflow as tf

    if tf.config.experimental.tensor_float_32_execution_enabled() and (
        tf.config.list_logical_devices("GPU")
    ):
        raise RuntimeError(
            'precision="highest" on TensorFlow: TF32 matmuls are on for this '
            "process and a GPU is visible. TensorFlow has one process-wide "
            "switch for them, which keras_deriv does not flip for you: call "
            "tf.config.experimental.enable_tensor_float_32_execution(False) "
            "once, before building the model."
        )
    return contextlib.nullcontext()


_SCOPES = {"jax": _jax, "torch": _torch, "tensorflow": _tensorflow}
