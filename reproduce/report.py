"""Prints every figure's results table beside the papers' numbers (the last
step of `make figures`); the written report is figures/README.md.

    python -m reproduce.report [--preset quick]
"""

import pandas as pd

from reproduce import cli

# (title, table file stem): the tables that hold the paper's numbers beside ours.
TABLES = (
    ("Masters & Luschi: best accuracy and converging range per batch size", "small_batch_summary"),
    ("Smith et al.: updates and final test accuracy per schedule", "dont_decay_table"),
    ("Hoffer et al.: Table 1 columns", "generalization_gap_table"),
    ("Keskar et al.: Tables 2-4 (accuracy, sharpness)", "sharp_minima_table"),
    ("Seed article: validation accuracy per batch size", "mnist_batch_size_table"),
    ("Seed article: accumulation vs native batches", "mnist_batch_size_accumulation"),
    ("lr-scaling article: accuracy and measures per rule and batch size", "lr_scaling_measures"),
)


def main(argv=None):
    p = cli.parser(__doc__.splitlines()[0])
    args = p.parse_args(argv)
    suffix = "" if args.preset == "quick" else f"_{args.preset}"
    missing = []
    for title, stem in TABLES:
        path = args.out / _with_preset(stem, suffix)
        if not path.exists():
            missing.append(path.name)
            continue
        frame = pd.read_csv(path)
        print(f"\n== {title} ({path.name})")
        with pd.option_context("display.width", 200, "display.max_columns", 30):
            print(frame.to_string(index=False))
    if missing:
        print(f"\nnot found (run their targets first): {', '.join(missing)}")
    print("\nThe written comparison with the papers: figures/README.md")


def _with_preset(stem, suffix):
    """small_batch_summary + _smoke -> small_batch_smoke_summary.csv ('' -> as is)."""
    for figure in ("small_batch", "dont_decay", "generalization_gap", "sharp_minima",
                   "mnist_batch_size", "lr_scaling"):
        if stem.startswith(figure):
            return f"{figure}{suffix}{stem[len(figure):]}.csv"
    return f"{stem}{suffix}.csv"


if __name__ == "__main__":
    main()
