"""skewtune.json as a typed ModelMeta: the bytes the train and package stages write, files of older versions, one
line naming the file and field for a bad value, and the recorded text preprocessing that predict repeats."""

from __future__ import annotations

import json
from dataclasses import replace

import pandas as pd
import pytest

from skewtune.config.schema import DEFAULT_MAX_IMAGE_PIXELS, DataParams
from skewtune.core.errors import SkewtuneError
from skewtune.model_dir import ImagePreprocessing, ModelMeta, TextPreprocessing, read_model_meta, write_model_meta
from skewtune.models.modality import IMAGE, TEXT

# skewtune.json of models/classifier after `dvc repro` with the default params (the text the package stage writes)
DEFAULT_CLASSIFIER = """{
  "labels": [
    "ham",
    "spam"
  ],
  "max_length": 128,
  "text_pair": false,
  "preprocessing": {
    "normalise_whitespace": true,
    "remove_control_characters": true,
    "unescape_html": false,
    "text_column": "text",
    "text_pair_column": null
  }
}
"""
IMAGE_CLASSIFIER = {
    "labels": ["bar", "post"],
    "modality": "image",
    "preprocessing": {"convert_to": "RGB", "image_column": "file", "max_image_pixels": 1000},
}


def test_the_default_classifier_is_written_byte_for_byte_as_before(tmp_path):
    """What package writes from the train stage's meta and the default data params, and reading it back."""
    write_model_meta(tmp_path, ModelMeta(("ham", "spam"), max_length=128, text_pair=False))
    trained = read_model_meta(tmp_path)
    assert trained.preprocessing is None and trained.modality == "text"
    write_model_meta(tmp_path, replace(trained, preprocessing=TEXT.preprocessing(DataParams())))
    assert (tmp_path / "skewtune.json").read_text(encoding="utf-8") == DEFAULT_CLASSIFIER
    assert read_model_meta(tmp_path, "package").to_dict() == json.loads(DEFAULT_CLASSIFIER)


def test_an_image_classifier_round_trips_in_its_key_order(tmp_path):
    (tmp_path / "skewtune.json").write_text(json.dumps(IMAGE_CLASSIFIER))
    meta = read_model_meta(tmp_path, "package")
    assert meta == ModelMeta(("bar", "post"), "image", preprocessing=ImagePreprocessing("RGB", "file", 1000))
    assert json.dumps(meta.to_dict()) == json.dumps(IMAGE_CLASSIFIER)  # same keys in the same order
    params = DataParams(modality="image", source="images", image_column="file", max_image_pixels=1000)
    assert IMAGE.preprocessing(params) == meta.preprocessing


def test_files_of_older_versions_get_what_skewtune_did_then(tmp_path):
    """No modality: text; a classifier without preprocessing, or with only some of its fields: ingest's defaults."""
    (tmp_path / "skewtune.json").write_text('{"labels": ["a", "b"], "max_length": 64, "text_pair": true}')
    meta = read_model_meta(tmp_path)
    assert meta.modality == "text" and meta.text_pair is True and meta.prepared_as() == TextPreprocessing()
    (tmp_path / "skewtune.json").write_text(
        '{"labels": ["a", "b"], "max_length": 64, "text_pair": false, "preprocessing": {"text_column": "SMS"}}'
    )
    assert read_model_meta(tmp_path).prepared_as() == TextPreprocessing(text_column="SMS", unescape_html=False)
    (tmp_path / "skewtune.json").write_text(
        '{"labels": ["a", "b"], "modality": "image", "preprocessing": {"convert_to": "RGB", "image_column": "f"}}'
    )
    assert read_model_meta(tmp_path).prepared_as().max_image_pixels == DEFAULT_MAX_IMAGE_PIXELS


TEXT_META = json.loads(DEFAULT_CLASSIFIER)
BAD_META = {
    "one label": ({**TEXT_META, "labels": ["ham"]}, 'field labels is ["ham"], expected a list of two or more'),
    "max_length as text": ({**TEXT_META, "max_length": "128"}, 'field max_length is "128", expected a positive whole'),
    "max_length true": ({**TEXT_META, "max_length": True}, "field max_length is true, expected a positive whole"),
    "no text_pair": (
        {k: v for k, v in TEXT_META.items() if k != "text_pair"},
        "field text_pair is missing (expected true or false)",
    ),
    "unknown modality": ({**TEXT_META, "modality": "audio"}, 'field modality is "audio", expected one of text, image'),
    "not an object": (["ham", "spam"], "the file must be a JSON object"),
    "preprocessing not an object": ({**TEXT_META, "preprocessing": "html"}, "preprocessing must be a JSON object"),
    "a flag as text": (
        {**TEXT_META, "preprocessing": {"unescape_html": "yes"}},
        'field preprocessing.unescape_html is "yes", expected true or false',
    ),
    "a step predict always takes, off": (
        {**TEXT_META, "preprocessing": {"remove_control_characters": False}},
        "field preprocessing.remove_control_characters is false, expected true (ingest always applies this step",
    ),
    "an unknown step": (
        {**TEXT_META, "preprocessing": {"lowercase": True}},
        "unknown field preprocessing.lowercase (this version of skewtune knows normalise_whitespace, ",
    ),
    "text fields in an image model": ({**IMAGE_CLASSIFIER, "max_length": 128}, "unknown field max_length"),
    "another colour mode": (
        {**IMAGE_CLASSIFIER, "preprocessing": {"convert_to": "L"}},
        'field preprocessing.convert_to is "L", expected "RGB"',
    ),
    "no pixel bound": (
        {**IMAGE_CLASSIFIER, "preprocessing": {"max_image_pixels": 0}},
        "field preprocessing.max_image_pixels is 0, expected a positive whole number",
    ),
}


@pytest.mark.parametrize("case", BAD_META)
def test_a_bad_field_is_one_line_naming_the_file_and_field(case, tmp_path):
    raw, message = BAD_META[case]
    (tmp_path / "skewtune.json").write_text(json.dumps(raw))
    with pytest.raises(SkewtuneError) as caught:
        read_model_meta(tmp_path, "package")
    text = str(caught.value)
    assert text.startswith(f"{tmp_path}/skewtune.json: ") and "\n" not in text, text
    assert message in text and text.endswith("; re-run the package stage"), text


@pytest.mark.parametrize("unescape_html", [False, True])
def test_the_recorded_text_preprocessing_is_what_normalise_applies(unescape_html):
    texts = pd.Series(["win &amp; call\x00  now\t", " \x1a ", None])
    prepared = TextPreprocessing(unescape_html=unescape_html).normalise(texts)
    assert prepared.iloc[0] == ("win & call now" if unescape_html else "win &amp; call now")
    assert prepared.iloc[1:].isna().all()
