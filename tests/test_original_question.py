"""The question that started the project: y = x², a 1024-wide ReLU net,
and a second derivative that is 0 everywhere. The networks are the demo's,
trained as asked (Dense(1024, relu) -> Dense(1), Adam 1e-3, MSE, 10
epochs, batch 20), shared with the demo's test through a session fixture."""

import numpy as np

from keras_deriv import derivatives


def test_relu_net_has_zero_second_derivative_and_piecewise_constant_slope(demo_run):
    net = demo_run[0]["relu 1024"]["net"]
    x = np.linspace(0, 1, 1000, dtype="float32").reshape(-1, 1)
    y, dy, d2y = derivatives(net, x)
    assert np.mean((y - x**2) ** 2) < 1e-3  # it fits the values well...
    assert np.all(d2y == 0.0)  # ...and its curvature is exactly zero
    slope = dy[:, 0, 0]
    # Piecewise constant: the slope only changes where a kink is crossed, so
    # most neighbouring points share it exactly, and it still tracks 2x.
    assert np.mean(np.diff(slope) == 0.0) > 0.5
    assert len(np.unique(slope)) < len(slope) / 2
    np.testing.assert_allclose(slope[100:900], 2 * x[100:900, 0], atol=0.3)


def test_smooth_net_has_a_curved_second_derivative(demo_run):
    # A value-only fit learns curvature slowly (a tanh net of this size often
    # stalls at the straight-line fit, MSE 1/180); silu reaches it quickly.
    net = demo_run[0]["silu 64x64"]["net"]
    probe = np.linspace(0.1, 0.9, 81, dtype="float32").reshape(-1, 1)
    _, _, d2y = derivatives(net, probe)
    assert 1.5 < d2y.mean() < 2.5, d2y.mean()
    assert np.all(d2y != 0.0)
