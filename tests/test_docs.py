"""Every code example in the docs, the README and the docstrings runs."""

import doctest
import pathlib
import re

import pytest

import keras_deriv.analysis.curvature
import keras_deriv.callbacks.derivative_logger
import keras_deriv.curve_store
import keras_deriv.estimators
import keras_deriv.evaluation
import keras_deriv.layers.derivative_model
import keras_deriv.probes
import keras_deriv.training_points

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
# Blocks fenced as ```python run; those titled "Before ..." (```python
# title="Before (DeepXDE)") show another library's code and do not.
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def examples():
    return [
        pytest.param(code, id=f"{page.relative_to(ROOT)}#{i}")
        for page in PAGES
        for i, code in enumerate(BLOCK.findall(page.read_text()))
    ]


@pytest.mark.parametrize("code", examples())
def test_markdown_example_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "<example>", "exec"), {"__name__": "__example__"})


@pytest.mark.parametrize(
    "module",
    [
        keras_deriv.layers.derivative_model,
        keras_deriv.evaluation,
        keras_deriv.estimators,
        keras_deriv.analysis.curvature,
        keras_deriv.callbacks.derivative_logger,
        keras_deriv.curve_store,
        keras_deriv.training_points,
        keras_deriv.probes,
    ],
)
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
