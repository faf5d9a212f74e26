"""What keras_deriv concludes from the walk: the zero-curvature verdict
(`curvature.py`) and the checks that refuse a model or a mode
(`checks.py`)."""
