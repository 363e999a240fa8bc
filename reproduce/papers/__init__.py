"""One module per paper or article: its figure declared in full (model, data,
optimizer, schedule, grid, presets, claims), run by `python -m
reproduce.papers.<name>` or `make fig-<name>` (reproduce/registry.py lists them)."""
