"""The figures: the one list every other place reads.

The Makefile makes a `fig-<name>` target of each (`python -m
reproduce.registry` prints them), and the report, `make check-claims`, the
dry-run tests and the command-line tests all iterate this list. Adding a
figure is one module `reproduce/papers/<name>.py` that defines `FIGURE = Figure(...)`
and one line here. Standard library only, so `make` can read it before
`make setup`.
"""

import importlib
import sys

# The package of the figures' modules: `python -m reproduce.papers.<name>`.
PACKAGE = "reproduce.papers"

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

# The paper presets that run to the end on a 2-core CPU in hours (`make
# figures-cpu-paper`): figure -> the network trained (None: the whole preset).
CPU_PAPER = {
    "mnist_batch_size": None,
    "lr_scaling": None,
    "generalization_gap": "F1",
    "sharp_minima": "F1",
}


# The `cpu` presets (#44): the named papers' claims decided on a 2-core CPU,
# each at most 150 minutes (Hoffer's with its long +RA runs 240): `make figures-cpu`.
CPU = ("dont_decay", "small_batch", "generalization_gap")


def target(name):
    """The figure's Make target: small_batch -> fig-small-batch."""
    return "fig-" + name.replace("_", "-")


def figure(name):
    """The `Figure` that `reproduce/papers/<name>.py` declares."""
    if name not in NAMES:
        raise KeyError(f"unknown figure {name!r}: expected one of {', '.join(NAMES)}")
    return importlib.import_module(f"{PACKAGE}.{name}").FIGURE


def figures():
    """Every `Figure`, in order."""
    return [figure(name) for name in NAMES]


def cpu_paper():
    """`make figures-cpu-paper`'s words: `name:network` (`name:` for the whole preset)."""
    return [f"{name}:{network or ''}" for name, network in CPU_PAPER.items()]


if __name__ == "__main__":
    if sys.argv[1:] == ["names"]:
        print(" ".join(NAMES))
    elif sys.argv[1:] == ["cpu"]:
        print(" ".join(CPU))
    elif sys.argv[1:] == ["cpu-paper"]:
        print(" ".join(cpu_paper()))
    else:
        print(" ".join(map(target, NAMES)))
