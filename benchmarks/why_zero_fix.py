"""The original question's network and what a user can do about its zero
second derivative, at the question's budget: y = x² on 1000 points of
[0, 1], Adam, 10 epochs, batch 20. Prints the "why is it zero" page's
table (markdown) and writes its figure of the ReLU net smoothed at several
σ.

    KERAS_BACKEND=tensorflow python benchmarks/why_zero_fix.py

Every network is trained on two seeds; the table gives both. "mean d2y" and
"max |d2y - 2|" are over [0.1, 0.9] (the truth is 2), "loss" the final
training MSE, "time" the wall time of `fit` on this machine.
"""

import dataclasses
import os
import pathlib
import sys
import time
import warnings

import keras
import numpy as np

from keras_deriv import ZeroCurvatureWarning, demo, derivatives, plotting

SEEDS = (0, 1)
SIGMAS = (0.02, 0.05, 0.1, 0.2)
FIGURE = pathlib.Path(__file__).parents[1] / "docs" / "images" / "smoothing_sigma.png"


@dataclasses.dataclass
class Fix:
    label: str
    activation: str = "relu"
    widths: tuple = (1024,)
    learning_rate: float = 1e-3
    scaled_input: bool = False  # a Normalization layer: x to mean 0, std 1
    init: str | None = None  # "spread": kernels N(0, 1), biases U(-1, 1)
    sobolev: bool = False  # losses on y, dy and d2y
    smoothing: float | None = None


FIXES = (
    Fix("ReLU, as asked"),
    Fix("ReLU, as asked, smoothed σ = 0.05", smoothing=0.05),
    Fix("tanh, as asked", "tanh"),
    Fix("silu, as asked", "silu"),
    Fix("gelu, as asked", "gelu"),
    Fix("silu, lr 1e-2", "silu", learning_rate=1e-2),
    Fix("silu, input scaled", "silu", scaled_input=True),
    Fix("silu, input scaled, lr 1e-2", "silu", learning_rate=1e-2, scaled_input=True),
    Fix("tanh, input scaled, lr 1e-2", "tanh", learning_rate=1e-2, scaled_input=True),
    Fix("tanh, spread initialization", "tanh", init="spread"),
    Fix("silu, spread initialization", "silu", init="spread"),
    Fix("silu 64×64, lr 3e-3", "silu", widths=(64, 64), learning_rate=3e-3),
    Fix("silu, supervised y, dy, d2y", "silu", sobolev=True),
)


def build(fix):
    layers = [keras.Input((1,))]
    if fix.scaled_input:
        layers.append(keras.layers.Normalization(mean=0.5, variance=1 / 12))
    spread = {}
    if fix.init == "spread":
        spread = {
            "kernel_initializer": keras.initializers.RandomNormal(stddev=1.0),
            "bias_initializer": keras.initializers.RandomUniform(-1.0, 1.0),
        }
    for width in fix.widths:
        layers.append(keras.layers.Dense(width, activation=fix.activation, **spread))
    layers.append(keras.layers.Dense(1))
    return keras.Sequential(layers)


def train(fix, seed, x):
    keras.utils.set_random_seed(seed)
    net = build(fix)
    optimizer = keras.optimizers.Adam(fix.learning_rate)
    options = {"epochs": 10, "batch_size": 20, "verbose": 0}
    start = time.perf_counter()
    if fix.sobolev:
        history = demo.sobolev_fit(net, x, optimizer, **options)
        loss = history.history["y_loss"][-1]
    else:
        net.compile(optimizer, "mse")
        loss = net.fit(x, x**2, **options).history["loss"][-1]
    return net, loss, time.perf_counter() - start


def measure(x, grid):
    inner = (grid[:, 0] >= 0.1) & (grid[:, 0] <= 0.9)
    rows, relu_nets = [], []
    for fix in FIXES:
        cells = []
        for seed in SEEDS:
            net, loss, seconds = train(fix, seed, x)
            if fix.activation == "relu" and fix.smoothing is None:
                relu_nets.append(net)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ZeroCurvatureWarning)
                d2y = derivatives(net, grid, smoothing=fix.smoothing)[2].ravel()
            cells.append(
                (d2y[inner].mean(), np.abs(d2y[inner] - 2).max(), loss, seconds)
            )
        rows.append((fix.label, cells))
        print(f"  {fix.label}: done", file=sys.stderr, flush=True)
    return rows, relu_nets


def table(rows):
    lines = [
        "| what the user does | mean d2y | max \\|d2y − 2\\| | loss (y) | time |",
        "|---|---|---|---|---|",
    ]
    for label, cells in rows:
        mean, worst, loss, seconds = zip(*cells, strict=True)
        lines.append(
            f"| {label} | {' / '.join(f'{v:.2f}' for v in mean)} | "
            f"{' / '.join(f'{v:.2f}' for v in worst)} | "
            f"{' / '.join(f'{v:.0e}' for v in loss)} | "
            f"{' / '.join(f'{v:.1f} s' for v in seconds)} |"
        )
    return "\n".join(lines)


def sigma_figure(net, grid):
    curves = {}
    for sigma in SIGMAS:
        d2y = derivatives(net, grid, smoothing=sigma)[2].ravel()
        curves[f"σ = {sigma:g}"] = d2y
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ZeroCurvatureWarning)
        curves["exact (σ = 0)"] = derivatives(net, grid)[2].ravel()
    panels = {"d2y": {"truth": np.full(len(grid), 2.0), **curves}}
    fig = plotting.comparison_figure(
        grid[:, 0], panels, title="The question's ReLU net: d²y/dx² smoothed at σ"
    )
    fig.set_size_inches(8, 4)
    return fig


def main():
    x = np.linspace(0, 1, 1000, dtype="float32").reshape(-1, 1)
    grid = np.linspace(0, 1, 401, dtype="float32").reshape(-1, 1)
    rows, relu_nets = measure(x, grid)
    print(f"Backend: {keras.backend.backend()}; seeds {' / '.join(map(str, SEEDS))}\n")
    print(table(rows))
    inner = (grid[:, 0] >= 0.15) & (grid[:, 0] <= 0.85)
    print("\nThe ReLU net smoothed, mean d2y on [0.15, 0.85] (seeds 0 / 1):")
    for sigma in SIGMAS:
        means = [
            derivatives(net, grid, smoothing=sigma)[2].ravel()[inner].mean()
            for net in relu_nets
        ]
        print(f"  σ = {sigma:g}: {' / '.join(f'{m:.2f}' for m in means)}")
    os.makedirs(FIGURE.parent, exist_ok=True)
    plotting.save_png(sigma_figure(relu_nets[0], grid), str(FIGURE))
    print(f"\nFigure: {FIGURE}")


if __name__ == "__main__":
    main()
