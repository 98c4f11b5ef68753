"""A synthetic stream with a gradual distribution shift: `python -m bench stream OUT_DIR`.

Why: a drift alarm (`python -m bench monitor BASELINE_RUN BATCH_FOLDER`) can only be seen and
tested on data whose shift is known. This writes a reference table to train a baseline on and a
folder of batches that stay on the reference distribution for a while, then drift away from it
step by step, with no outside data:

    OUT_DIR/train.csv              the reference distribution, labelled (column `target`)
    OUT_DIR/batches/batch-000.csv  `start` batches from the reference distribution, then batches
    OUT_DIR/batches/batch-001.csv  whose shift grows linearly to `shift` at the last one
    ...
    OUT_DIR/stream.json            the parameters and every batch's shift (the stream's answer key)

The distribution: two classes (prior 1/2 each), features x0..x{n-1}, each N(0, 1) within a
class; the first `n_informative` features carry the class, their class centres
`separation` apart along w = (1, ..., 1, 0, ..., 0) / sqrt(n_informative), so the reference
decision boundary is the hyperplane w.x = 0 (Bayes error Phi(-separation / 2): 10.6% at 2.5).

The shift moves every row of a batch (labels stay with their classes) by `s` times a fixed
vector with two parts, so that both things a monitor watches rise with it:
- along w by s * separation / 2: across the decision boundary. At s = 1 the class-0 centre sits
  on the reference boundary, so a model trained on train.csv errs on about half of class 0
  (error about 26% against 10.6%); the true boundary has moved with the rows, so this is a
  concept shift as seen from the features (P(y | x) changes), not only a covariate shift;
- along every uninformative feature by s * NOISE_SHIFT standard deviations: a covariate shift
  out of the region the training rows cover. There each seed's model extrapolates its own noise
  weights, so models trained with different seeds disagree more (an MLP's pairwise disagreement
  about 2.5x its reference level at s = 1, a logistic regression's only a little: its seeds'
  boundaries barely differ).

Every file is a function of `seed` and its own index only (numpy Generator streams keyed by
[seed, file]), so the same seed writes the same bytes, train.csv does not depend on the batches,
and batch i's noise does not depend on how far the stream shifts.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.cli_common import RefusingParser

TARGET = "target"
TRAIN = "train.csv"
BATCHES = "batches"
MANIFEST = "stream.json"
NOISE_SHIFT = 3.0  # uninformative features' shift, in standard deviations, at shift = 1
FLOAT_FORMAT = "%.6f"  # fixed precision: small files, the same bytes everywhere


class StreamError(ValueError):
    """A refused input, worded with the command-line option it came from."""


def batch_shifts(batches: int, start: int, shift: float) -> list[float]:
    """Each batch's shift: 0 for the first `start`, then linear up to `shift` at the last."""
    ramp = batches - start
    return [0.0 if i < start else shift * (i - start + 1) / ramp for i in range(batches)]


def write_stream(
    out_dir: str | Path,
    *,
    batches: int = 10,
    rows: int = 200,
    shift: float = 1.0,
    start: int = 3,
    labelled: bool = True,
    seed: int = 0,
    n_features: int = 8,
    n_informative: int = 4,
    separation: float = 2.5,
    train_rows: int = 1000,
    force: bool = False,
) -> list[Path]:
    """Write train.csv, batches/batch-NNN.csv and stream.json under out_dir (module docstring);
    return the CSV files written: train.csv first, then the batches in order.

    Every argument is checked before anything is written; a refusal is a StreamError naming the
    command-line option. An existing non-empty out_dir is refused unless `force`, which replaces
    the files this function writes there (and earlier batch files), nothing else.
    """
    out = Path(out_dir)
    _check(out, batches, rows, shift, start, seed, n_features, n_informative, separation,
           train_rows, force)  # fmt: skip
    w = np.zeros(n_features)
    w[:n_informative] = 1 / math.sqrt(n_informative)
    direction = w * separation / 2
    direction[n_informative:] = NOISE_SHIFT
    columns = [f"x{i}" for i in range(n_features)]
    shifts = batch_shifts(batches, start, shift)

    def table(index: int, n: int, s: float, with_target: bool):
        import pandas as pd

        rng = np.random.default_rng([seed, index])
        y = rng.integers(0, 2, n)
        centre = np.outer(np.where(y == 1, separation / 2, -separation / 2), w)
        X = rng.standard_normal((n, n_features)) + centre + s * direction
        frame = pd.DataFrame(X, columns=columns)
        if with_target:
            frame[TARGET] = y
        return frame

    (out / BATCHES).mkdir(parents=True, exist_ok=True)
    for old in (out / BATCHES).glob("batch-*.csv"):  # only with force: a stream's own files
        old.unlink()
    written = [out / TRAIN]
    _write(table(0, train_rows, 0.0, True), out / TRAIN)
    for i, s in enumerate(shifts):
        path = out / BATCHES / f"batch-{i:03d}.csv"
        _write(table(i + 1, rows, s, labelled), path)
        written.append(path)
    manifest = {
        "seed": seed, "batches": batches, "rows": rows, "shift": shift, "start": start,
        "labelled": labelled, "n_features": n_features, "n_informative": n_informative,
        "separation": separation, "train_rows": train_rows, "noise_shift": NOISE_SHIFT,
        "target": TARGET, "direction": [round(float(v), 12) for v in direction],
        "batch_shift": shifts,
        "files": [p.relative_to(out).as_posix() for p in written],
    }  # fmt: skip
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return written


def _write(frame, path: Path) -> None:
    frame.to_csv(path, index=False, float_format=FLOAT_FORMAT, lineterminator="\n")


def _check(
    out: Path, batches: int, rows: int, shift: float, start: int, seed: int, n_features: int,
    n_informative: int, separation: float, train_rows: int, force: bool,
) -> None:  # fmt: skip
    if batches < 1:
        raise StreamError(f"--batches must be at least 1, got {batches}")
    if rows < 1:
        raise StreamError(f"--rows must be at least 1, got {rows}")
    if train_rows < 2:
        raise StreamError(f"--train-rows must be at least 2, got {train_rows}")
    if not 0 <= start <= batches:
        raise StreamError(f"--start must be between 0 and --batches ({batches}), got {start}")
    if not (math.isfinite(shift) and shift >= 0):
        raise StreamError(f"--shift must be a non-negative number, got {shift}")
    if seed < 0:
        raise StreamError(f"--seed must be non-negative, got {seed}")
    if not 1 <= n_informative <= n_features:
        raise StreamError(
            f"--features must be at least --informative ({n_informative}) and --informative at "
            f"least 1, got {n_features} and {n_informative}"
        )
    if not (math.isfinite(separation) and separation > 0):
        raise StreamError(f"--separation must be positive, got {separation}")
    if out.exists() and not out.is_dir():
        raise StreamError(f"OUT_DIR {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise StreamError(f"OUT_DIR {out} exists and is not empty; --force writes into it")


def main(argv: Sequence[str] | None = None) -> int:
    parser = RefusingParser(
        refusal=StreamError,
        prog="python -m bench stream",
        description="Write a synthetic stream with a gradual distribution shift: OUT_DIR/train.csv "
        "(the reference distribution, labelled), OUT_DIR/batches/batch-NNN.csv (START batches "
        "unshifted, then a shift growing linearly to SHIFT) and OUT_DIR/stream.json.",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write (new or empty)")
    parser.add_argument("--batches", type=int, default=10, help="number of batches (10)")
    parser.add_argument("--rows", type=int, default=200, help="rows per batch (200)")
    parser.add_argument("--shift", type=float, default=1.0, help="shift of the last batch (1.0)")
    parser.add_argument("--start", type=int, default=3, help="unshifted batches first (3)")
    parser.add_argument("--unlabelled", action="store_true", help="batches without `target`")
    parser.add_argument("--seed", type=int, default=0, help="the stream's seed (0)")
    parser.add_argument("--train-rows", type=int, default=1000, help="rows of train.csv (1000)")
    parser.add_argument("--features", type=int, default=8, help="feature columns (8)")
    parser.add_argument("--informative", type=int, default=4, help="of them informative (4)")
    parser.add_argument("--separation", type=float, default=2.5, help="class distance (2.5)")
    parser.add_argument("--force", action="store_true", help="write into a non-empty OUT_DIR")
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        files = write_stream(
            args.out_dir, batches=args.batches, rows=args.rows, shift=args.shift,
            start=args.start, labelled=not args.unlabelled, seed=args.seed,
            n_features=args.features, n_informative=args.informative,
            separation=args.separation, train_rows=args.train_rows, force=args.force,
        )  # fmt: skip
    except (StreamError, OSError) as exc:
        print(f"bench stream: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out_dir)
    print(
        f"stream: {files[0]} ({args.train_rows} rows) and {len(files) - 1} batches in "
        f"{out / BATCHES} ({args.start} unshifted, then up to shift {args.shift:g}"
        f"{', unlabelled' if args.unlabelled else ''}); train a baseline with:\n"
        f"  python -m bench +sweep=seeds dataset=table dataset.path={files[0]} "
        f"dataset.target={TARGET}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
