"""Kaggle Digit Recognizer: a submission from the seed article's CNN trained
with gradient accumulation (batch 128 x 8 accumulation steps = 1024).

Method (the seed article; figures/README.md): the Digit Recognizer CNN, Adam 1e-3,
an 80/20 split of the 42,000 training images, 20 epochs (`--preset paper`); the
accumulation wrapper makes each update one of batch 128 x 8. Batch norm still
sees 128 examples per micro-batch (`--norm group` avoids that).

Data, in this order:
1. $DATA_DIR/digit-recognizer/{train,test}.csv, the competition's files;
2. downloaded there by the `kaggle` command-line client, if it is installed
   and has credentials;
3. the MNIST stand-in built by `make kaggle-data-from-mnist` in
   $DATA_DIR/digit-recognizer-mnist-standin/ (same format; its test labels
   are kept aside in test_labels.csv, so the submission can be scored).

    python -m reproduce.tools.kaggle data-from-mnist
    python -m reproduce.tools.kaggle submit [--preset smoke|quick|paper] [--batch 128 --accumulation-steps 8]
                                      [--norm group] [--set seed=1]

The submission goes to results/<data folder name>/submission.csv (atomically).
"""

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from reproduce.runs import cli, settings

COMPETITION = "digit-recognizer"
STANDIN = "digit-recognizer-mnist-standin"
PIXELS = [f"pixel{i}" for i in range(784)]
TRAIN_HEADER = ["label", *PIXELS]
TEST_HEADER = PIXELS
SUBMISSION_HEADER = ["ImageId", "Label"]


class InputError(cli.UserError, ValueError):
    """A malformed competition file; the message names the file and line."""


# -- reading and writing the competition's CSV format ----------------------
def read_digits(path, labelled):
    """Reads train.csv (labelled) or test.csv; returns (images uint8 (N, 28, 28, 1),
    labels int32 (N,) or None). Every line is checked: the header, the number of
    columns, numbers, pixels in 0..255, labels in 0..9."""
    path = Path(path)
    header = TRAIN_HEADER if labelled else TEST_HEADER
    with open(path) as f:
        lines = f.read().split("\n")
    while lines and not lines[-1].strip():
        lines.pop()  # trailing newlines are fine
    if not lines:
        raise InputError(f"{path}: empty file; expected a header line and data rows.")
    if lines[0].strip().split(",") != header:
        raise InputError(f"{path}, line 1: header is {_short(lines[0])}; expected "
                         f"{','.join(header[:3])},...,{header[-1]} ({len(header)} columns).")
    if len(lines) == 1:
        raise InputError(f"{path}: no data rows after the header.")
    values = np.empty((len(lines) - 1, len(header)), np.float64)
    for i, line in enumerate(lines[1:]):
        fields = line.strip().split(",")
        if len(fields) != len(header):
            raise InputError(f"{path}, line {i + 2}: {len(fields)} columns; expected {len(header)}.")
        try:
            values[i] = np.asarray(fields, dtype=np.float64)
        except ValueError:
            bad = next(j for j, v in enumerate(fields) if not _is_number(v))
            raise InputError(f"{path}, line {i + 2}: {header[bad]} is {_short(fields[bad])}; "
                             "expected a number.") from None
    pixels = values[:, 1:] if labelled else values
    bad = ~((pixels >= 0) & (pixels <= 255))  # also catches nan
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise InputError(f"{path}, line {row + 2}: {PIXELS[col]} is {pixels[row, col]:g}; "
                         "expected a pixel value in 0..255.")
    labels = None
    if labelled:
        labels = values[:, 0]
        bad = ~np.isin(labels, np.arange(10))
        if bad.any():
            row = int(np.argmax(bad))
            raise InputError(f"{path}, line {row + 2}: label is {labels[row]:g}; "
                             "expected an integer in 0..9.")
        labels = labels.astype(np.int32)
    return np.rint(pixels).astype(np.uint8).reshape(-1, 28, 28, 1), labels


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def _short(text, n=40):
    text = text.strip()
    return repr(text if len(text) <= n else text[:n] + "...")


def write_digits(path, images, labels=None):
    """Writes images (and labels) in the competition's format, atomically."""
    as_text = np.array([str(i) for i in range(256)])  # fast integer formatting
    flat = images.reshape(len(images), -1)
    header = TRAIN_HEADER if labels is not None else TEST_HEADER

    def write(tmp):
        with open(tmp, "w") as f:
            f.write(",".join(header) + "\n")
            for i, row in enumerate(flat):
                prefix = f"{labels[i]}," if labels is not None else ""
                f.write(prefix + ",".join(as_text[row]) + "\n")

    return cli.save_atomic(path, write)


def write_submission(path, labels):
    """submission.csv: ImageId 1..N in test order, Label 0-9; atomically."""
    frame = pd.DataFrame({"ImageId": np.arange(1, len(labels) + 1),
                          "Label": np.asarray(labels, dtype=int)})
    return cli.save_csv(frame, path)


def score(submission_path, labels_path):
    """Accuracy of a submission against an ImageId,Label file."""
    submitted = pd.read_csv(submission_path)
    truth = pd.read_csv(labels_path)
    merged = truth.merge(submitted, on="ImageId", suffixes=("_true", ""))
    if len(merged) != len(truth):
        raise InputError(f"{submission_path}: {len(merged)} of {len(truth)} ImageIds match.")
    return float((merged["Label"] == merged["Label_true"]).mean())


# -- finding the data --------------------------------------------------------
def make_standin(data_dir, train_rows=42000, test_rows=28000, seed=0):
    """Builds the MNIST stand-in: train.csv from MNIST's train split, test.csv
    from the rest of it and MNIST's test split (no image in both), and
    test_labels.csv (ImageId,Label) kept aside for scoring."""
    from reproduce.runs import datasets

    (x, y), (x_test, y_test) = datasets.load("mnist")
    order = np.random.default_rng(seed).permutation(len(x))
    train, rest = order[:train_rows], order[train_rows:]
    pool_x = np.concatenate([x[rest], x_test])
    pool_y = np.concatenate([y[rest], y_test])
    if train_rows > len(x) or test_rows > len(pool_x):
        raise ValueError(f"train_rows={train_rows}, test_rows={test_rows}: MNIST has "
                         f"{len(x)} training and {len(x_test)} test images.")
    pool = np.random.default_rng(seed + 1).permutation(len(pool_x))[:test_rows]
    folder = Path(data_dir) / STANDIN
    write_digits(folder / "train.csv", x[train], y[train].astype(int))
    write_digits(folder / "test.csv", pool_x[pool])
    write_submission(folder / "test_labels.csv", pool_y[pool])
    (folder / "README.txt").write_text(
        "A STAND-IN for the Kaggle Digit Recognizer files, built from MNIST by\n"
        "`make kaggle-data-from-mnist` (reproduce/tools/kaggle.py). Not the competition data.\n"
        f"train.csv: {train_rows} rows of MNIST's train split. test.csv: {test_rows} other\n"
        "MNIST images. test_labels.csv: their labels, for scoring a submission.\n")
    return folder


def find_data(data_dir):
    """(folder, is_standin): the real files, else a Kaggle download, else the
    stand-in; otherwise an error saying what to do."""
    real = Path(data_dir) / COMPETITION
    if all((real / f).exists() for f in ("train.csv", "test.csv")):
        return real, False
    if shutil.which("kaggle") and _kaggle_credentials():
        print(f"downloading the {COMPETITION} files into {real} with the kaggle client")
        real.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["kaggle", "competitions", "download", "-c", COMPETITION,
                               "-p", str(real)], capture_output=True, text=True)
        if done.returncode == 0:
            for archive in real.glob("*.zip"):
                shutil.unpack_archive(archive, real)
                archive.unlink()
            if all((real / f).exists() for f in ("train.csv", "test.csv")):
                return real, False
        print(f"kaggle download failed: {(done.stderr or done.stdout).strip()[-300:]}",
              file=sys.stderr)
    standin = Path(data_dir) / STANDIN
    if all((standin / f).exists() for f in ("train.csv", "test.csv", "test_labels.csv")):
        print(f"NOTE: no competition files in {real}; using the MNIST STAND-IN in {standin} "
              "(scores are on MNIST images, not Kaggle's leaderboard)")
        return standin, True
    cli.fail(f"no Digit Recognizer data: put train.csv and test.csv from "
             f"https://www.kaggle.com/competitions/{COMPETITION}/data into {real}/ "
             "(or install the `kaggle` client with credentials in ~/.kaggle/kaggle.json), "
             "or run `make kaggle-data-from-mnist` for an MNIST stand-in.")


def _kaggle_credentials():
    return bool(os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY")) or \
        (Path.home() / ".kaggle" / "kaggle.json").exists() or \
        bool(os.environ.get("KAGGLE_CONFIG_DIR"))


# -- training ------------------------------------------------------------------
# One declarative config per preset: the article's model and optimizer, with
# the effective batch written as micro-batch x accumulation steps.
PRESETS = {
    "smoke": dict(epochs=1, train_rows=512),  # CI: checks the machinery only
    "quick": dict(epochs=5, train_rows=None),  # the default: ~6 minutes on a 2-core CPU
    "paper": dict(epochs=20, train_rows=None),  # the article's 20 epochs
}


def run_config(batch, accumulation_steps, epochs, norm, augment, seed):
    from reproduce.runs.config import RunConfig

    return RunConfig(dataset=COMPETITION, model="digit_cnn", norm=norm, optimizer="adam",
                     lr=1e-3, batch_size=batch * accumulation_steps,
                     accumulation=accumulation_steps, epochs=epochs,
                     augment=augment, he_init=False, seed=seed)


def split_and_standardize(x, y, x_test, val_fraction, seed):
    """80/20 split (shuffled with `seed`), standardized with the training part's
    statistics."""
    from reproduce.runs.pipeline import channel_stats, standardize

    order = np.random.default_rng(seed).permutation(len(x))
    n_val = int(round(val_fraction * len(x)))
    val, tr = order[:n_val], order[n_val:]
    mean, std = channel_stats(x[tr])
    s = lambda a: standardize(a, mean, std)  # noqa: E731
    return s(x[tr]), y[tr], s(x[val]), y[val], s(x_test)


def submit(args):
    import keras

    from reproduce.runs.train import train

    folder, is_standin = find_data(args.data_dir)
    started = time.perf_counter()
    try:
        x, y = read_digits(folder / "train.csv", labelled=True)
        x_test, _ = read_digits(folder / "test.csv", labelled=False)
    except (InputError, OSError) as error:
        cli.fail(str(error))
    preset = PRESETS["paper" if args.full else args.preset]
    if preset["train_rows"]:
        x, y = x[:preset["train_rows"]], y[:preset["train_rows"]]
    epochs = args.epochs or preset["epochs"]
    from reproduce.figure import override, parse_overrides

    config = run_config(args.batch, args.accumulation_steps, epochs, args.norm, args.augment,
                        args.seed).replace(engine=args.engine)
    config = override(config, parse_overrides(args.set))
    x_tr, y_tr, x_val, y_val, x_test = split_and_standardize(x, y, x_test, 0.2, config.seed)
    print(f"read {len(x)} training and {len(x_test)} test images from {folder} "
          f"({time.perf_counter() - started:.0f}s); training on {len(x_tr)}, validating on "
          f"{len(x_val)}: digit_cnn ({args.norm}), Adam 1e-3, batch {args.batch} x "
          f"{args.accumulation_steps} accumulation steps = {config.batch_size}, {epochs} epochs")
    progress = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: print(
        f"epoch {epoch + 1}/{epochs}: loss {logs['loss']:.4f}, validation accuracy "
        f"{logs['val_accuracy']:.4f} ({time.perf_counter() - started:.0f}s)", flush=True))
    result, model = train(config, verbose=int(args.verbose), return_model=True,
                          data=(x_tr, y_tr, x_val, y_val), callbacks=[progress])
    if result["status"] != "finished":
        cli.fail(f"training {result['status']} (loss not finite); no submission written")
    logits = model.predict(x_test, batch_size=1000, verbose=0)
    out = args.out or cli.RESULTS / folder.name / "submission.csv"
    write_submission(out, keras.ops.convert_to_numpy(logits).argmax(axis=1))
    val = result["rows"][-1]["test_accuracy"]
    print(f"wrote {out} ({len(x_test)} rows); validation accuracy {val:.4f}; "
          f"{result['wall_time'] / 60:.1f} min of training")
    if is_standin:
        print(f"stand-in test accuracy (MNIST labels kept aside): "
              f"{score(out, folder / 'test_labels.csv'):.4f}")


def parser():
    """The command line: `data-from-mnist` and `submit`."""
    p = cli.OneLineParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=settings.data_dir(),
                   help="folder holding digit-recognizer/ (default $DATA_DIR or data/ in the "
                        "checkout)")
    commands = p.add_subparsers(dest="command", required=True, parser_class=cli.OneLineParser)
    commands.add_parser("data-from-mnist", help="build the MNIST stand-in files")
    s = commands.add_parser("submit", help="train and write submission.csv")
    s.add_argument("--preset", choices=tuple(PRESETS), default="quick",
                   help="smoke: seconds (CI); quick: the default, 5 epochs, ~6 minutes on a "
                        "2-core CPU; paper: the article's 20 epochs")
    s.add_argument("--full", action="store_true", help="the same as --preset paper")
    s.add_argument("--epochs", type=_positive, help="override the preset's epochs")
    s.add_argument("--batch", type=_positive, default=128, help="micro-batch size (128)")
    s.add_argument("--accumulation-steps", "--steps", type=_positive, default=8,
                   dest="accumulation_steps",
                   help="micro-batches per update, k (8); --steps is the old name")
    s.add_argument("--norm", default="batch", help="batch | group | ghost:<g> | none")
    s.add_argument("--augment", action="store_const", const="shift", default=False,
                   help="random shifts by up to 2 pixels")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--set", action="append", metavar="FIELD=VALUE", default=[],
                   help="override a RunConfig field, e.g. --set lr=0.002 (repeatable)")
    s.add_argument("--out", type=Path, help="submission path (default results/<data>/submission.csv)")
    s.add_argument("--verbose", action="store_true", help="Keras progress bars")
    s.add_argument("--engine", choices=("fast", "fit"), default="fast",
                   help="fast: data on the device (reproduce.runs.engine); fit: model.fit")
    return p


def main(argv=None):
    p = parser()
    args = p.parse_args(argv)
    with cli.one_line_errors():
        if args.command == "data-from-mnist":
            folder = make_standin(args.data_dir)
            print(f"wrote the MNIST stand-in (not the competition data) to {folder}")
            return
        try:
            from batchsize import models
            models.parse_norm(args.norm)
        except ValueError as error:
            p.error(f"argument --norm: {error}")
        submit(args)


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected an integer >= 1")
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {value}: expected an integer >= 1")
    return value


if __name__ == "__main__":
    main()
