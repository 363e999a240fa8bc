"""The figures: the one list every other place reads.

The Makefile makes a `fig-<name>` target of each (`python -m
reproduce.registry` prints them), and the report, `make check-claims`, the
dry-run tests and the command-line tests all iterate this list. Adding a
figure is one module `reproduce/<name>.py` that defines `FIGURE = Figure(...)`
and one line here. Standard library only, so `make` can read it before
`make setup`.
"""

import importlib
import sys

# In the order of figures/README.md.
NAMES = (
    "small_batch",
    "dont_decay",
    "generalization_gap",
    "sharp_minima",
    "mnist_batch_size",
    "lr_scaling",
    "critical_batch",
)


def target(name):
    """The figure's Make target: small_batch -> fig-small-batch."""
    return "fig-" + name.replace("_", "-")


def figure(name):
    """The `Figure` that `reproduce/<name>.py` declares."""
    if name not in NAMES:
        raise KeyError(f"unknown figure {name!r}: expected one of {', '.join(NAMES)}")
    return importlib.import_module(f"reproduce.{name}").FIGURE


def figures():
    """Every `Figure`, in order."""
    return [figure(name) for name in NAMES]


if __name__ == "__main__":
    print(" ".join(map(target, NAMES)) if sys.argv[1:] != ["names"] else " ".join(NAMES))
