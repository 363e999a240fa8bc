"""Prints every figure's results table beside the papers' numbers (the last
step of `make figures`), and writes figures/README.md's numbers from the CSVs.

    python -m reproduce.tools.report [--preset quick]
    python -m reproduce.tools.report --readme figures/README.md    # make readme-tables

In the README, a block

    <!-- table: small_batch_summary.csv m best_test_accuracy seeds -->
    ...
    <!-- end table -->

is replaced by that CSV's named columns (all of them if none are named) as a
Markdown table, and `<!-- claims -->` ... `<!-- end claims -->` by the
verdicts of `make check-claims` over the CSVs beside the README: no number in
those blocks is copied by hand, so none goes stale.
"""

import io
import re
import sys
from pathlib import Path

import pandas as pd

from reproduce import registry
from reproduce.runs import cli
from reproduce.figure import figure_files

TABLE = re.compile(r"(<!-- table: (\S+)((?: \S+)*) -->\n)(.*?)(<!-- end table -->)", re.S)
CLAIMS = re.compile(r"(<!-- claims -->\n)(.*?)(<!-- end claims -->)", re.S)


def markdown_table(frame, digits=4):
    """A DataFrame as a Markdown table, numbers to `digits` significant figures."""
    def cell(value):
        if isinstance(value, float):
            return "" if pd.isna(value) else f"{value:.{digits}g}"
        return str(value).replace("|", "/")

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |",
             "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def fill_readme(text, folder, outcomes=None):
    """`text` with every table block filled from the CSVs in `folder` and the
    claims block from `outcomes` (`reproduce.claims.check`'s). A CSV or a
    column that is missing is a one-line error naming it."""
    def table(match):
        path = Path(folder) / match.group(2)
        if not path.exists():
            raise cli.UserError(f"{match.group(0).splitlines()[0]}: no {path}; run its figure "
                                "target first")
        frame = pd.read_csv(path)
        columns = match.group(3).split() or list(frame.columns)
        unknown = [c for c in columns if c not in frame]
        if unknown:
            raise cli.UserError(f"{path.name} has no column {', '.join(unknown)}; expected "
                                f"some of {', '.join(frame.columns)}")
        return match.group(1) + markdown_table(frame[columns]) + match.group(5)

    text = TABLE.sub(table, text)
    if outcomes is not None:
        from reproduce.tools.check_claims import markdown, tally

        presets = dict.fromkeys(preset for _, preset, _, _ in outcomes)
        summary = "\n".join(f"- {preset}: {tally([o for o in outcomes if o[1] == preset])}"
                            for preset in presets)
        text = CLAIMS.sub(lambda m: m.group(1) + markdown(outcomes) + "\n\n" + summary + "\n"
                          + m.group(3), text)
    return text


def main(argv=None):
    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("--readme", type=Path, default=None,
                   help="fill this README's table and claims blocks from the CSVs beside it")
    args = p.parse_args(argv)
    if args.readme:
        from reproduce.tools.check_claims import check, claims_of

        with cli.one_line_errors():
            if not args.readme.exists():
                raise cli.UserError(f"--readme {args.readme}: no such file")
            text = args.readme.read_text()
            outcomes = check(claims_of(), args.readme.parent, cli.PRESETS,
                             log=io.StringIO()) if CLAIMS.search(text) else None
            filled = fill_readme(text, args.readme.parent, outcomes)
            cli.save_atomic(args.readme, lambda tmp: Path(tmp).write_text(filled))
        print(f"filled {len(TABLE.findall(text))} tables"
              f"{' and the claims' if outcomes is not None else ''} in {args.readme}")
        return 0
    missing = []
    for figure in registry.figures():
        for title, path in figure_files(figure, args.out, args.preset):
            if not path.exists():
                missing.append(path.name)
                continue
            print(f"\n== {title} ({path.name})")
            with pd.option_context("display.width", 200, "display.max_columns", 30):
                print(pd.read_csv(path).to_string(index=False))
    if missing:
        print(f"\nnot found (run their targets first): {', '.join(missing)}")
    print("\nThe written comparison with the papers: figures/README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
