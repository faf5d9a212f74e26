"""Regenerate the documentation's figures from the real package.

    python docs/make_figures.py

Writes docs/images/demo.png (`keras-deriv demo`) and docs/images/logger.png
(a DerivativeLogger run). Run by .ci/run before `mkdocs build`.
"""

import os
import pathlib
import shutil
import tempfile
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_deriv import DerivativeLogger, demo  # noqa: E402

IMAGES = pathlib.Path(__file__).parent / "images"


def demo_figure():
    with tempfile.TemporaryDirectory() as out:
        demo.run(out_dir=out)
        shutil.copy(os.path.join(out, demo.FIGURE), IMAGES / "demo.png")


def logger_figure():
    keras.utils.set_random_seed(0)
    net = keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(64, activation="silu"),
            keras.layers.Dense(64, activation="silu"),
            keras.layers.Dense(1),
        ]
    )
    net.compile(keras.optimizers.Adam(3e-3), "mse")
    x = np.linspace(0, 1, 1000, dtype="float32").reshape(-1, 1)
    with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logger = DerivativeLogger(x[::10], every=5, log_dir=out)
        net.fit(x, x**2, epochs=30, batch_size=50, verbose=0, callbacks=[logger])
        shutil.copy(os.path.join(out, "derivatives.png"), IMAGES / "logger.png")


if __name__ == "__main__":
    IMAGES.mkdir(exist_ok=True)
    demo_figure()
    logger_figure()
    print(f"wrote {IMAGES / 'demo.png'} and {IMAGES / 'logger.png'}")
