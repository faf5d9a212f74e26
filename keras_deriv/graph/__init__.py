"""The model graph: one walk over a model (`walk.py`) and one registry of
per-layer facts keyed by class (`registry.py`, entries in
`known_layers.py`)."""
