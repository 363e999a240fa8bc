"""The Kaggle Digit Recognizer target: input validation, the stand-in, the submission."""

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import needs_mnist

from reproduce.runs import datasets
from reproduce.tools import kaggle

ROOT = Path(__file__).resolve().parent.parent


def _rows(n, labelled=True, seed=0):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (n, 784))
    labels = rng.integers(0, 10, n)
    return [",".join(map(str, ([labels[i]] if labelled else []) + list(pixels[i])))
            for i in range(n)]


def _write(folder, train_lines=None, test_lines=None):
    folder = folder / kaggle.COMPETITION
    folder.mkdir(parents=True, exist_ok=True)
    train = train_lines if train_lines is not None else [",".join(kaggle.TRAIN_HEADER), *_rows(5)]
    test = test_lines if test_lines is not None else [",".join(kaggle.TEST_HEADER), *_rows(3, False)]
    (folder / "train.csv").write_text("\n".join(train) + ("\n" if train else ""))
    (folder / "test.csv").write_text("\n".join(test) + ("\n" if test else ""))
    return folder


def _set_field(line, index, value):
    fields = line.split(",")
    fields[index] = value
    return ",".join(fields)


HEADER = ",".join(kaggle.TRAIN_HEADER)
GOOD = _rows(5)
MALFORMED = {
    # case: (train.csv lines, expected fragment naming the line and the problem)
    "empty file": ([], "train.csv: empty file"),
    "header only": ([HEADER], "train.csv: no data rows"),
    "wrong header": ([HEADER.replace("label", "digit"), *GOOD], "train.csv, line 1: header is"),
    "missing column": ([HEADER, *GOOD[:2], GOOD[2].rsplit(",", 1)[0], *GOOD[3:]],
                       "train.csv, line 4: 784 columns; expected 785"),
    "extra column": ([HEADER, GOOD[0] + ",0", *GOOD[1:]],
                     "train.csv, line 2: 786 columns; expected 785"),
    "non-numeric pixel": ([HEADER, *GOOD[:3], _set_field(GOOD[3], 100, "abc"), GOOD[4]],
                          "train.csv, line 5: pixel99 is 'abc'; expected a number"),
    "pixel above 255": ([HEADER, _set_field(GOOD[0], 784, "256"), *GOOD[1:]],
                        "train.csv, line 2: pixel783 is 256; expected a pixel value in 0..255"),
    "negative pixel": ([HEADER, *GOOD[:1], _set_field(GOOD[1], 1, "-1"), *GOOD[2:]],
                       "train.csv, line 3: pixel0 is -1; expected a pixel value in 0..255"),
    "label 10": ([HEADER, *GOOD[:4], _set_field(GOOD[4], 0, "10")],
                 "train.csv, line 6: label is 10; expected an integer in 0..9"),
    "fractional label": ([HEADER, _set_field(GOOD[0], 0, "3.5"), *GOOD[1:]],
                         "train.csv, line 2: label is 3.5; expected an integer in 0..9"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_train_csv_is_a_one_line_error_and_no_submission_is_written(
        case, tmp_path, capsys):
    lines, expected = MALFORMED[case]
    _write(tmp_path, train_lines=lines)
    out = tmp_path / "submission.csv"
    out.write_text("ImageId,Label\n1,7\n")  # an earlier submission must survive
    with pytest.raises(SystemExit) as exit_info:
        kaggle.main(["--data-dir", str(tmp_path), "submit", "--preset", "smoke",
                     "--out", str(out)])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert expected in err, err
    assert out.read_text() == "ImageId,Label\n1,7\n"
    assert not list(tmp_path.glob("*.tmp*"))


def test_malformed_test_csv_is_reported_with_its_line(tmp_path, capsys):
    test = [",".join(kaggle.TEST_HEADER), *_rows(3, False)]
    test[2] = _set_field(test[2], 5, "300")
    _write(tmp_path, test_lines=test)
    with pytest.raises(SystemExit):
        kaggle.main(["--data-dir", str(tmp_path), "submit", "--preset", "smoke"])
    assert "test.csv, line 3: pixel5 is 300" in capsys.readouterr().err


def test_missing_data_says_what_to_do(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(kaggle.shutil, "which", lambda name: None)  # no kaggle client
    with pytest.raises(SystemExit) as exit_info:
        kaggle.main(["--data-dir", str(tmp_path), "submit", "--preset", "smoke"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert str(tmp_path / kaggle.COMPETITION) in err and "kaggle-data-from-mnist" in err


@pytest.mark.slow
def test_bad_arguments_exit_with_one_line():
    run = subprocess.run([sys.executable, "-m", "reproduce.tools.kaggle", "submit", "--batch", "0"],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "--batch" in run.stderr and "0" in run.stderr


def test_written_csv_reads_back_identically(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (7, 28, 28, 1)).astype(np.uint8)
    labels = rng.integers(0, 10, 7)
    kaggle.write_digits(tmp_path / "train.csv", images, labels)
    kaggle.write_digits(tmp_path / "test.csv", images)
    x, y = kaggle.read_digits(tmp_path / "train.csv", labelled=True)
    x_test, none = kaggle.read_digits(tmp_path / "test.csv", labelled=False)
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)
    np.testing.assert_array_equal(x_test, images)
    assert none is None


def _digests(images):
    return [hashlib.sha1(im.tobytes()).hexdigest() for im in images]


@needs_mnist
def test_standin_is_disjoint_and_its_kept_labels_are_mnists(tmp_path):
    folder = kaggle.make_standin(tmp_path, train_rows=300, test_rows=200)
    assert folder.name == kaggle.STANDIN and "STAND-IN" in (folder / "README.txt").read_text()
    x, y = kaggle.read_digits(folder / "train.csv", labelled=True)
    x_test, _ = kaggle.read_digits(folder / "test.csv", labelled=False)
    kept = pd.read_csv(folder / "test_labels.csv")
    assert (len(x), len(x_test)) == (300, 200)
    assert list(kept.columns) == ["ImageId", "Label"] and list(kept.ImageId) == list(range(1, 201))
    # Look every image up in the real MNIST: labels agree, no test image is a train image.
    (mx, my), (mxt, myt) = datasets.load("mnist")
    label_of = dict(zip(_digests(np.concatenate([mx, mxt])), np.concatenate([my, myt])))
    assert [label_of[d] for d in _digests(x)] == list(y)
    assert [label_of[d] for d in _digests(x_test)] == list(kept.Label)
    assert not set(_digests(x)) & set(_digests(x_test))


@pytest.mark.slow
@needs_mnist
def test_smoke_submission_has_the_competition_format_and_its_score_is_right(tmp_path, capsys):
    kaggle.make_standin(tmp_path, train_rows=600, test_rows=150)
    out = tmp_path / "submission.csv"
    kaggle.main(["--data-dir", str(tmp_path), "submit", "--preset", "smoke", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "STAND-IN" in printed and "batch 128 x 8 accumulation steps = 1024" in printed
    lines = out.read_text().splitlines()
    assert lines[0] == "ImageId,Label" and len(lines) == 151
    submission = pd.read_csv(out)
    assert list(submission.ImageId) == list(range(1, 151))
    assert submission.Label.dtype.kind == "i" and submission.Label.between(0, 9).all()
    truth = pd.read_csv(tmp_path / kaggle.STANDIN / "test_labels.csv")
    accuracy = float((truth.Label.values == submission.Label.values).mean())
    assert f"stand-in test accuracy (MNIST labels kept aside): {accuracy:.4f}" in printed
