"""The library as a user installs it: `pip install .` puts one package,
`batchsize`, in site-packages (its callbacks, models and optimizers as
subpackages, no generic top-level name), and it imports from any directory."""

import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_pip_install_puts_one_package_in_site_packages(tmp_path):
    target = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                            "--no-build-isolation", "--target", str(target), str(ROOT)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    top = {p.name for p in target.iterdir() if not p.name.endswith((".dist-info", ".egg-info"))}
    assert top == {"batchsize"}, top
    for module in ("callbacks/schedules.py", "models/batch_statistics.py",
                   "optimizers/accumulation.py"):
        assert (target / "batchsize" / module).is_file(), module
    # From another directory, with only the installed copy on the path.
    code = ("import batchsize, keras; "
            "from batchsize import GradientAccumulator, BatchSizeSchedule, TrainingSchedule; "
            "print(batchsize.__file__); "
            "acc = GradientAccumulator(keras.optimizers.SGD(0.1), 4); print(type(acc).__module__)")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300,
                         env={"PYTHONPATH": str(target), "KERAS_BACKEND": "jax",
                              "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.split()
    assert lines[0].startswith(str(target))
    assert lines[-1] == "batchsize.optimizers.accumulation"


def test_pip_install_brings_every_package_the_library_imports():
    """The package declares each third-party package its modules import
    (read from their source, imports inside functions included) with
    requirements.txt's range, and TensorFlow, Keras's default backend
    (Keras does not import without it): so a fresh `pip install .` imports.
    JAX and PyTorch are imported only on their backend, the user's choice."""
    import ast
    import tomllib
    from importlib.metadata import packages_distributions

    from packaging.requirements import Requirement

    imported = set()
    for folder in ("batchsize", "callbacks", "models", "optimizers"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    imported |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"batchsize", "jax", "torch"}
    assert {"keras", "numpy", "tensorflow"} <= third_party, third_party
    distributions = packages_distributions()  # module -> the installed distributions
    needed = {name for module in third_party for name in distributions[module]}

    def by_name(lines):
        return {Requirement(line).name.lower(): Requirement(line) for line in lines if line}

    declared_lines = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "dependencies"]
    declared = by_name(declared_lines)
    listed_lines = [line.split("#")[0].strip() for line in
                    (ROOT / "requirements.txt").read_text().splitlines()]
    listed = by_name(listed_lines)
    for name in needed:
        name = name.lower().replace("_", "-")
        assert name in declared, f"{name} is imported by the library but not in pyproject.toml"
        assert str(declared[name].specifier) == str(listed[name].specifier), name
    # TensorFlow per platform, as requirements.txt (tensorflow-cpu on x86_64).
    backend = {line for line in declared_lines if line.startswith("tensorflow")}
    assert backend == {line for line in listed_lines if line.startswith("tensorflow")
                       and "datasets" not in line}


def test_old_names_still_work_for_one_release_with_a_warning():
    """`from optimizers import GradientAccumulator` (the pre-package path, from
    a checkout) and `BatchSizeSchedule.phases` still work, warn, and give the
    package's own objects and values."""
    import importlib

    import batchsize
    from batchsize import BatchSizeSchedule, TrainingSchedule

    for name in ("optimizers", "callbacks", "models"):
        sys.modules.pop(name, None)
        with pytest.warns(DeprecationWarning, match=f"use `import batchsize.{name}`"):
            old = importlib.import_module(name)
        sys.modules.pop(name, None)
    assert old.GhostBatchNormalization is batchsize.GhostBatchNormalization
    schedule = TrainingSchedule(32, 0.1, 1000, epochs=4, batch_milestones=(2,), batch_factor=4,
                                max_device_batch=64)
    callback = BatchSizeSchedule.from_schedule(schedule)
    with pytest.warns(DeprecationWarning, match="schedule.phases"):
        assert callback.phases(4) == schedule.phases(4) == [(0, 2, 32, 0.0), (2, 4, 64, 0.0)]


@pytest.mark.slow  # ~7 s
def test_the_suites_old_module_paths_give_the_moved_modules_with_a_warning():
    """reproduce/ in rooms: `reproduce.train` is `reproduce.runs.train` (the same
    object, not a second copy), every module of every room has its old name, and
    `python -m reproduce.<old>` runs the moved module's command."""
    import importlib

    from reproduce import moved, registry
    from reproduce.runs import train

    names = moved.new_names()
    assert names["reproduce.train"] == "reproduce.runs.train"
    assert {f"reproduce.{name}" for name in registry.NAMES} <= set(names)
    assert names["reproduce.check_claims"] == "reproduce.tools.check_claims"
    sys.modules.pop("reproduce.train", None)
    with pytest.warns(DeprecationWarning, match="import `reproduce.runs.train`"):
        assert importlib.import_module("reproduce.train") is train
    for old, new in names.items():
        assert importlib.util.find_spec(new) is not None, new
    run = subprocess.run([sys.executable, "-m", "reproduce.report",
                          "--preset", "nonsense"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert "use `python -m reproduce.tools.report`" in run.stderr
    assert run.returncode == 2 and "invalid choice: 'nonsense'" in run.stderr


def test_the_environment_is_read_by_one_parser_with_one_line_errors(monkeypatch):
    from reproduce.runs import cli, settings

    monkeypatch.setenv("JOBS", "")
    assert settings.env_number("JOBS", None) is None  # make exports unset names empty
    monkeypatch.setenv("JOBS", "3")
    assert settings.env_number("JOBS") == 3
    for value in ("x", "0", "1.5"):
        monkeypatch.setenv("JOBS", value)
        with pytest.raises(cli.UserError, match=f"JOBS='{value}': expected an integer >= 1"):
            settings.env_number("JOBS")
    monkeypatch.setenv("TENSORBOARD", "2")
    with pytest.raises(cli.UserError, match="TENSORBOARD='2': expected one of 1, 0 .1 .default"):
        settings.env_text("TENSORBOARD", "1", choices=("1", "0"))
    monkeypatch.delenv("DATA_DIR", raising=False)
    from reproduce.runs import datasets
    from reproduce.tools import kaggle

    assert settings.data_dir() == datasets.default_data_dir() == settings.ROOT / "data"
    # The Kaggle command's --data-dir default is the same folder.
    assert kaggle.parser().get_default("data_dir") == settings.ROOT / "data"


README_EXAMPLE_DATA = """
import numpy as np
rng = np.random.default_rng(0)
x_train, y_train = rng.normal(size=(3000, 784)).astype("float32"), rng.integers(0, 10, 3000)
x_test, y_test = rng.normal(size=(500, 784)).astype("float32"), rng.integers(0, 10, 500)
model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(256),
                          keras.layers.BatchNormalization(), keras.layers.ReLU(),
                          keras.layers.Dense(10)])
"""


def test_the_readmes_library_example_runs():
    """The README's example, as printed there, on random data: 3 epochs of
    3,000 examples at 1024 per update make 9 updates, and val_accuracy is
    the recomputed model's."""
    import keras

    text = (ROOT / "README.md").read_text()
    code = text.split("## The library")[1].split("```python\n")[1].split("```")[0]
    setup, rest = code.split("model.compile", 1)
    namespace = {}
    exec(setup + README_EXAMPLE_DATA + "model.compile" + rest, namespace)
    model = namespace["model"]
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 9
    val = model.history.history["val_accuracy"][-1]
    assert val == pytest.approx(model.evaluate(namespace["x_test"], namespace["y_test"],
                                               verbose=0, return_dict=True)["accuracy"])
