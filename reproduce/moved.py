"""The suite's modules before it was split into rooms (runs/, papers/, tools/),
for one release: `import reproduce.small_batch` and `python -m
reproduce.small_batch` still work, with a deprecation warning, and give the
module at its new path (`reproduce.papers.small_batch`), not a second copy."""

import importlib
import importlib.abc
import importlib.util
import pkgutil
import sys
import warnings
from pathlib import Path

ROOMS = ("runs", "papers", "tools")


def new_names():
    """{old name: new name} for every module in a room: reproduce.train -> reproduce.runs.train."""
    here = Path(__file__).parent
    return {f"reproduce.{module.name}": f"reproduce.{room}.{module.name}"
            for room in ROOMS for module in pkgutil.iter_modules([str(here / room)])}


class _Alias(importlib.abc.Loader):
    """Loads an old name as the module at its new name (the same object)."""

    def __init__(self, old, new):
        self.old, self.new = old, new

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        sys.modules[self.old] = importlib.import_module(self.new)

    def get_code(self, name):  # `python -m <old name>` runs the new module's code
        warnings.warn(f"`python -m {self.old}` is deprecated; use `python -m {self.new}`",
                      FutureWarning, stacklevel=2)
        return importlib.util.find_spec(self.new).loader.get_code(self.new)


class MovedModules(importlib.abc.MetaPathFinder):
    """Finds each moved module's old name (a deprecation warning names the new one)."""

    def __init__(self):
        self.moved = new_names()

    def find_spec(self, name, path=None, target=None):
        new = self.moved.get(name)
        if new is None:
            return None
        warnings.warn(f"`{name}` is deprecated; import `{new}`", DeprecationWarning, stacklevel=2)
        origin = importlib.util.find_spec(new).origin  # runpy's sys.argv[0]
        return importlib.util.spec_from_loader(name, _Alias(name, new), origin=origin)


def install():
    if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(MovedModules())
