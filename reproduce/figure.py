"""One driver for every figure target.

A figure module declares *what* its paper's figure is: presets, the grid of
runs, the tables computed from the stored runs, and the plots drawn from the
tables (a `Figure`). `run_figure` does the rest, the same way for every
figure: the command line, the sweep into the resumable store, the
preset-suffixed file names, the atomic writes, the printout, and one-line
errors.

    python -m reproduce.papers.small_batch --preset smoke --set epochs=1 --set seed=3

`--set field=value` overrides a `RunConfig` field in every run of the preset
(repeatable). Values are Python literals (`--set lr_milestones=(2,4)`), or
text (`--set norm=ghost:16`). The grid's own fields still vary per run (e.g.
the batch size of each cell), and fields derived from the epochs (milestones
at fractions of training) follow the new `epochs`.

Scaling out (README "Scaling out"): `--ray ADDRESS` ($RAY_ADDRESS) trains the
runs as Ray tasks (`reproduce.runs.cluster`), `--devices N` ($DEVICES) spreads each
run over N devices (`reproduce.runs.devices`), and `--dry-run` ($DRY_RUN=1) trains
each kind of run for 2 updates and prints the sweep's cost (`reproduce.runs.plan`).
"""

import ast
import dataclasses
import sys
from pathlib import Path

import numpy as np

from reproduce import registry
from reproduce.runs import cli, plan, settings
from reproduce.runs.devices import use_cpu_devices
from reproduce.runs.config import ConfigError, RunConfig
from reproduce.runs.sweep import Sweep


@dataclasses.dataclass(frozen=True)
class Figure:
    """A paper's figure target, declared.

    Args:
        name: file stem and results folder, e.g. "small_batch".
        description: one line for --help.
        presets: {"smoke" | "quick" | "paper": spec}; a spec is a dict that
            holds the preset's `RunConfig`s (at any depth) and its grid.
        grid: `(spec, args) -> {label: RunConfig}`, every run of the figure.
        tables: `(sweep, runs, spec) -> {suffix: DataFrame}`; suffix "" is
            `<name>.csv`, "summary" `<name>_summary.csv`.
        plots: `(tables, runs, spec, title) -> {suffix: matplotlib figure}`.
        title: `(runs, spec) -> str`, the plots' common title.
        describe: `RunConfig -> str`, the run's label in progress lines.
        report: [(heading, table suffix)]: the tables `make figures` prints
            beside the papers' numbers (`reproduce.tools.report`).
        printed: table suffixes printed at the end of a run.
        follow_up: `(sweep, runs, spec) -> {label: RunConfig}`, runs chosen
            from the results so far (the next rate past a grid's edge, the
            best cell of each row at more seeds), trained after them, round
            after round until none is new; the tables and plots see them all.
            A dry run does not know them and says so.
        callbacks, measure: for `Sweep`, as `(spec, results folder) -> ...`
            factories.
        options: `(parser) -> None`, extra command-line options.
        check: `(args) -> None`, validates them (raise `ConfigError`).
        stem: `(args) -> str`, the file stem (default: `name`).
        cheap_paper_dry_run: its paper preset's dry run trains in seconds on
            a CPU (the tests run those dry runs; the others' plans only).
        claims: the paper's headline claims as `reproduce.claims.Claim`s over
            this figure's tables (`make check-claims`).
        networks: the preset's specs are {network name: spec}: `--network`
            ($NETWORK) trains one network's part of the preset, unchanged, and
            writes the same files with the network in their names.
    """

    name: str
    description: str
    presets: dict
    grid: object
    tables: object
    plots: object
    title: object
    describe: object = None
    report: tuple = ()
    printed: tuple = ("",)
    follow_up: object = None
    callbacks: object = None
    measure: object = None
    options: object = None
    check: object = None
    stem: object = None
    cheap_paper_dry_run: bool = False
    claims: tuple = ()
    networks: bool = False

    def __post_init__(self):
        # Each claim knows the figure whose CSVs it reads.
        object.__setattr__(self, "claims", tuple(
            dataclasses.replace(claim, figure=self.name) for claim in self.claims))

    def main(self, argv=None):
        """The module's command line: `main = FIGURE.main`."""
        return run_figure(self, argv)

    def file_name(self, stem, preset, suffix, extension):
        return file_name(stem, preset, suffix, extension)


def file_name(stem, preset, suffix, extension):
    """small_batch, smoke, summary, csv -> small_batch_smoke_summary.csv; the
    quick preset (the default) has no preset part."""
    parts = [stem] + ([] if preset == "quick" else [preset]) + ([suffix] if suffix else [])
    return "_".join(parts) + "." + extension


def parse_overrides(items):
    """["seed=3", "lr_milestones=(2, 4)"] -> {"seed": 3, "lr_milestones": (2, 4)}."""
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    changes = {}
    for item in items or ():
        name, equals, text = item.partition("=")
        name = name.strip()
        if not equals or not name:
            raise ConfigError(f"--set {item!r}: expected field=value, e.g. --set seed=1.")
        if name not in fields:
            raise ConfigError(f"--set {name}: not a RunConfig field; expected one of "
                              f"{', '.join(sorted(fields))}.")
        try:
            changes[name] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            changes[name] = text.strip()  # plain text, e.g. norm=ghost:16
    return changes


def override(spec, changes):
    """`spec` with every RunConfig in it (at any depth) given `changes`."""
    if not changes:
        return spec
    if isinstance(spec, RunConfig):
        try:
            return spec.replace(**changes)
        except TypeError as error:  # e.g. a comparison with a value of the wrong type
            raise ConfigError(f"--set {', '.join(f'{k}={v!r}' for k, v in changes.items())}: "
                              f"{error}") from None
    if isinstance(spec, dict):
        return {key: override(value, changes) for key, value in spec.items()}
    return spec


def parser(figure):
    p = cli.parser(figure.description)
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", default=[],
                   help="override a RunConfig field in every run of the preset (repeatable), "
                        "e.g. --set seed=1 --set epochs=20")
    p.add_argument("--ray", metavar="ADDRESS", default=settings.env_text("RAY_ADDRESS"),
                   help="train the runs as Ray tasks: 'local' (a Ray on this machine), 'auto' "
                        "(the cluster of `ray start`) or ray://host:10001; default $RAY_ADDRESS")
    p.add_argument("--jobs", type=int, metavar="N", default=int_from_env("JOBS", None, 1),
                   help="runs at once on this machine: 1 one by one, N; default $JOBS, else "
                        "side by side on a machine of several cores (reproduce.runs.sweep)")
    p.add_argument("--devices", type=int, metavar="N", default=int_from_env("DEVICES", 1, 1),
                   help="spread each run over N devices, data parallel (reproduce.runs.devices); "
                        "default $DEVICES or 1")
    p.add_argument("--dry-run", action="store_true", default=int_from_env("DRY_RUN", 0) > 0,
                   help="train each distinct kind of run for 2 updates on a slice, print the "
                        "sweep's size and estimated cost, write nothing")
    if figure.networks:
        p.add_argument("--network", default=settings.env_text("NETWORK"),
                       help="only this network's part of the preset, e.g. F1 (its name before "
                            "' / '); default $NETWORK, else every network")
    if figure.options:
        figure.options(p)
    return p


def network_short(name):
    """"F1 / MNIST" -> "f1", "ResNet-44 / CIFAR-10" -> "resnet44": the name in
    file names and on the command line (any case)."""
    return name.split(" / ")[0].lower().replace("-", "")


def only_network(spec, network):
    """`spec` ({network: spec}) with just `network`; a one-line error names the choices."""
    chosen = {name: part for name, part in spec.items()
              if network_short(name) == network.lower().replace("-", "")}
    if not chosen:
        raise ConfigError(f"--network {network}: expected one of "
                          f"{', '.join(name.split(' / ')[0] for name in spec)}")
    return chosen


def int_from_env(name, default, minimum=0):
    """An integer from the environment (`settings.env_number`); a bad value is
    a one-line error and exit status 2 (the command line's own errors)."""
    try:
        return settings.env_number(name, default, minimum=minimum)
    except cli.UserError as error:
        cli.fail(str(error))


def run_figure(figure, argv=None, log=None):
    """The whole figure target: parse `argv`, train what the store lacks, write
    the CSVs and PNGs, print the tables. Returns {suffix: DataFrame}."""
    args = parser(figure).parse_args(argv)
    log = log or sys.stdout
    with cli.one_line_errors():
        if figure.check:
            figure.check(args)
        if args.jobs is not None and args.jobs < 1:
            raise ConfigError(f"--jobs {args.jobs}: expected an integer >= 1 (1: one at a time)")
        int_from_env("THREADS", None, 1)  # a bad thread budget: one line, before anything trains
        changes = parse_overrides(args.set)
        if args.devices != 1:
            changes.setdefault("devices", args.devices)
        if args.preset not in figure.presets:
            raise ConfigError(f"--preset {args.preset}: {figure.name} has no {args.preset} "
                              f"preset; expected one of {', '.join(figure.presets)}")
        spec = override(figure.presets[args.preset], changes)
        if figure.networks and args.network:
            spec = only_network(spec, args.network)
        runs = figure.grid(spec, args)
        folder = args.results / figure.name
        use_cpu_devices(max(config.devices for config in runs.values()))
        backend, onednn = settings.in_force()
        print(f"{figure.name} --preset {args.preset}: {len(runs)} runs; backend {backend}"
              + (f", oneDNN {'on' if onednn else 'off'}" if backend == "tensorflow" else ""),
              file=log, flush=True)

        def hooks(folder):
            return (figure.callbacks(spec, folder) if figure.callbacks else None,
                    figure.measure(spec, folder) if figure.measure else None)

        if args.dry_run:
            plan.dry_run(runs, hooks, log=log, estimate_here=args.preset != "paper"
                         or figure.name in registry.CPU_PAPER)
            if figure.follow_up:
                print("plus the follow-up runs the sweep's results will choose (not in this "
                      "plan; see the figure's docstring)", file=log)
            return {}
        callbacks, measure = hooks(folder)
        sweep = Sweep(folder, verbose=int(args.verbose), engine=args.engine, log=log,
                      describe=figure.describe, callbacks=callbacks, measure=measure,
                      ray=args.ray, jobs=args.jobs)
        with sweep.kept_open():  # one local Ray for all the rounds
            planned, runs, failures = train_sweep(figure, sweep, spec, runs, log)
        if not runs:
            cli.fail(f"no run of {figure.name} finished ({len(failures)} failed, listed "
                     "above); nothing to draw")
        tables = write_figure(figure, sweep, spec, runs, args, log)
        if failures:
            print(f"the figure is drawn from {len(runs)} of {planned} runs: {len(failures)} "
                  "failed (listed above; rerun the same command to train them again)",
                  file=log, flush=True)
            raise SystemExit(1)
    return tables


def train_sweep(figure, sweep, spec, runs, log):
    """Trains the grid, then the follow-ups it chooses, round after round
    until a round chooses nothing new (a best rate on the grid's edge asks for
    the next rate, then its best for more seeds). Returns (runs planned,
    {label: config} of the stored runs, the failures)."""
    sweep.run(list(runs.values()))
    failures = list(sweep.failures)
    while figure.follow_up:
        # A label chosen before is not chosen again, even if its run failed.
        more = {label: config for label, config in
                figure.follow_up(sweep, stored(sweep, runs), spec).items() if label not in runs}
        if not more:
            break
        print(f"follow-up: {len(more)} runs chosen from the results", file=log)
        sweep.run(list(more.values()))
        failures += sweep.failures
        runs = {**runs, **more}
    return len(runs), stored(sweep, runs), failures


def write_figure(figure, sweep, spec, runs, args, log):
    """The tables (CSVs) and plots (PNGs) of the stored runs, written
    atomically under `args.out` with the preset in their names; prints the
    `printed` tables. Returns the tables."""
    tables = figure.tables(sweep, runs, spec)
    stem = figure.stem(args) if figure.stem else figure.name
    if figure.networks and args.network:
        stem += "_" + network_short(next(iter(spec)))
    written = [cli.save_csv(frame, args.out / file_name(stem, args.preset, suffix, "csv"))
               for suffix, frame in tables.items()]
    plots = figure.plots(tables, runs, spec, figure.title(runs, spec))
    written += [cli.save_figure(plot, args.out / file_name(stem, args.preset, suffix, "png"))
                for suffix, plot in plots.items()]
    for suffix in figure.printed:
        print(tables[suffix].to_string(index=False), file=log)
    print(f"wrote {len(written)} files to {args.out}/{stem}"
          f"{'' if args.preset == 'quick' else '_' + args.preset}*; "
          f"{training_minutes(sweep, runs):.1f} min of training in the store", file=log)
    return tables


def stored(sweep, runs):
    """The runs of {label: config} that are in the sweep's store (the figure
    is drawn from these when some failed)."""
    return {label: config for label, config in runs.items() if sweep.load(config) is not None}


def training_minutes(sweep, runs):
    """Minutes of training the store records for `runs` ({label: config}),
    each distinct run once: a run that serves two cells trained once."""
    distinct = {config.key: config for config in runs.values()}.values()
    return sum(r.wall_time for r in map(sweep.load, distinct) if r) / 60


# A best value on the edge of its grid is not a best: the sweeps that tune a
# rate extend the grid outward, at most this many grid steps past each edge
# (a preset may set `max_extensions`; the smoke presets use 1).
MAX_EXTENSIONS = 3


def max_extensions(spec):
    """Grid steps past each edge that `spec`'s follow-ups may add."""
    return int(spec.get("max_extensions", MAX_EXTENSIONS))


DIVERGED = "diverged"  # a diverged seed in a `<metric>_by_seed` column


def by_seed_text(values, seeds, diverged=None, digits=None):
    """The `<metric>_by_seed` column: "seed:value" per seed, "seed:diverged"
    for a diverged one (`reproduce.claims` pairs arms by it)."""
    diverged = [False] * len(values) if diverged is None else list(diverged)
    items = []
    for value, seed, lost in zip(values, seeds, diverged):
        if lost or value is None or not np.isfinite(value):
            items.append(f"{int(seed)}:{DIVERGED}")
        else:
            items.append(f"{int(seed)}:{round(float(value), digits) if digits else float(value)}")
    return " ".join(items)


def seed_summary(values, digits=None, seeds=None, diverged=None, diverged_value=None, scale=1):
    """Values of one cell over its seeds (test accuracies) -> {mean, std,
    seeds, diverged, by_seed}: the mean and sample standard deviation (std
    None for fewer than two), how many seeds they are over, how many
    diverged, and with `seeds` (each value's seed) the `<metric>_by_seed`
    text a paired comparison reads (`reproduce.claims`); in units of `scale`
    (100: percent), rounded to `digits` where given.

    A diverged seed (`diverged` true, or a value that is not finite) counts
    against its cell: at `diverged_value` (an accuracy: `claims.CHANCE`) in
    the mean and spread where given, else left out of them but counted."""
    values = [None if v is None else float(v) * scale for v in values]
    diverged_value = None if diverged_value is None else diverged_value * scale
    lost = [bool(d) for d in diverged] if diverged is not None else [False] * len(values)
    lost = [d or v is None or not np.isfinite(v) for v, d in zip(values, lost)]
    kept = [diverged_value if d else v for v, d in zip(values, lost)
            if not d or diverged_value is not None]
    mean = float(np.mean(kept)) if kept else None
    std = float(np.std(kept, ddof=1)) if len(kept) > 1 else None
    if digits is not None:
        mean, std = (None if v is None else round(v, digits) for v in (mean, std))
    by_seed = by_seed_text(values, seeds, lost, digits) if seeds is not None else None
    return dict(mean=mean, std=std, seeds=len(kept), diverged=sum(lost), by_seed=by_seed)


def paired_test_variance(sweep, a, b):
    """The test set's sampling variance of the difference of two cells' test
    accuracies, each a mean over its seeds (`a`, `b`: lists of configs), when
    both were scored on the same examples (paired, as McNemar's test pairs
    them). None where a run lacks its per-example results (stored before they
    were kept) or the test sets differ. See `test_set_variance`."""
    correct = []
    for configs in (a, b):
        records = [sweep.load(config) for config in configs]
        if not records or any(r is None or not r.test_correct for r in records):
            return None
        correct.append({config.seed: r.correct.astype(float)
                        for config, r in zip(configs, records)})
    if len({c.shape for side in correct for c in side.values()}) != 1:
        return None
    return test_set_variance(*correct)


def test_set_variance(a, b):
    """The test set's sampling variance of mean(a) - mean(b), from per-example
    correctness {seed: 0/1 vector} of two cells scored on the same examples.

    The variance over the examples of the difference in the seeds' mean
    correctness, over n, also holds the seeds' own noise on each example
    (a seed gets an example right by chance), which the seeds' term of the
    interval already counts: it is subtracted (its unbiased estimate, the
    per-example variance over the seeds over S), so the term is the test
    set's alone. With shared seeds the per-seed differences are what varies;
    otherwise each cell's seeds. Never below 0."""
    shared = sorted(set(a) & set(b))
    if len(shared) >= 2 and len(shared) == len(a) == len(b):
        per_seed = np.stack([a[s] - b[s] for s in shared])
        mean = per_seed.mean(0)
        within = per_seed.var(0, ddof=1).mean() / len(shared)
    else:
        sides = [np.stack(list(side.values())) for side in (a, b)]
        mean = sides[0].mean(0) - sides[1].mean(0)
        within = sum(side.var(0, ddof=1).mean() / len(side) for side in sides if len(side) > 1)
    n = mean.shape[0]
    return float(max(np.var(mean, ddof=1) - within, 0.0) / n)


# -- plots: what every figure's drawing shares ------------------------------------
def evaluation_note(config):
    """The caption's words on how batch norm was evaluated ("" without it)."""
    if not config.batch_statistics:
        return ""
    return ("; BN evaluated with recomputed statistics" if config.eval_statistics == "recomputed"
            else "; BN evaluated with moving averages (momentum 0.99)")



def subplots(rows=1, cols=1, width=5.5, height=4.0, **options):
    """A matplotlib figure of rows x cols panels, `width` x `height` inches
    each, on the Agg backend (no display needed); axes always 2-D."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False,
                        **options)


def panel(ax, legend=True, legend_size=8, legend_title=None, minor_grid=False, **properties):
    """Sets an axis's labels, scales and title (`ax.set(**properties)`), a light
    grid (at the minor ticks too, for log-log plots), and a legend where
    something is labelled."""
    ax.set(**properties)
    ax.grid(alpha=0.3, which="both" if minor_grid else "major")
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=legend_size, title=legend_title)
    return ax


def shared_legend(ax, other, **options):
    """One legend below `ax` for the lines of `ax` and its twin axis `other`."""
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = other.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, ncol=2, loc="upper center",
              bbox_to_anchor=(0.5, -0.15), **options)


def finish(fig, title=None):
    """The figure's common title, and a tight layout."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_over_seeds(ax, run, x, y, style, label, color=None):
    """One run's `y` against `x` (columns of its per-epoch rows, every seed):
    the mean over the seeds, their range shaded. Returns the line."""
    per_x = run.groupby(x)[y]
    mean = per_x.mean()
    seeds = run.seed.nunique()
    (line,) = ax.plot(mean.index, mean.values, style, ms=3, color=color,
                      label=label + (f" ({seeds} seeds)" if seeds > 1 else ""))
    if seeds > 1:
        ax.fill_between(mean.index, per_x.min().values, per_x.max().values,
                        color=line.get_color(), alpha=0.2, lw=0)
    return line


def figure_files(figure, out, preset="quick"):
    """The report's tables of `figure` that exist under `out`: [(heading, Path)]."""
    return [(heading, Path(out) / figure.file_name(figure.name, preset, suffix, "csv"))
            for heading, suffix in figure.report]
