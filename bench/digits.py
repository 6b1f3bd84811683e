"""scikit-learn's 1,797 handwritten digits (8x8, 17 grey levels) as PNG files in a folder-per-class tree,
made imbalanced; then skewtune's image pipeline against LogisticRegression(class_weight="balanced") on the
raw pixels, over seeds.

    .venv/bin/python bench/digits.py --out /tmp/skewtune_bench/digits [--seeds 1 2 3] [--variants binary multiclass]

Variants: `binary`, one digit (8) against the rest (about 10%); `multiclass`, all ten digits with three (3, 5, 8)
subsampled to about 5% of the rows each. Each (variant, seed) runs the real stage modules in its own
directory with split.seed = train.seed = the seed; the baseline is fit on that run's train split (pixels
read back from the PNGs ingest kept) with C chosen on val, and both are reported on val and test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from _common import copy_project, machine, run_stage, set_params  # noqa: E402

POSITIVE = 8
RARE = (3, 5, 8)
RARE_SHARE = 0.05
STAGES = ("ingest", "split", "resample", "train", "predict", "tune_threshold", "evaluate")
# The image pipeline's settings for these runs (the rest are the project's defaults): the default small
# ResNet from scratch needs more epochs and a higher learning rate than fine-tuning a pretrained text model.
PARAMS = {
    "data": {"modality": "image", "source": "data/raw/digits"},
    "split": {"val_size": 0.15, "test_size": 0.15},
    "model": {"name": "default"},
    "train": {
        "epochs": 10,
        "batch_size": 32,
        "lr": 3.0e-3,
        "warmup": 0.05,
        "scheduler": "cosine",
        "early_stopping_patience": 3,
    },
    "augment": {"rotation": 10.0, "crop_scale": 0.85},
}


def write_digits(dest: Path, variant: str, seed: int) -> dict[str, int]:
    """The digits as dest/<class>/<index>.png (greyscale, 16 levels scaled to 0-255); returns rows per class."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    keep = np.ones(len(digits.target), dtype=bool)
    if variant == "multiclass":
        common = int((~np.isin(digits.target, RARE)).sum())
        per_rare = round(RARE_SHARE * common / (1 - RARE_SHARE * len(RARE)))
        for digit in RARE:
            rows = np.flatnonzero(digits.target == digit)
            keep[rng.choice(rows, size=len(rows) - per_rare, replace=False)] = False
    counts: dict[str, int] = {}
    for i in np.flatnonzero(keep):
        label = (
            str(digits.target[i]) if variant == "multiclass" else ("eight" if digits.target[i] == POSITIVE else "other")
        )
        folder = dest / label
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((digits.images[i] * 255 / 16).round().astype(np.uint8), mode="L").save(folder / f"{i:04d}.png")
        counts[label] = counts.get(label, 0) + 1
    return counts


def pixel_baseline(workdir: Path, seed: int) -> dict:
    """LogisticRegression(class_weight='balanced') on the 64 raw pixels of each kept PNG; C chosen by val macro-F1."""
    import io

    import numpy as np
    import pandas as pd
    from PIL import Image
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    def xy(name: str):
        frame = pd.read_parquet(workdir / f"data/split/{name}.parquet")
        x = np.stack(
            [
                np.asarray(Image.open(io.BytesIO(b)).convert("L"), dtype=np.float64).ravel() / 255
                for b in frame["image_bytes"]
            ]
        )
        return x, frame["label"].to_numpy()

    (xt, yt), (xv, yv), (xs, ys) = xy("train"), xy("val"), xy("test")
    best = None
    for c in (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0):
        model = LogisticRegression(C=c, class_weight="balanced", max_iter=5000, random_state=seed).fit(xt, yt)
        score = f1_score(yv, model.predict(xv), average="macro")
        if best is None or score > best[0]:
            best = (score, c, model)
    score, c, model = best
    return {"val_f1_macro": score, "test_f1_macro": f1_score(ys, model.predict(xs), average="macro"), "C": c}


def run(out: Path, variant: str, seed: int) -> dict:
    workdir = out / f"{variant}-seed{seed}"
    result_file = workdir / "result.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    if not workdir.exists():
        copy_project(workdir)
        (workdir / "data/raw").mkdir(parents=True, exist_ok=True)
        write_digits(workdir / "data/raw/digits", variant, seed)
    set_params(
        workdir, {**PARAMS, "split": {**PARAMS["split"], "seed": seed}, "train": {**PARAMS["train"], "seed": seed}}
    )
    log = workdir / "bench.log"
    times = {stage: run_stage(stage, workdir, log) for stage in STAGES}
    test = json.loads((workdir / "metrics/test.json").read_text())
    result = {
        "variant": variant,
        "seed": seed,
        "skewtune": {
            "val_f1_macro": test["val_f1_macro"],
            "test_f1_macro": test["f1_macro"],
            "rule": test["rule"],
            "train_s": times["train"]["wall_s"],
        },
        "pixels_lr": pixel_baseline(workdir, seed),
        "ingest": json.loads((workdir / "reports/ingest.json").read_text())["class_counts"],
    }
    result_file.write_text(json.dumps(result, indent=1))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--variants", nargs="+", default=["binary", "multiclass"], choices=["binary", "multiclass"])
    args = parser.parse_args()
    print(machine())
    for variant in args.variants:
        results = [run(args.out, variant, seed) for seed in args.seeds]
        for r in results:
            s, b = r["skewtune"], r["pixels_lr"]
            print(
                f"{variant} seed {r['seed']}: skewtune val {s['val_f1_macro']:.4f} test {s['test_f1_macro']:.4f} ({s['rule']}, "
                f"train {s['train_s']:.0f} s); pixels LR val {b['val_f1_macro']:.4f} test {b['test_f1_macro']:.4f} (C {b['C']})"
            )
        for name in ("skewtune", "pixels_lr"):
            for split in ("val", "test"):
                values = [r[name][f"{split}_f1_macro"] for r in results]
                print(
                    f"{variant} {name} {split} macro-F1: mean {statistics.mean(values):.4f}, sd {statistics.pstdev(values):.4f}"
                )
        print(
            f"{variant}: mean train time {statistics.mean(r['skewtune']['train_s'] for r in results):.0f} s; classes {results[0]['ingest']}"
        )


if __name__ == "__main__":
    main()
