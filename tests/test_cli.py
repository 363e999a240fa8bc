"""What a user meets at the command line: the settings the targets run with,
--set overrides, and one-line errors from every CLI."""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SMALL_BATCH_SMOKE, needs_cifar10, our_lines

from reproduce import figure, registry
from reproduce.papers import small_batch
from reproduce.runs.config import ConfigError

ROOT = Path(__file__).resolve().parent.parent
X86 = platform.machine().lower() in ("x86_64", "amd64")


def _env(**changes):
    """This process's environment without the suite's settings, plus `changes`:
    the test must not set what it checks."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    return {**env, **changes}


def _settings(command, **env):
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env=_env(**env))
    assert out.returncode == 0, out.stderr[-1000:]
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.slow
@pytest.mark.skipif(not X86, reason="oneDNN is switched on by default on x86 only")
@pytest.mark.parametrize("command", [
    ["make", "-s", "settings", f"PYTHON={sys.executable}"],  # what the Make targets start
    [sys.executable, "-m", "reproduce"],  # any `python -m reproduce.<module>`
], ids=["make", "python -m"])
def test_onednn_is_in_force_by_default_and_a_users_0_wins(command):
    assert _settings(command).endswith("TF_ENABLE_ONEDNN_OPTS=1 onednn_in_force=True")
    assert _settings(command, TF_ENABLE_ONEDNN_OPTS="0").endswith(
        "TF_ENABLE_ONEDNN_OPTS=0 onednn_in_force=False")


def test_set_parses_literals_and_text_and_names_bad_fields():
    assert figure.parse_overrides(["seed=3", "lr_milestones=(2, 4)", "norm=ghost:16",
                                   "augment=shift", "max_batch_size=None"]) == dict(
        seed=3, lr_milestones=(2, 4), norm="ghost:16", augment="shift", max_batch_size=None)
    with pytest.raises(ConfigError, match="--set sed: not a RunConfig field; expected one of"):
        figure.parse_overrides(["sed=3"])
    with pytest.raises(ConfigError, match="expected field=value"):
        figure.parse_overrides(["seed"])


def test_training_minutes_count_a_run_serving_two_cells_once():
    # The seed article's batch-norm natives are the sweep's own runs: one config
    # under two labels, trained once, so counted once.
    from reproduce.runs.config import RunConfig
    from reproduce.runs.store import RunRecord

    class Store:  # a stored run of 60 s per config; None for one never trained
        def load(self, config):
            return None if config.seed == 9 else RunRecord("finished", [], 60.0)

    shared, other = RunConfig(batch_size=128), RunConfig(batch_size=1024)
    runs = {("sweep", "batch 128"): shared, ("accumulation", "native 128"): shared,
            ("sweep", "batch 1024"): other, ("missing",): other.replace(seed=9)}
    assert figure.training_minutes(Store(), runs) == pytest.approx(2.0)


@pytest.mark.parametrize("args,message", [
    (["--set", "batch_size=0"], "error: batch_size=0: expected an integer >= 1."),
    (["--set", "epochs=two"], "error: epochs='two': expected an integer >= 1."),
    (["--set", "colour=red"], "error: --set colour: not a RunConfig field"),
    (["--variant", "ghost:x"], "error: unknown --variant 'ghost:x'"),
])
def test_bad_overrides_are_one_line_and_exit_2_before_any_training(args, message, tmp_path,
                                                                      capsys):
    with pytest.raises(SystemExit) as exit_:
        small_batch.main(["--preset", "smoke", "--out", str(tmp_path / "fig"),
                          "--results", str(tmp_path / "res"), *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message), err
    assert not (tmp_path / "fig").exists() and not (tmp_path / "res").exists()


@SMALL_BATCH_SMOKE
@pytest.mark.slow
@needs_cifar10
def test_set_trains_every_run_of_the_preset_with_the_overrides(small_batch_smoke):
    # small_batch's smoke preset with --set epochs=1 --set seed=3 (conftest)
    records = [json.loads(p.read_text())
               for p in (small_batch_smoke / "res" / "small_batch").glob("*.json")]
    spec = small_batch.PRESETS["smoke"]
    # The grid at seed 3 (and an edge's next cell outward, at most one per m in
    # smoke); the follow-up (each m's best cell) at the next seed.
    seeds = [record["config"]["seed"] for record in records]
    grid = len(spec["batch_sizes"]) * len(spec["eta_exponents"])
    assert grid <= seeds.count(3) <= grid + len(spec["batch_sizes"])
    assert set(seeds) <= {3, 4} and seeds.count(4) <= len(spec["batch_sizes"])
    for record in records:
        assert record["config"]["epochs"] == 1
        assert [row["epoch"] for row in record["rows"]] == [1]
        # The milestones at 50% / 75% of training follow the new epoch count.
        assert record["config"]["lr_milestones"] == [1, 1]


CLIS = [["-m", "reproduce.papers.small_batch", "--preset", "smoke"],
        ["-m", "reproduce.tools.kaggle", "data-from-mnist"]]


def _without_data(tmp_path):
    return _env(DATA_DIR=str(tmp_path / "data"), DATA_MIRROR=str(tmp_path / "none"),
                DATA_DOWNLOAD="0", TF_CPP_MIN_LOG_LEVEL="3")


@pytest.mark.slow
@pytest.mark.parametrize("args", CLIS, ids=[a[1] for a in CLIS])
def test_a_missing_dataset_is_one_line_on_stderr_and_exit_2(args, tmp_path):
    extra = [] if "kaggle" in args[1] else ["--out", str(tmp_path / "fig"),
                                            "--results", str(tmp_path / "res")]
    out = subprocess.run([sys.executable, *args, *extra], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env=_without_data(tmp_path))
    assert out.returncode == 2, out.stderr[-2000:]
    ours = our_lines(out.stderr)
    assert len(ours) == 1 and "not found in" in ours[0] and "put the file at" in ours[0], ours
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "fig").exists()


# Every figure's main in one fresh process (one TensorFlow start-up, not six):
# its exit status and what it printed on stderr.
EVERY_FIGURE = """
import contextlib, io, json, sys
from reproduce import registry
results = {}
for figure in registry.figures():
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            figure.main(["--preset", "smoke", "--out", sys.argv[1], "--results", sys.argv[2]])
            code = 0
        except SystemExit as exit:
            code = exit.code
    results[figure.name] = [code, err.getvalue()]
print(json.dumps(results))
"""


@pytest.mark.slow
def test_every_figure_answers_a_missing_dataset_with_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-c", EVERY_FIGURE, str(tmp_path / "fig"),
                          str(tmp_path / "res")], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env=_without_data(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert list(results) == list(registry.NAMES)
    for name, (code, stderr) in results.items():
        ours = our_lines(stderr)
        assert code == 2, (name, stderr)
        assert len(ours) == 1 and "not found in" in ours[0] and "put the file at" in ours[0], (
            name, ours)
    assert not (tmp_path / "fig").exists()


@pytest.mark.slow  # imports every figure module (~6 s)
def test_the_registry_is_the_one_list_of_figures():
    """Every module that declares a Figure is in reproduce/registry.py, in the
    Makefile's targets and `make help`, and nowhere else is a list kept."""
    import re

    declared = sorted(p.stem for p in (ROOT / "reproduce").rglob("*.py")
                      if re.search(r"^FIGURE = Figure\(", p.read_text(), re.M))
    assert sorted(registry.NAMES) == declared
    assert [f.name for f in registry.figures()] == list(registry.NAMES)
    targets = subprocess.run(["make", "-s", "-n", "figures", f"PYTHON={sys.executable}"],
                             cwd=ROOT, capture_output=True, text=True).stdout
    assert all(registry.target(name) in targets for name in registry.NAMES), targets
    dry = subprocess.run(["make", "-s", "-n", "fig-lr-scaling", "PRESET=smoke",
                          f"PYTHON={sys.executable}"], cwd=ROOT, capture_output=True, text=True)
    assert "-m reproduce.papers.lr_scaling --preset smoke" in dry.stdout, dry.stdout + dry.stderr


# What the refactor must not change: a run's key names its stored record, so
# a key that moved would make every store retrain. Written down from the store
# before the runner was split (reproduce/runs/config.py).
STORED_KEYS = {
    "RunConfig()": "d4c5ea897faa6412",
}
# The last run of each figure's quick grid, keyed before the split.
# small_batch's, dont_decay's and generalization_gap's quick grids were
# redesigned since (#43: a scale where their claims mean something).
LAST_QUICK_KEYS = {
    "sharp_minima": "41356796fd7f3a50",
    "mnist_batch_size": "bf1d6042813da4e7",
    "critical_batch": "63fcdacd37e3d2de",
}


def test_stored_runs_keep_their_keys():
    from reproduce.runs.config import RunConfig

    # Stored runs were evaluated with batch norm's moving averages: with that
    # named they keep their keys (recomputed statistics make new runs).
    assert RunConfig(eval_statistics="moving").key == STORED_KEYS["RunConfig()"]
    for name, key in LAST_QUICK_KEYS.items():
        figure_ = registry.figure(name)
        last = list(figure_.grid(figure_.presets["quick"]).values())[-1]
        assert last.replace(eval_statistics="moving").key == key, name
    # Every committed quick CSV that names its runs' keys names the keys the
    # figure's grid makes today: the figures regenerate from the same records.
    import pandas as pd

    for name in ("small_batch",):
        figure_ = registry.figure(name)
        grid = {config.key for config in figure_.grid(figure_.presets["quick"]).values()}
        frame = pd.read_csv(ROOT / "figures" / f"{name}.csv")
        if "train_loss" not in frame:  # the column #43's redesign added
            pytest.xfail(f"figures/{name}.csv predates the quick preset's redesign (#43, "
                         "recomputed batch norm statistics): regenerate it")
        assert grid <= set(frame.key), (name, sorted(grid - set(frame.key))[:3])


def test_no_import_cycles_and_the_library_imports_nothing_of_reproduce():
    """Every import between the project's modules, lazy ones included, forms no
    cycle; optimizers/, callbacks/ and models/ import nothing of reproduce/.
    Two exceptions, by design, which run only when asked for: a module-level
    `__getattr__` (PEP 562) that forwards an old import path
    (`optimizers.EpochAlignedAccumulation`), and an old command's
    `if __name__ == "__main__":` (`python -m reproduce.claims`)."""
    import ast

    def forwarding(tree):
        """Nodes that never run on import: a PEP 562 `__getattr__` and a
        script's `if __name__ == "__main__":` block (an old command name)."""
        def main_block(f):
            return isinstance(f, ast.If) and "__main__" in ast.unparse(f.test)
        return {id(node) for f in tree.body if (isinstance(f, ast.FunctionDef)
                and f.name == "__getattr__") or main_block(f) for node in ast.walk(f)}

    modules = {}
    library = ("optimizers", "callbacks", "models")  # installed as batchsize.<folder>
    for path in [*ROOT.glob("reproduce/*.py"), *ROOT.glob("batchsize/*.py"),
                 *(p for folder in library for p in ROOT.glob(f"{folder}/*.py"))]:
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        name = f"batchsize.{name}" if name.split(".")[0] in library else name
        names, tree = set(), ast.parse(path.read_text())
        skip = forwarding(tree)
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
        modules[name] = names
    edges = {name: {m for m in names if m in modules and m != name and not
                    m.startswith(name + ".")}  # a package's __init__ gathering its modules
             for name, names in modules.items()}
    assert "batchsize.callbacks.schedules" in edges and "batchsize" in edges
    for name, targets in edges.items():
        if name.startswith("batchsize"):
            assert not any(t.startswith("reproduce") for t in targets), (name, targets)

    def visit(name, path):
        assert name not in path, " -> ".join(path + [name])
        for target in edges[name]:
            visit(target, path + [name])

    for name in edges:
        visit(name, [])
