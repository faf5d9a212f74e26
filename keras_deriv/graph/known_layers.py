"""The registry's entries: what keras_deriv knows about each Keras layer.

Adding a layer is one `register` call here. A layer that is not listed is
opaque: the zero-curvature verdict says "unknown", the Taylor engine does
not take it, and the autodiff engine differentiates it as it is.
"""

import keras

from keras_deriv.engines import taylor_rules as rules
from keras_deriv.graph.registry import AFFINE, CURVED, PIECEWISE_LINEAR, register

L = keras.layers


def _activation(layer):
    return getattr(layer, "activation", None)


def _quantized(layer):
    if getattr(layer, "quantization_mode", None) is not None:
        return f"layer {layer.name!r} is quantized"
    return None


def _several_axes(layer):
    if not isinstance(layer.axis, int):
        return f"layer {layer.name!r} takes a softmax over several axes"
    return None


def _dot_gap(layer):
    axes = layer.axes if isinstance(layer.axes, list | tuple) else [layer.axes] * 2
    if layer.normalize or any(a not in (1, -1) for a in axes):
        return (
            f"layer {layer.name!r} (Dot) has a Taylor rule only for two "
            "(batch, n) inputs along axis 1 without normalize"
        )
    return None


def _moments_defect(layer, order):
    # `tf.nn.moments`, behind Keras's LayerNormalization and
    # GroupNormalization on TensorFlow, stops the gradient through the mean
    # inside the variance: harmless for first derivatives (that gradient is
    # zero), wrong for second ones.
    if order >= 2 and not getattr(layer, "rms_scaling", False):
        return (
            "TensorFlow's tf.nn.moments stops the gradient through the mean, "
            "so nested GradientTapes get its second and higher derivatives "
            "wrong (the first are right)"
        )
    return None


def _torch_layer_norm_defect(layer, order):
    # Keras runs LayerNormalization with torch's fused `layer_norm` kernel,
    # whose third derivative is wrong (checked in float64 against the same
    # function written out: -442.8 against -10.36).
    if order >= 3 and not layer.rms_scaling:
        return (
            "the third derivative of torch's layer_norm kernel is wrong "
            "(the first and second are right)"
        )
    return None


def _classes(*names):
    """The `keras.layers` classes of these names that this Keras has."""
    return [getattr(L, n) for n in names if hasattr(L, n)]


# -- layers the Taylor engine propagates through ------------------------------

register(L.InputLayer, L.Identity, curvature=AFFINE, taylor=rules.identity)
register(
    L.Dense,
    curvature=AFFINE,
    activation=_activation,
    taylor=rules.dense,
    taylor_gap=_quantized,
)
register(
    L.EinsumDense,
    curvature=AFFINE,
    activation=_activation,
    taylor=rules.einsum_dense,
    taylor_gap=_quantized,
)
register(
    L.Activation,
    curvature=AFFINE,
    activation=_activation,
    taylor=rules.activation_layer,
)
register(L.ReLU, curvature=PIECEWISE_LINEAR, zero_fraction=1.0, taylor=rules.relu_layer)
register(
    L.LeakyReLU,
    curvature=PIECEWISE_LINEAR,
    zero_fraction=1.0,
    taylor=rules.leaky_relu_layer,
)
register(L.PReLU, curvature=PIECEWISE_LINEAR, zero_fraction=1.0, taylor=rules.prelu)
# alpha (e^z - 1) below 0, z above: f'' = 0 on the positive half
register(L.ELU, curvature=CURVED, zero_fraction=0.5, taylor=rules.elu_layer)
register(
    L.Softmax, curvature=CURVED, taylor=rules.softmax_layer, taylor_gap=_several_axes
)
register(L.Normalization, curvature=AFFINE, taylor=rules.normalization)
register(
    L.BatchNormalization,
    curvature=AFFINE,  # in inference; training mode mixes the batch
    taylor=rules.batch_normalization,
    batch_dependent=lambda layer: layer.trainable,
)
register(
    L.LayerNormalization,
    curvature=CURVED,
    taylor=rules.layer_normalization,
    defects={"tensorflow": _moments_defect, "torch": _torch_layer_norm_defect},
)
register(
    L.GroupNormalization,
    curvature=CURVED,
    taylor=rules.group_normalization,
    defects={"tensorflow": _moments_defect},
)
register(
    *_classes("RMSNormalization"), curvature=CURVED, taylor=rules.rms_normalization
)
register(L.Rescaling, curvature=AFFINE, taylor=rules.rescaling)
register(
    L.Dropout,
    L.GaussianDropout,
    *_classes("SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D"),
    curvature=AFFINE,
    stochastic=True,
    taylor=rules.dropout,
)
# Additive noise in training: the layers after it are evaluated at a
# random point, so their derivatives depend on the draw too.
register(
    L.GaussianNoise, curvature=AFFINE, stochastic=True, taylor=rules.additive_noise
)
register(L.Flatten, L.Reshape, curvature=AFFINE, taylor=rules.reshape)
register(L.Add, curvature=AFFINE, merge=True, taylor=rules.add)
register(L.Subtract, curvature=AFFINE, merge=True, taylor=rules.subtract)
register(L.Average, curvature=AFFINE, merge=True, taylor=rules.average)
register(L.Concatenate, curvature=AFFINE, merge=True, taylor=rules.concatenate)
register(L.Multiply, curvature=CURVED, merge=True, taylor=rules.multiply)
register(L.Dot, curvature=CURVED, merge=True, taylor=rules.dot, taylor_gap=_dot_gap)

# -- layers known to the verdict and the checks only --------------------------

register(
    *_classes(
        "Conv1D",
        "Conv2D",
        "Conv3D",
        "Conv1DTranspose",
        "Conv2DTranspose",
        "Conv3DTranspose",
        "DepthwiseConv1D",
        "DepthwiseConv2D",
        "SeparableConv1D",
        "SeparableConv2D",
    ),
    curvature=AFFINE,
    activation=_activation,
)
register(
    *_classes(
        "Permute",
        "RepeatVector",
        "ZeroPadding1D",
        "ZeroPadding2D",
        "ZeroPadding3D",
        "Cropping1D",
        "Cropping2D",
        "Cropping3D",
        "AveragePooling1D",
        "AveragePooling2D",
        "AveragePooling3D",
        "GlobalAveragePooling1D",
        "GlobalAveragePooling2D",
        "GlobalAveragePooling3D",
        "UpSampling1D",
        "UpSampling2D",
        "UpSampling3D",
    ),
    curvature=AFFINE,
)
register(
    *_classes(
        "Maximum",
        "Minimum",
    ),
    curvature=PIECEWISE_LINEAR,
    merge=True,
)
register(
    *_classes(
        "MaxPooling1D",
        "MaxPooling2D",
        "MaxPooling3D",
        "GlobalMaxPooling1D",
        "GlobalMaxPooling2D",
        "GlobalMaxPooling3D",
    ),
    curvature=PIECEWISE_LINEAR,
)
# x * mask + alpha' * (1 - mask), then affine: multiplicative noise.
register(L.AlphaDropout, curvature=AFFINE, stochastic=True)
# Applies its layer to every time step: as curved as that layer.
register(L.TimeDistributed, curvature=AFFINE, inner=lambda layer: [layer.layer])
register(
    *_classes(
        "Embedding",
        "StringLookup",
        "IntegerLookup",
        "Hashing",
        "HashedCrossing",
        "Discretization",
        "CategoryEncoding",
        "TextVectorization",
    ),
    curvature=AFFINE,
    cuts="a lookup or encoding layer: its output is not a differentiable "
    "function of its input",
)
