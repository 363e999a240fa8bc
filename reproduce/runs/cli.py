"""Shared command-line handling for the figure scripts: presets, checked
arguments, one-line errors with a non-zero exit, atomic figure/CSV writes."""

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ROOT / "figures"
RESULTS = ROOT / "results"
PRESETS = ("smoke", "quick", "cpu", "paper")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def parser(description):
    p = OneLineParser(description=description)
    p.add_argument("--preset", choices=PRESETS, default="quick",
                   help="smoke: seconds (CI); quick: minutes on a 2-core CPU; cpu: the largest "
                        "scale that decides the named papers' claims on it (<= 150 min; "
                        "Smith, Masters & Luschi, Hoffer's CIFAR arm); paper: their settings")
    p.add_argument("--out", type=Path, default=FIGURES, help="folder for the PNGs and CSVs")
    p.add_argument("--results", type=Path, default=RESULTS,
                   help="results store (finished runs are reused)")
    p.add_argument("--verbose", action="store_true", help="Keras progress bars")
    p.add_argument("--engine", choices=("fast", "fit"), default="fast",
                   help="fast: data on the device, many steps per call (reproduce.runs.engine); "
                        "fit: model.fit. Same results; runs stored by either are reused")
    return p


class UserError(Exception):
    """Bad input from the user (a dataset, a config value, a file): the
    command-line tools print its message on one line, with no traceback."""


@contextlib.contextmanager
def one_line_errors():
    """Turns a `UserError` into one line on stderr and exit status 2."""
    try:
        yield
    except UserError as error:
        fail(str(error).splitlines()[0] if str(error) else type(error).__name__)


def fail(message):
    """One line on stderr, exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def save_atomic(path, write):
    """Calls write(tmp_path), then renames into place: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp" + path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes files private; figures are for everyone
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def save_csv(frame, path):
    return save_atomic(path, lambda tmp: frame.to_csv(tmp, index=False))


def save_figure(figure, path):
    return save_atomic(path, lambda tmp: figure.savefig(tmp, dpi=120, bbox_inches="tight",
                                                        format="png"))
