"""Stage predict: class probabilities of the trained model for the val and test rows."""

from skewtune.artifacts import prediction_table, read_examples, read_labels
from skewtune.config.load import load_params
from skewtune.core.errors import SkewtuneError
from skewtune.core.outputs import Outputs, counted
from skewtune.core.paths import LABELS, MODEL, predictions_path, split_path
from skewtune.core.stage import run_stage
from skewtune.model_dir import read_model_meta
from skewtune.models.devices import amp_dtype, resolve_device, resolve_precision
from skewtune.models.inference import progress_printer
from skewtune.models.modality import for_meta

SPLITS = ("val", "test")


def main() -> None:
    p = load_params()
    device = resolve_device(p.train.device)
    dtype = amp_dtype(resolve_precision(p.train.precision, device))
    labels = read_labels()
    modality = for_meta(read_model_meta(MODEL))
    model, processor, meta = modality.load_trained(MODEL, trust_remote_code=p.model.trust_remote_code)
    if list(meta.labels) != labels:
        raise SkewtuneError(
            f"{MODEL} was trained on the labels {list(meta.labels)}, but {LABELS} lists {labels}; re-run the train stage"
        )
    with Outputs() as out:
        for split in SPLITS:
            source, dest = split_path(split), predictions_path(split)
            rows = read_examples(source, labels, "split")
            probs = modality.predict_proba(
                model,
                processor,
                rows,
                meta,
                batch_size=p.train.eval_batch_size,
                device=device,
                amp_dtype=dtype,
                progress=progress_printer(len(rows), f"{split} "),
            )
            out.parquet(dest, prediction_table(rows, probs, labels))
            print(f"predict: {counted(len(rows), 'row')} of {source} -> {dest}", flush=True)


if __name__ == "__main__":
    run_stage("predict", main)
