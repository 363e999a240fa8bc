"""Each paper's headline claims, checked over the figures' CSVs: HOLDS, FAILS
or INCONCLUSIVE, with the interval, the margin and its source.

    python -m reproduce.tools.check_claims [--out figures] [--preset quick]   # make check-claims

The claims live beside their figures (`Figure(claims=...)`), their statistics
in `reproduce.claims`; this module reads the CSVs, prints a verdict per claim
and preset, and exits 1 if a claim expected to hold FAILS.
"""

import sys
from pathlib import Path

import pandas as pd

from reproduce import registry
from reproduce.runs import cli
from reproduce.claims import FAILS, FULL_TEST_SET, HOLDS, INCONCLUSIVE, inconclusive
from reproduce.figure import file_name, network_short


def claims_of(figures=None):
    """Every figure's claims, in the registry's order."""
    return [claim for figure in (figures or registry.figures()) for claim in figure.claims]


def test_sizes(figure, preset):
    """`network -> n_test` for `figure`'s `preset`: the test examples behind its
    accuracies (a network name for figures with several, else None)."""
    declared = registry.figure(figure)
    configs = declared.grid(declared.presets[preset])
    sizes = {}
    for label, config in configs.items():
        network = label[0] if isinstance(label, tuple) and isinstance(label[0], str) else None
        sizes[network] = config.test_size or FULL_TEST_SET
    return lambda network=None: sizes.get(network, max(sizes.values()))


def csv_paths(out, claim, preset):
    """{suffix: [paths]}: the figure's CSV, or where it was trained one network
    at a time (`--network`), each network's."""
    declared = registry.figure(claim.figure)
    paths = {}
    for suffix in claim.reads:
        whole = Path(out) / file_name(claim.figure, preset, suffix, "csv")
        parts = [Path(out) / file_name(f"{claim.figure}_{network_short(name)}", preset, suffix,
                                       "csv") for name in declared.presets.get(preset, {})
                 ] if declared.networks and not whole.exists() else []
        paths[suffix] = [p for p in parts if p.exists()] or [whole]
    return paths


def read_tables(paths):
    """{suffix: DataFrame}, the per-network parts of a table concatenated."""
    return {suffix: pd.concat([pd.read_csv(p) for p in group], ignore_index=True)
            for suffix, group in paths.items()}


MARKS = {HOLDS: "HOLDS", FAILS: "FAILS", INCONCLUSIVE: "INCONCLUSIVE"}


def check(claims, out, presets, test_size=test_sizes, log=None):
    """Checks every claim against the CSVs under `out` for each of `presets`,
    printing a line per claim. Returns [(claim, preset, verdict or None,
    expectation)] (None: a CSV it reads is missing: not run)."""
    log = log or sys.stdout
    outcomes = []
    for preset in presets:
        # A figure without this preset has nothing to check at it.
        claims_here = [c for c in claims if preset in registry.figure(c.figure).presets]
        paths = [csv_paths(out, claim, preset) for claim in claims_here]
        if not any(p.exists() for group in paths for files in group.values() for p in files):
            continue
        print(f"\n== preset {preset} ({out})", file=log)
        for claim, group in zip(claims_here, paths):
            expectation = claim.expectation(preset)
            missing = [p.name for files in group.values() for p in files if not p.exists()]
            print(f"  {claim.paper}: {claim.text}", file=log)
            if missing:
                target = registry.target(claim.figure)
                print(f"    not run: no {', '.join(missing)} (make {target} PRESET={preset})",
                      file=log)
                outcomes.append((claim, preset, None, expectation))
                continue
            try:
                verdict = claim.check(read_tables(group), test_size(claim.figure, preset))
            except (KeyError, IndexError, ValueError, AttributeError, TypeError) as error:
                verdict = inconclusive(f"{', '.join(p.name for f in group.values() for p in f)} lack "
                                       f"what the check needs: {error}",
                                       "regenerate the figure")
            mark = verdict.outcome
            if expectation is not True and verdict.outcome == HOLDS:
                mark = "unexpected HOLD"
            if claim.by_construction:
                mark += " (by construction, not evidence)"
            print(f"    {mark}: {verdict.numbers}", file=log)
            if claim.margin:
                print(f"      margin: {claim.margin}", file=log)
            if verdict.power:
                print(f"      to decide it: {verdict.power}", file=log)
            if expectation is not True:
                print(f"      not expected to hold {expectation}", file=log)
            outcomes.append((claim, preset, verdict, expectation))
        print(f"  {tally([o for o in outcomes if o[1] == preset])}", file=log)
    return outcomes


def tally(outcomes):
    """The verdicts counted; a claim that holds by construction is not evidence."""
    evidence = [o for o in outcomes if not o[0].by_construction]
    counts = {outcome: sum(v is not None and v.outcome == outcome for _, _, v, _ in evidence)
              for outcome in (HOLDS, FAILS, INCONCLUSIVE)}
    not_run = sum(v is None for _, _, v, _ in evidence)
    built = len(outcomes) - len(evidence)
    return (f"{len(evidence)} claims: {counts[HOLDS]} hold, {counts[FAILS]} fail, "
            f"{counts[INCONCLUSIVE]} inconclusive, {not_run} not run"
            + (f" (and {built} by construction, not counted)" if built else ""))


def unexpected_failures(outcomes):
    return [(claim, preset) for claim, preset, verdict, expectation in outcomes
            if verdict is not None and verdict.outcome == FAILS and expectation is True]


def markdown(outcomes):
    """The verdicts as a Markdown table (figures/README.md's "Claims, checked")."""
    def cell(text):
        return str(text).replace("|", "/").replace("\n", " ")

    lines = ["| paper | claim | preset | verdict | numbers compared | margin | to decide it |",
             "|---|---|---|---|---|---|---|"]
    for claim, preset, verdict, expectation in outcomes:
        if verdict is None:
            mark, numbers, power = "not run", "", f"make {registry.target(claim.figure)} " \
                                                  f"PRESET={preset}"
        else:
            mark = verdict.outcome + ("" if expectation is True else
                                      f" (not expected {expectation})") + (
                " (by construction, not evidence)" if claim.by_construction else "")
            numbers, power = verdict.numbers, verdict.power
        lines.append("| " + " | ".join(cell(x) for x in (
            claim.paper, claim.text, preset, f"**{mark}**", numbers, claim.margin, power)) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = cli.OneLineParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=cli.FIGURES, help="folder of the figures' CSVs")
    p.add_argument("--preset", choices=cli.PRESETS, default=None,
                   help="only this preset's CSVs (default: every preset whose CSVs exist)")
    p.add_argument("--markdown", type=Path, default=None,
                   help="also write the verdicts as a Markdown table to this file")
    args = p.parse_args(argv)
    outcomes = check(claims_of(), args.out, [args.preset] if args.preset else cli.PRESETS)
    if args.markdown:
        text = markdown(outcomes) + "\n"
        cli.save_atomic(args.markdown, lambda tmp: Path(tmp).write_text(text))
    if not any(verdict for _, _, verdict, _ in outcomes):
        which = f"{args.preset} " if args.preset else ""
        cli.fail(f"no {which}figure CSVs in {args.out}; run a figure target first, e.g. "
                 f"make fig-small-batch{' PRESET=' + args.preset if args.preset else ''}")
    failed = unexpected_failures(outcomes)
    print(f"\n{len(failed)} claims expected to hold failed" + (
        ": " + "; ".join(f"{c.paper} ({preset}): {c.text}" for c, preset in failed)
        if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
