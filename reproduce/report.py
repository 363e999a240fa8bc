"""Prints every figure's results table beside the papers' numbers (the last
step of `make figures`); the written report is figures/README.md.

    python -m reproduce.report [--preset quick]
"""

import pandas as pd

from reproduce import cli, registry
from reproduce.figure import figure_files


def main(argv=None):
    p = cli.parser(__doc__.splitlines()[0])
    args = p.parse_args(argv)
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


if __name__ == "__main__":
    main()
