"""`keras-deriv demo`: the question that started keras_deriv, end to end.

Fit y = x² on [0, 1] with the question's ReLU network and with smooth ones,
then compare y, y' and y'' with the truth (2x and 2): the ReLU net's second
derivative is identically 0, a smooth net's is about 2.
"""

import dataclasses
import os
import sys
import time
import warnings

import keras
import numpy as np

from keras_deriv import plotting
from keras_deriv.analysis.curvature import find_zero_curvature_activations
from keras_deriv.errors import ZeroCurvatureWarning
from keras_deriv.evaluation import derivatives
from keras_deriv.layers.derivative_model import DerivativeModel

FIGURE = "demo.png"
# The resolution at which the ReLU net's curvature is shown smoothed.
SMOOTHING = 0.05


@dataclasses.dataclass
class Recipe:
    """One network of the demo and how it is trained."""

    label: str
    trained_on: str
    activation: str
    widths: tuple
    epochs: int
    batch_size: int
    learning_rate: float
    sobolev: bool = False


RECIPES = (
    # The question as asked: Dense(1024, relu) -> Dense(1), Adam 1e-3, 10 epochs.
    Recipe("relu 1024", "values y", "relu", (1024,), 10, 20, 1e-3),
    # A value-only fit learns curvature slowly; silu gets there quickly.
    Recipe("silu 64x64", "values y", "silu", (64, 64), 30, 50, 3e-3),
    # Supervising the derivatives makes the curvature accurate.
    Recipe(
        "silu 64x64 (Sobolev)",
        "y, dy/dx and d2y/dx2",
        "silu",
        (64, 64),
        30,
        50,
        3e-3,
        True,
    ),
)


class Progress(keras.callbacks.Callback):
    """One line per network, updated in place at each epoch on a terminal."""

    def __init__(self, label, stream):
        super().__init__()
        self.label, self.stream = label, stream

    def on_epoch_end(self, epoch, logs=None):
        total = self.params.get("epochs", "?")
        last = epoch + 1 == total
        if not (last or self.stream.isatty()):
            return  # a log file or a pipe gets the final line only
        loss = (logs or {}).get("loss", float("nan"))
        line = (
            f"  training {self.label:<22} epoch {epoch + 1:>3}/{total}  loss {loss:.2e}"
        )
        print("\r" + line, end="\n" if last else "", file=self.stream, flush=True)


def build(recipe):
    layers = [keras.Input((1,))]
    layers += [
        keras.layers.Dense(w, activation=recipe.activation) for w in recipe.widths
    ]
    return keras.Sequential(
        [*layers, keras.layers.Dense(1)], name=recipe.label.split()[0]
    )


def train(recipe, x, stream):
    net = build(recipe)
    optimizer = keras.optimizers.Adam(recipe.learning_rate)
    callbacks = [Progress(recipe.label, stream)]
    fit = {"epochs": recipe.epochs, "batch_size": recipe.batch_size, "verbose": 0}
    if not recipe.sobolev:
        net.compile(optimizer, "mse")
        net.fit(x, x**2, callbacks=callbacks, **fit)
        return net
    sobolev_fit(net, x, optimizer, callbacks=callbacks, **fit)
    return net


def sobolev_fit(net, x, optimizer, **fit):
    """Fit `net` to y = x² on its values, slopes 2x and curvature 2 (losses
    on y, dy and d2y); returns the History."""
    inputs = keras.Input((1,))
    layer = DerivativeModel(net, order=2)
    model = keras.Model(
        inputs, dict(zip(layer.output_keys, layer(inputs), strict=True))
    )
    model.compile(optimizer, loss={"y": "mse", "dy": "mse", "d2y": "mse"})
    targets = {
        "y": x**2,
        "dy": (2 * x)[..., None],
        "d2y": np.full((len(x), 1, 1), 2.0, x.dtype),
    }
    return model.fit(x, targets, **fit)


def run(out_dir="keras_deriv_demo", seed=0, stream=None):
    """Run the demo; returns a dict of results per network label (the
    trained network, its curves on the grid and summary numbers)."""
    stream = stream or sys.stdout
    start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    print(
        f"keras_deriv demo: fit y = x^2 on [0, 1] ({keras.backend.backend()} backend)",
        file=stream,
    )
    x = np.linspace(0, 1, 1000, dtype="float32").reshape(-1, 1)
    grid = np.linspace(0, 1, 201, dtype="float32").reshape(-1, 1)
    inner = (grid[:, 0] >= 0.1) & (grid[:, 0] <= 0.9)
    results = {}
    for recipe in RECIPES:
        net = train(recipe, x, stream)
        flagged = [
            f"{f.layer} ({f.activation})" for f in find_zero_curvature_activations(net)
        ]
        results[recipe.label] = _curves(net, grid, inner, recipe.trained_on, flagged)
        if recipe is RECIPES[0]:
            # the same net smoothed: the curvature of the function it fits
            results[f"{recipe.label} smoothed"] = _curves(
                net,
                grid,
                inner,
                recipe.trained_on,
                [f"(smoothed, σ={SMOOTHING:g})"],
                smoothing=SMOOTHING,
                legend=f"{recipe.label}, smoothed σ = {SMOOTHING:g}",
            )
    print_table(results, stream)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, FIGURE)
    truth = {"y": grid[:, 0] ** 2, "dy": 2 * grid[:, 0], "d2y": np.full(len(grid), 2.0)}
    panels = {
        key: {
            "truth": truth[key],
            **{r.get("legend", label): r[key] for label, r in results.items()},
        }
        for key in ("y", "dy", "d2y")
    }
    fig = plotting.comparison_figure(
        grid[:, 0], panels, title="y = x²: ReLU and smooth networks against the truth"
    )
    plotting.save_png(fig, path)
    print(f"\nFigure: {path}   ({time.perf_counter() - start:.0f} s)", file=stream)
    return results


def _curves(net, grid, inner, trained_on, flagged, smoothing=None, legend=None):
    """One row of the table and one line per panel: y, dy, d2y on the grid
    and how far they are from the truth on the inner part."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ZeroCurvatureWarning)  # reported below
        values = derivatives(net, grid, smoothing=smoothing)
    y, dy, d2y = (v.reshape(len(grid)) for v in values)
    row = {
        "net": net,
        "trained_on": trained_on,
        "flagged": flagged,
        "y": y,
        "dy": dy,
        "d2y": d2y,
        "d2y_mean": float(d2y[inner].mean()),
        "d2y_max_error": float(np.abs(d2y[inner] - 2).max()),
        "dy_max_error": float(np.abs(dy[inner] - 2 * grid[inner, 0]).max()),
        "d2y_zero_fraction": float(np.mean(d2y == 0.0)),
    }
    if legend is not None:
        row["legend"] = legend
    return row


def print_table(results, stream):
    print(
        "\n"
        f"{'network':<22} {'trained on':<22} {'flagged activations':<22} "
        f"{'mean d2y':>9} {'max|d2y-2|':>11} {'max|dy-2x|':>11}",
        file=stream,
    )
    print("  (d2y and dy on [0.1, 0.9]; the truth is d2y = 2, dy = 2x)", file=stream)
    for label, r in results.items():
        flagged = ", ".join(r["flagged"]) or "none"
        print(
            f"{label:<22} {r['trained_on']:<22} {flagged:<22} {r['d2y_mean']:>9.3f} "
            f"{r['d2y_max_error']:>11.3f} {r['dy_max_error']:>11.3f}",
            file=stream,
        )
    relu, smoothed = list(results.values())[:2]
    if relu["d2y_zero_fraction"] == 1.0:
        print(
            "\nThe ReLU net fits the values, but its d2y/dx2 is exactly 0 everywhere: "
            "it is piecewise linear.\nSmoothed at σ = "
            f"{SMOOTHING:g} (derivatives(net, x, smoothing={SMOOTHING:g})), its "
            f"curvature is {smoothed['d2y_mean']:.2f} on average: the curvature of "
            "the function it fits,\nat that resolution (not the exact derivative). "
            "Smooth activations (softplus, gelu, silu, tanh) give a real curvature.",
            file=stream,
        )
