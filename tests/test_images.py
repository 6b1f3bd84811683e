"""Images (data.modality: image): ingest of a folder-per-class tree and of a table of image paths, with its
errors and counted drops; the leakage guard on content hashes; augmentation; and the whole pipeline on tiny
PNGs through the real `dvc` CLI (a tree with the default small ResNet, a path table with a local model
directory), `skewtune predict` on the packaged classifier included."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from dvc_repo import dvc, make_repo, ran_stages, run
from PIL import Image

from skewtune.config.load import validate_params
from skewtune.config.schema import AugmentParams
from skewtune.core import paths
from skewtune.core.columns import BYTES_COLUMN
from skewtune.core.errors import SkewtuneError
from skewtune.data.splitting import check_dataset
from stages import ingest

SIDE = 12


def _image(kind: int, variant: int, mode: str = "RGB") -> Image.Image:
    """A small picture of class `kind` (a bright bar, horizontal or vertical) with noise from `variant`."""
    rng = np.random.default_rng(variant)
    pixels = rng.integers(0, 60, size=(SIDE, SIDE, 3), dtype=np.uint8)
    if kind:
        pixels[:, SIDE // 2 - 2 : SIDE // 2 + 2] = 230
    else:
        pixels[SIDE // 2 - 2 : SIDE // 2 + 2, :] = 230
    image = Image.fromarray(pixels, mode="RGB")
    return image.convert(mode) if mode != "RGB" else image


def write_tree(root: Path, counts: dict[str, int], *, mode: str = "RGB", start: int = 0) -> list[Path]:
    written = []
    for kind, (label, n) in enumerate(counts.items()):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            path = root / label / f"{start + i:03d}.png"
            _image(kind, start + 1000 * kind + i, mode).save(path)
            written.append(path)
    return written


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A scratch project dir (cwd) with data/raw/; call it with the `data:` params to write params.yaml."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "raw").mkdir(parents=True)

    def configure(**data) -> Path:
        (tmp_path / "params.yaml").write_text(yaml.safe_dump({"data": {"modality": "image", **data}}), encoding="utf-8")
        return tmp_path

    return configure


def _report() -> dict:
    return json.loads(Path(paths.INGEST_REPORT).read_text())


def _error() -> str:
    for path in (paths.DATASET, paths.LABELS, paths.INGEST_REPORT):
        Path(path).unlink(missing_ok=True)
    with pytest.raises(SkewtuneError) as caught:
        ingest.main()
    assert not Path(paths.DATASET).exists()  # nothing half written
    return str(caught.value)


def test_tree_ingest_converts_greyscale_counts_modes_and_drops_duplicates(project):
    project(
        source="data/raw/shapes", max_conflict_share=0.15
    )  # 3 of 20 images carry conflicting labels: allowed knowingly
    write_tree(Path("data/raw/shapes"), {"bar": 8, "post": 4})
    write_tree(Path("data/raw/shapes"), {"bar": 3}, mode="L", start=50)  # mixed RGB / greyscale folder
    shutil.copy("data/raw/shapes/bar/000.png", "data/raw/shapes/bar/copy.png")  # the same pixels under another name
    shutil.copy(
        "data/raw/shapes/bar/001.png", "data/raw/shapes/post/001-mislabelled.png"
    )  # one image, two labels: a tie
    shutil.copy(
        "data/raw/shapes/bar/002.png", "data/raw/shapes/bar/002-again.png"
    )  # bar twice, post once: bar wins the vote
    shutil.copy("data/raw/shapes/bar/002.png", "data/raw/shapes/post/002-mislabelled.png")
    Image.open("data/raw/shapes/post/000.png").save("data/raw/shapes/post/000-again.bmp")  # same pixels, other format
    Path("data/raw/shapes/post/notes.txt").write_text("not an image")
    ingest.main()
    report = _report()
    assert report["dropped"] == {
        "missing_image": 0,
        "unreadable_image": 0,
        "oversized_image": 0,
        "unsupported_mode": 0,
        "missing_label": 0,
        "conflicting_label": 2,
        "outvoted_label": 1,
        "duplicate": 3,
    }
    assert report["rows_in"] == 20 and report["rows_kept"] == 14
    assert report["images"]["modes"] == {"RGB": 17, "L": 3} and report["images"]["converted_to_rgb"] == {"L": 3}
    assert report["images"]["width"] == {"min": SIDE, "median": SIDE, "max": SIDE}
    assert report["reading"]["other_files"] == 1
    assert report["conflicts"] == {
        "policy": "majority_vote",
        "conflicting": 2,
        "kept_by_vote": 1,
        "tied": 1,
        "rows_dropped": 3,
        "share": 0.15,
        "max_share": 0.15,
    }
    examples = {example["kept_label"]: example for example in report["conflict_examples"]}
    assert examples["bar"]["labels"] == {"bar": 2, "post": 1}
    assert sorted(examples["bar"]["images"]) == [
        "shapes/bar/002-again.png",
        "shapes/bar/002.png",
        "shapes/post/002-mislabelled.png",
    ]
    assert examples[None]["labels"] == {"bar": 1, "post": 1}
    assert sorted(examples[None]["images"]) == ["shapes/bar/001.png", "shapes/post/001-mislabelled.png"]
    dataset = pd.read_parquet(paths.DATASET)
    assert list(dataset.columns) == ["id", "image", "label", "subset", "hash", "image_bytes"]
    assert dataset["hash"].is_unique and json.loads(Path(paths.LABELS).read_text()) == {"labels": ["bar", "post"]}
    assert (
        dataset.loc[dataset["image"] == "shapes/bar/050.png", "image_bytes"].iloc[0]
        == Path("data/raw/shapes/bar/050.png").read_bytes()
    )


def test_corrupt_png_is_a_counted_drop_within_the_guard_and_an_error_beyond_it(project):
    write_tree(Path("data/raw/shapes"), {"bar": 30, "post": 10})
    data = Path("data/raw/shapes/bar/000.png").read_bytes()
    Path("data/raw/shapes/bar/000.png").write_bytes(data[: len(data) // 2])  # truncated
    Path("data/raw/shapes/post/empty.png").write_bytes(b"")
    project(source="data/raw/shapes")
    message = _error()
    assert message.startswith(
        "data/raw/shapes: 2 of 41 rows (4.9%) lack a usable image or a label (2 unreadable_image)"
    )
    assert "data.max_dropped_share (0.01)" in message and "raise data.max_dropped_share" in message
    project(source="data/raw/shapes", max_dropped_share=0.05)
    ingest.main()
    report = _report()
    assert report["dropped"]["unreadable_image"] == 2 and report["rows_kept"] == 39
    whys = {example["image"]: example["why"] for example in report["drop_examples"]["unreadable_image"]}
    assert whys["shapes/post/empty.png"] == "the file is empty (0 bytes)" and "truncated" in whys["shapes/bar/000.png"]


def _huge_png(path: Path, side: int = 12000) -> Path:
    """A PNG of side x side pixels that compresses to a few KB (one bit per pixel, all black)."""
    Image.new("1", (side, side)).save(path, optimize=True)
    return path


def test_an_image_of_more_pixels_than_the_bound_is_a_counted_drop_read_from_its_header(project):
    write_tree(Path("data/raw/shapes"), {"bar": 30, "post": 10})
    big = _huge_png(Path("data/raw/shapes/bar/huge.png"))
    assert big.stat().st_size < 100_000
    project(source="data/raw/shapes")
    message = _error()
    assert message.startswith(
        "data/raw/shapes: 1 of 41 rows (2.4%) lack a usable image or a label (1 oversized_image)"
    ), message
    assert "larger than data.max_image_pixels" in message
    project(source="data/raw/shapes", max_dropped_share=0.05)
    ingest.main()
    report = _report()
    assert (
        report["dropped"]["oversized_image"] == 1
        and report["rows_kept"] == 40
        and report["images"]["width"]["max"] == SIDE
    )
    [example] = report["drop_examples"]["oversized_image"]
    assert (
        example["image"] == "shapes/bar/huge.png"
        and example["why"] == "12000x12000 = 144,000,000 pixels, above the bound of 40,000,000"
    )
    project(source="data/raw/shapes", max_dropped_share=0.05, max_image_pixels=200_000_000)
    with pytest.raises(SkewtuneError, match=r"data\.max_image_pixels: Input should be less than or equal to 178956970"):
        ingest.main()


def test_predict_gives_an_oversized_image_no_prediction_as_an_unreadable_one(tmp_path):
    from skewtune.apply import image_rows

    _image(0, 1).save(tmp_path / "small.png")
    _huge_png(tmp_path / "huge.png", side=300)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    rows = image_rows(pd.Series(["small.png", "huge.png", "broken.png"]), tmp_path, "in.csv", max_pixels=300 * 300 - 1)
    assert rows["problem"].fillna("").tolist() == ["", "oversized_image", "unreadable_image"]
    assert rows[BYTES_COLUMN].iloc[0] == (tmp_path / "small.png").read_bytes()


def test_one_class_folder_and_loose_files_are_clear_errors(project):
    write_tree(Path("data/raw/shapes"), {"bar": 5})
    project(source="data/raw/shapes")
    assert _error() == (
        "data/raw/shapes: only one class ('bar', 5 usable rows) in its class folders; a classifier needs "
        "at least 2: add a folder per class"
    )
    _image(0, 1).save("data/raw/shapes/loose.png")
    assert "holds files directly (loose.png)" in _error()


def test_path_table_reads_paths_under_data_raw_and_refuses_one_outside(project, tmp_path):
    write_tree(Path("data/raw/pics"), {"bar": 4, "post": 3})
    rows = [(f"pics/{p.parent.name}/{p.name}", p.parent.name) for p in sorted(Path("data/raw/pics").rglob("*.png"))]
    table = pd.DataFrame(rows + [("pics/bar/missing.png", "bar")], columns=["file", "y"])
    table.to_csv("data/raw/table.csv", index=False)
    project(source="data/raw/table.csv", image_column="file", label_column="y", max_dropped_share=0.2)
    ingest.main()
    report = _report()
    assert report["dropped"]["missing_image"] == 1 and report["rows_kept"] == 7 and report["reading"]["format"] == "csv"
    assert report["drop_examples"]["missing_image"][0] == {
        "at": "line 9",
        "image": "pics/bar/missing.png",
        "label": "bar",
        "why": "no such file",
    }

    _image(0, 7).save(tmp_path / "secret.png")
    pd.concat([table, pd.DataFrame([("../secret.png", "bar")], columns=["file", "y"])]).to_csv(
        "data/raw/table.csv", index=False
    )
    message = _error()
    assert message.startswith("data/raw/table.csv: line 10: the image path '../secret.png' leads outside data/raw/")


def test_an_image_that_is_a_symbolic_link_out_of_data_raw_stops_ingest(project, tmp_path):
    """A link to a picture outside data/raw/ (git carries links in a pull request) is refused, in a tree and in a path
    table, before its bytes are read; so is a folder source that is such a link. `skewtune predict` and the score
    stage refuse the same below their image root."""
    from skewtune.apply import image_rows

    write_tree(Path("data/raw/shapes"), {"bar": 3, "post": 3})
    _image(0, 9).save(tmp_path / "private.png")
    Path("data/raw/shapes/bar/link.png").symlink_to(tmp_path / "private.png")
    project(source="data/raw/shapes")
    assert _error() == (
        f"data.source: data/raw/shapes/bar/link.png leads outside data/raw/ (a symbolic link to {tmp_path / 'private.png'}); "
        "DVC tracks data/raw/ as the pipeline's input and nothing elsewhere is read: copy the file there in place of the link"
    )
    pd.DataFrame({"image": ["shapes/bar/000.png", "shapes/bar/link.png"], "label": ["bar", "bar"]}).to_csv(
        "data/raw/table.csv", index=False
    )
    project(source="data/raw/table.csv")
    assert _error().startswith(
        "data/raw/table.csv: line 3: the image path 'shapes/bar/link.png' leads outside data/raw/ (a symbolic link "
        f"to {tmp_path / 'private.png'})"
    )
    with pytest.raises(
        SkewtuneError, match=r"row 2: the image path 'shapes/bar/link.png' leads outside data/raw/ \(a symbolic link to"
    ):
        image_rows(pd.Series(["shapes/bar/000.png", "shapes/bar/link.png"]), Path("data/raw"), "data/raw/table.csv")
    shutil.copytree("data/raw/shapes", tmp_path / "elsewhere")
    Path("data/raw/moved").symlink_to(tmp_path / "elsewhere")
    project(source="data/raw/moved")
    assert _error().startswith(
        f"data.source: 'data/raw/moved' is outside data/raw/ (a symbolic link to {tmp_path / 'elsewhere'})"
    )


def test_a_linked_folder_inside_a_class_folder_stops_ingest_instead_of_being_skipped(project, tmp_path):
    """The tree walk does not follow a folder that is a symbolic link (even one inside data/raw/): its images would be
    neither read nor counted, so ingest stops and names it."""
    write_tree(Path("data/raw/shapes"), {"bar": 3, "post": 3})
    write_tree(Path("data/raw/more"), {"bar": 2})
    Path("data/raw/shapes/bar/extra").symlink_to(Path("data/raw/more/bar").resolve())
    project(source="data/raw/shapes")
    assert _error() == (
        f"data.source: data/raw/shapes/bar/extra is a symbolic link to the folder {Path('data/raw/more/bar').resolve()}, "
        "which the walk of the tree does not follow, so its images would not be read: put the folder itself "
        "(or its images) in its place"
    )


def test_sixteen_bit_images_are_counted_as_unsupported_mode(project):
    write_tree(Path("data/raw/shapes"), {"bar": 6, "post": 6})
    Image.fromarray(np.full((SIDE, SIDE), 40000, dtype=np.uint16)).save("data/raw/shapes/post/deep.png")
    assert Image.open("data/raw/shapes/post/deep.png").mode.startswith("I")
    project(source="data/raw/shapes", max_dropped_share=0.1)
    ingest.main()
    assert _report()["dropped"]["unsupported_mode"] == 1


def test_split_refuses_a_repeated_content_hash():
    frame = pd.DataFrame(
        {
            "id": ["r1", "r2", "r3"],
            "image": ["a.png", "b.png", "c.png"],
            "label": ["x", "y", "x"],
            "subset": "pool",
            "hash": ["h1", "h2", "h1"],
            "image_bytes": [b"1", b"2", b"3"],
        }
    )
    with pytest.raises(SkewtuneError, match=r"1 repeated image\(s\), e.g. rows r1, r3 share 'h1'"):
        check_dataset(frame, ["x", "y"], "dataset")


def test_image_params_refuse_text_only_techniques_and_warn_about_text_keys():
    from skewtune.config.effective import unused_settings

    with pytest.raises(SkewtuneError, match="train.adversarial is fgm, but data.modality is image"):
        validate_params({"data": {"modality": "image", "source": "data/raw/x"}, "train": {"adversarial": "fgm"}})
    with pytest.raises(SkewtuneError, match="data.source 'embedded' is the SMS text table"):
        validate_params({"data": {"modality": "image"}})
    params = validate_params({"data": {"modality": "image", "source": "data/raw/x"}, "model": {"max_length": 64}})
    assert any(
        line.startswith("model.max_length is 64, but only data.modality: text reads it")
        for line in unused_settings(params)
    )
    text = validate_params({"augment": {"hflip": 0.5}})
    assert any(
        line.startswith("augment.hflip is 0.5, but only data.modality: image reads it")
        for line in unused_settings(text)
    )


def test_augmentation_is_seeded_keeps_the_size_and_is_off_by_default():
    from skewtune.models.image import augmentation
    from skewtune.models.modality import default_image_model

    processor, _ = default_image_model([16, 24], {"num_labels": 2})
    assert augmentation(AugmentParams(), processor) is None
    augment = augmentation(
        AugmentParams(hflip=0.5, rotation=15, crop_scale=0.8, brightness=0.2, contrast=0.2), processor
    )
    pixels = torch.rand(8, 3, 16, 24) * 2 - 1
    torch.manual_seed(3)
    first = augment(pixels)
    torch.manual_seed(3)
    assert torch.equal(first, augment(pixels)) and first.shape == pixels.shape
    assert not torch.allclose(first, pixels) and first.min() >= -1 - 1e-5 and first.max() <= 1 + 1e-5


# ------------------------------------------------------------------------------- the pipeline


PIPELINE_PARAMS = {
    "split": {"val_size": 0.25, "test_size": 0.25},
    "train": {"epochs": 1, "batch_size": 8, "eval_batch_size": 16, "warmup": 0.0, "lr": 3.0e-3},
    "augment": {"hflip": 0.5, "rotation": 5.0},
}


def _repro(root: Path) -> str:
    out = dvc(["repro"], root)
    assert {"ingest", "train", "predict", "evaluate", "package"} <= ran_stages(out.stdout), out.stdout
    # The baseline (text only) and the score stage (no data.score_path) have nothing to write: no 0-byte outputs.
    assert "is empty" not in out.stdout + out.stderr, out.stderr
    return out.stdout


def _skewtune(args: list, cwd: Path) -> None:
    run([str(Path(sys.executable).parent / "skewtune"), *map(str, args)], cwd)


@pytest.mark.slow
def test_folder_tree_runs_end_to_end_with_the_default_model_and_predicts_a_folder(tmp_path):
    raw = tmp_path / "raw"
    write_tree(raw / "shapes", {"bar": 24, "post": 8})
    write_tree(raw / "shapes", {"post": 4}, mode="L", start=60)
    root = tmp_path / "repo"
    make_repo(root, {"data": {"modality": "image", "source": "data/raw/shapes"}, **PIPELINE_PARAMS})
    shutil.copytree(raw / "shapes", root / "data/raw/shapes")
    stdout = _repro(root)
    assert "converted to RGB: 4 L" in stdout and "a small ResNet built from its config" in stdout
    meta = json.loads((root / "models/classifier/skewtune.json").read_text())
    assert (
        meta["modality"] == "image"
        and meta["labels"] == ["bar", "post"]
        and meta["preprocessing"]["convert_to"] == "RGB"
    )
    assert meta["preprocessing"]["max_image_pixels"] == 40_000_000
    card = (root / "models/classifier/README.md").read_text()
    assert (
        yaml.safe_load(card.split("---\n")[1])["pipeline_tag"] == "image-classification"
        and "# skewtune image classifier" in card
    )
    errors = pd.read_csv(root / "reports/errors.csv")
    assert "image" in errors.columns and "text" not in errors.columns
    assert json.loads((root / "metrics/test.json").read_text())["n_test"] == 9
    # train.cv: auto cross-fits these few rows, so label_issues checks the images on the fold models' probabilities
    issues = json.loads((root / "reports/label_issues.json").read_text())
    assert issues["status"] == "checked" and issues["source"].startswith("the model cross-fitted on"), issues

    # skewtune predict on a folder: one row per image, in path order, same predictions as evaluate on the test split
    test = pd.read_parquet(root / "data/split/test.parquet")
    folder = tmp_path / "new"
    for path in test["image"]:
        target = folder / path.replace("/", "_")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / "data/raw" / path, target)
    _huge_png(folder / "huge.png")  # more pixels than ingest took (data.max_image_pixels): no prediction, counted
    done = run(
        [
            str(Path(sys.executable).parent / "skewtune"),
            "predict",
            str(folder),
            "-o",
            str(tmp_path / "out.csv"),
            "--model",
            str(root / "models/classifier"),
        ],
        tmp_path,
    )
    assert done.stdout.endswith("; 1 row without a usable image got no prediction\n"), done.stdout
    out = pd.read_csv(tmp_path / "out.csv")
    assert out.loc[out["image"] == "huge.png", "predicted"].isna().all() and len(out) == len(test) + 1
    evaluated = pd.read_csv(root / "reports/eval/test_predictions.csv", dtype=str).assign(
        image=test["image"].str.replace("/", "_")
    )
    merged = out.merge(evaluated, on="image")
    assert len(merged) == len(test) and (merged["predicted_x"] == merged["predicted_y"]).all()


@pytest.mark.slow
def test_path_table_runs_end_to_end_with_a_local_model_directory_and_scores(tmp_path):
    from transformers import ResNetConfig, ResNetForImageClassification, ViTImageProcessorPil

    base = tmp_path / "base_model"
    torch.manual_seed(0)
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", num_labels=5)
    ResNetForImageClassification(config).save_pretrained(base)  # a 5-class head: replaced by one of 3 outputs
    ViTImageProcessorPil(size={"height": 16, "width": 16}).save_pretrained(base)

    root = tmp_path / "repo"
    make_repo(
        root,
        {
            "data": {
                "modality": "image",
                "source": "data/raw/labels.csv",
                "image_column": "path",
                "label_column": "kind",
                "score_path": "data/raw/new.csv",
            },
            "model": {"name": str(base)},
            **PIPELINE_PARAMS,
        },
    )
    written = write_tree(root / "data/raw/img", {"a": 20, "b": 8, "c": 8})
    rows = [(str(p.relative_to(root / "data/raw")), p.parent.name) for p in written]
    pd.DataFrame(rows, columns=["path", "kind"]).to_csv(root / "data/raw/labels.csv", index=False)
    pd.DataFrame({"path": [rows[0][0], "img/none.png", rows[-1][0]]}).to_csv(root / "data/raw/new.csv", index=False)
    stdout = _repro(root)
    assert "images resized to 16x16 (height x width) by ViTImageProcessorPil" in stdout
    assert "1 row without a usable image got no prediction" in stdout
    scored = pd.read_parquet(root / "data/predictions/score.parquet")
    assert list(scored.columns) == ["path", "predicted", "prob:a", "prob:b", "prob:c", "margin"]
    assert scored["predicted"].iloc[1] == "" and set(scored["predicted"].iloc[[0, 2]]) <= {"a", "b", "c"}
    queue = pd.read_csv(root / "reports/errors.csv", keep_default_na=False)
    assert set(queue.loc[queue["source"] == "score", "image"]) == {rows[0][0], rows[-1][0]}
    assert json.loads(dvc(["status", "--json"], root).stdout or "{}") == {}


def test_binary_weighted_ce_is_bce_with_pos_weight():
    """The seed's BCEWithLogitsLoss(pos_weight = negatives / positives) on one logit is weighted_ce (balanced) on two
    logits whose difference is that logit, up to the constant factor of the negative class's weight."""
    from skewtune.config.schema import LossParams
    from skewtune.train.losses import build_loss, class_weights

    counts = [90, 10]
    torch.manual_seed(0)
    logits, labels = torch.randn(64, 2), torch.randint(0, 2, (64,))
    ours = build_loss(LossParams(name="weighted_ce"), class_counts=counts, labels=["neg", "pos"])(logits, labels, 64)
    w_neg, w_pos = class_weights(counts, "balanced", 0.999, ["neg", "pos"])
    bce = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(counts[0] / counts[1]))(
        logits[:, 1] - logits[:, 0], labels.float()
    )
    torch.testing.assert_close(ours, w_neg * bce)
    assert w_pos / w_neg == pytest.approx(counts[0] / counts[1])
