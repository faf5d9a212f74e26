"""Matplotlib figures of derivative curves. Uses the object-oriented API
(`Figure` + the Agg canvas), never pyplot, so it changes no global state."""

import numpy as np

from keras_deriv.atomic_files import write_atomically

PANEL_LABELS = {
    "y": "y",
    "dy": "dy/dx",
    "d2y": "d²y/dx²",
    "d3y": "d³y/dx³",
    "d4y": "d⁴y/dx⁴",
}


def panel_label(key, smoothing=None):
    """A panel's label: `"d²y/dx²"`, or `"d²y/dx² (smoothed, σ = 0.05)"`
    for a smoothed output (`"d2y_smoothed"`)."""
    base = key.removesuffix("_smoothed")
    label = PANEL_LABELS.get(base, base)
    if base != key:
        label += f" (smoothed, σ = {smoothing:g})" if smoothing else " (smoothed)"
    return label


def _figure(ncols, width=4.2, height=3.4):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def epoch_curves_figure(x, curves, epochs, xlabel="x", title=None, smoothing=None):
    """Panels y, dy/dx, d²y/dx², ... against `x`, one line per epoch,
    coloured by epoch with a colour bar.

    Args:
        x: `(n,)` probe positions along the plotted feature.
        curves: dict key -> list (one per epoch) of `(n,)` arrays, keys in
            panel order (`"y"`, `"dy"`, `"d2y"`, ...).
        epochs: the (1-based) epoch numbers of the lines.
        xlabel: label of the x axis.
        title: figure title.
        smoothing: σ of smoothed panels (keys ending in `_smoothed`), for
            their labels.
    """
    from matplotlib import cm, colors
    from matplotlib.ticker import MaxNLocator

    order = np.argsort(x)
    fig, axes = _figure(len(curves))
    norm = colors.Normalize(vmin=min(epochs), vmax=max(max(epochs), min(epochs) + 1))
    cmap = cm.viridis
    for ax, (key, per_epoch) in zip(axes, curves.items(), strict=True):
        for epoch, values in zip(epochs, per_epoch, strict=True):
            ax.plot(x[order], values[order], color=cmap(norm(epoch)), linewidth=1.4)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(panel_label(key, smoothing))
        ax.set_title(panel_label(key, smoothing))
        ax.grid(alpha=0.3)
    bar = fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=list(axes))
    bar.locator = MaxNLocator(integer=True)  # epochs are whole numbers
    bar.update_ticks()
    bar.set_label("epoch")
    if title:
        fig.suptitle(title)
    return fig


def comparison_figure(x, panels, xlabel="x", title=None):
    """Panels of named curves against `x`: `panels` is a dict panel key ->
    dict label -> `(n,)` array (e.g. "truth", "relu net", "silu net")."""
    order = np.argsort(x)
    fig, axes = _figure(len(panels))
    for ax, (key, lines) in zip(axes, panels.items(), strict=True):
        for label, values in lines.items():
            style = {"color": "black", "linestyle": "--"} if label == "truth" else {}
            ax.plot(
                x[order], np.asarray(values)[order], label=label, linewidth=1.6, **style
            )
        ax.set_xlabel(xlabel)
        ax.set_ylabel(panel_label(key))
        ax.set_title(panel_label(key))
        ax.grid(alpha=0.3)
    axes[0].legend()
    if title:
        fig.suptitle(title)
    return fig


def png_bytes(fig):
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def save_png(fig, path):
    """Save `fig` as a PNG at `path`, atomically."""
    write_atomically(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
