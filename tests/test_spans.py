"""Annotation tools' JSON with character spans: read as IOB2 words (doccano, Label Studio,
CLUENER), bad spans named, pre-annotations written and read back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.spans_from_conll import convert
from edgener.runtime.conll import DataError, Sentence
from edgener.runtime.spans import read_labelled, read_span_file
from edgener.runtime.tags import entity_spans
from edgener.runtime.text import split_words
from edgener.training.datasets import load_dataset
from tests.conftest import run_module
from tests.test_cli import edge_ner
from tests.test_predictor import artifacts  # noqa: F401 (a fixture)

TEXT = "Angela Merkel met Bob O'Neil in New York."
# Words as the runtime splits them: Angela Merkel met Bob O 'Neil in New York .
TAGS = ["B-PER", "I-PER", "O", "B-PER", "I-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"]


def write_lines(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_doccano_spans_become_iob2_tags_on_the_runtimes_words(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [
        {"text": TEXT, "label": [[0, 13, "PER"], [18, 28, "PER"], [32, 40, "LOC"]]},
        {"text": "Nothing here.", "label": []}])
    sentences, counts = read_span_file(path)
    assert sentences[0].words == ["Angela", "Merkel", "met", "Bob", "O", "'Neil", "in", "New",
                                  "York", "."]
    assert sentences[0].tags == TAGS
    assert sentences[1].tags == ["O", "O", "O"]
    assert (sentences[0].document, sentences[1].document) == (0, 1)  # a text, a document
    assert sentences[1].lines == [2, 2, 2]
    assert (counts.texts, counts.entities, counts.snapped, counts.nested) == (2, 3, 0, 0)


def test_label_studio_export_and_cluener_end_inclusive_give_the_same_tags(tmp_path):
    task = {"id": 1, "data": {"text": TEXT}, "annotations": [
        {"was_cancelled": True, "result": []},
        {"result": [{"from_name": "label", "to_name": "text", "type": "labels",
                     "value": {"start": s, "end": e, "text": TEXT[s:e], "labels": [k]}}
                    for s, e, k in ((0, 13, "PER"), (18, 28, "PER"), (32, 40, "LOC"))]}]}
    studio = tmp_path / "s.json"
    studio.write_text(json.dumps([task], indent=2), encoding="utf-8")
    cluener = write_lines(tmp_path / "c.jsonl", [
        {"text": TEXT, "label": {"PER": {"Angela Merkel": [[0, 12]], "Bob O'Neil": [[18, 27]]},
                                 "LOC": {"New York": [[32, 39]]}}}])
    for path in (studio, cluener):
        (sentence,), _ = read_span_file(path)
        assert sentence.tags == TAGS, path.name


def test_a_span_off_word_boundaries_is_named_or_widened_and_counted(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [
        {"text": "x"}, {"text": TEXT, "label": [[1, 13, "PER"]]}])
    with pytest.raises(DataError) as error:
        read_span_file(path)
    message = str(error.value)
    assert message.startswith(f"{path}:2: span [1, 13) 'ngela Merkel' PER does not fall")
    assert "snap_spans=true" in message and "\n" not in message
    (_, sentence), counts = read_span_file(path, snap=True)
    assert sentence.tags[:3] == ["B-PER", "I-PER", "O"]
    assert counts.snapped == 1 and "'ngela Merkel' -> 'Angela Merkel'" in counts.summary()


def test_nested_spans_keep_the_outer_and_crossing_spans_are_an_error(tmp_path):
    nested = write_lines(tmp_path / "n.jsonl", [
        {"text": TEXT, "label": [[36, 40, "LOC"], [32, 40, "LOC"], [0, 6, "PER"],
                                 [0, 13, "PER"]]}])
    (sentence,), counts = read_span_file(nested)
    assert sentence.tags[:2] == ["B-PER", "I-PER"] and sentence.tags[7:9] == ["B-LOC", "I-LOC"]
    assert counts.nested == 2 and counts.entities == 2
    assert "2 nested spans dropped" in counts.summary()
    crossing = write_lines(tmp_path / "x.jsonl", [
        {"text": TEXT, "label": [[0, 13, "PER"], [7, 21, "PER"]]}])
    with pytest.raises(DataError, match=r"x.jsonl:1: span \[7, 21\) 'Merkel met Bob' PER "
                                        r"overlaps span \[0, 13\) 'Angela Merkel' PER"):
        read_span_file(crossing)


@pytest.mark.parametrize("content, message", [
    ('{"text": "Bob", "label": [[0, 3, "PER"]]}\n{"text": "Ann", "label": [[0, 9, "PER"]]}',
     "b.jsonl:2: span [0, 9) PER lies outside its text of 3 characters"),
    ('{"text": "Bob", "label": [[0, 3, "PER"]]}\n{"text": "Ann", "label": [[0, 3, "PER"]',
     "b.jsonl:2: not JSON"),
    ('{"text": "Bob", "label": [[0, "PER"]]}', "b.jsonl:1: not a doccano record"),
    ('{"words": ["Bob"]}', "b.jsonl:1: not a record of doccano, label-studio, cluener"),
    ('\n\n', "b.jsonl: no texts found"),
])
def test_malformed_files_are_one_line_naming_file_and_line(tmp_path, content, message):
    path = tmp_path / "b.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as error:
        read_span_file(path)
    assert message in str(error.value) and "\n" not in str(error.value)


def spans_folder(root: Path, splits: dict[str, list[dict]]) -> Path:
    root.mkdir()
    for split, records in splits.items():
        write_lines(root / f"{split}.jsonl", records)
    return root


def test_an_unknown_type_in_dev_names_its_file_line_and_words(tmp_path):
    train = [{"text": TEXT, "label": [[0, 13, "PER"]]}]
    folder = spans_folder(tmp_path / "data", {
        "train": train, "test": train,
        "dev": [{"text": "x"}, {"text": TEXT, "label": [[32, 40, "CITY"]]}]})
    with pytest.raises(DataError, match=r"dev.jsonl:2: tag 'B-CITY' \(on 'New'\) does not "
                                        "occur in train"):
        load_dataset(str(folder))


def test_a_conll_folder_converted_to_each_shape_reads_as_the_same_entities(
        tmp_path, conll_dir):
    conll = load_dataset(str(conll_dir))
    for shape in ("doccano", "label-studio", "cluener"):
        convert(conll_dir, tmp_path / shape, shape)
        converted = load_dataset(str(tmp_path / shape))
        assert converted.labels == conll.labels
        for split in ("train", "test"):
            ours, theirs = converted.split(split), conll.split(split)
            assert len(ours) == len(theirs)
            assert [spans_text(s) for s in ours] == [spans_text(s) for s in theirs], shape
        assert converted.span_counts["test"].snapped == 0


def spans_text(sentence: Sentence) -> list[tuple[str, str]]:
    """Each entity's type and its words joined: the same however the words were split
    (CoNLL's "n't" is the runtime's "n" and "'t")."""
    return [(kind, "".join(sentence.words[start:end]))
            for kind, start, end in entity_spans(sentence.tags)]


def tags_of(text: str, entities: list[dict]) -> list[str]:
    """IOB2 tags of the runtime's words of `text`, from entities' character offsets."""
    words = split_words(text)
    tags = ["O"] * len(words)
    for entity in entities:
        first = next(i for i, w in enumerate(words) if w.start == entity["start"])
        last = next(i for i, w in enumerate(words) if w.end == entity["end"])
        tags[first:last + 1] = [f"B-{entity['type']}"] + [f"I-{entity['type']}"] * (last - first)
    return tags


@pytest.mark.parametrize("shape, suffix", [("doccano", "jsonl"), ("label-studio", "json")])
def test_pre_annotations_read_back_as_the_predicted_entities(artifacts, tmp_path, shape,  # noqa: F811,E501
                                                             suffix):
    texts = [TEXT, "Contoso and Fabrikam signed in São Paulo.", "no entities here", ""]
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / f"pre.{suffix}"
    result = edge_ner("label", str(artifacts["onnx-int8"]), str(source), "--format", shape,
                      "--output", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    predicted = [json.loads(line) for line in edge_ner(
        "predict", str(artifacts["onnx-int8"]), *texts[:3], cwd=tmp_path).stdout.splitlines()]
    sentences, _ = read_span_file(out)
    assert len(sentences) == 3  # the empty text has no words
    assert sum(len(p["entities"]) for p in predicted) >= 3
    for sentence, expected in zip(sentences, predicted, strict=True):
        assert sentence.tags == tags_of(expected["text"], expected["entities"])
    if shape == "label-studio":
        tasks = json.loads(out.read_text(encoding="utf-8"))
        first = tasks[0]["predictions"][0]
        assert first["model_version"] == "onnx-int8"
        assert [r["score"] for r in first["result"]] == [
            e["score"] for e in predicted[0]["entities"]]


@pytest.mark.slow
def test_the_teacher_trains_on_a_span_folder_and_records_what_reading_it_changed(
        tmp_path, tiny_bert, conll_dir):
    folder = tmp_path / "doccano"
    convert(conll_dir, folder, "doccano")
    records = (folder / "train.jsonl").read_text(encoding="utf-8").splitlines()
    first = json.loads(records[0])
    first["label"].append([1, 4, "ORG"])  # "U rejects"-style cut through a word: widened
    records[0] = json.dumps(first)
    (folder / "train.jsonl").write_text("\n".join(records) + "\n", encoding="utf-8")
    args = ["--preset", "minilm", f"model={tiny_bert}", f"dataset={folder}", "run=spans",
            "train_limit=120", "eval_limit=40", "epochs=1", "batch_size=8", "max_length=32"]
    refused = run_module("teacher", *args, cwd=tmp_path)
    assert refused.returncode == 1 and "train.jsonl:1: span [1, 4)" in refused.stderr
    result = run_module("teacher", *args, "snap_spans=true", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "train spans: 14,041 texts, 23,499 entities; 1 spans widened" in result.stdout
    teacher = tmp_path / "runs" / "spans" / "teacher"
    recorded = json.loads((teacher / "manifest.json").read_text())["dataset"]
    assert recorded["snap_spans"] is True and "1 spans widened" in recorded["spans"]["train"]
    assert "1 spans widened" in (teacher / "README.md").read_text()


def test_evaluate_scores_a_span_folder_as_its_conll_twin(artifacts, tmp_path):  # noqa: F811
    """Words the runtime splits as CoNLL does: the two folders are the same data, and
    `edge-ner evaluate` gives the same scores, with the span counts beside them."""
    conll = tmp_path / "conll"
    conll.mkdir()
    sentences = [(["Angela", "Merkel", "met", "Bob", "in", "New", "York", "."],
                  ["B-PER", "I-PER", "O", "B-PER", "O", "B-LOC", "I-LOC", "O"]),
                 (["Contoso", "signed", "in", "Paris", "."], ["B-ORG", "O", "O", "B-LOC", "O"])]
    for split in ("train", "valid", "test"):
        (conll / f"{split}.txt").write_text("".join(
            "".join(f"{w} {t}\n" for w, t in zip(words, tags, strict=True)) + "\n"
            for words, tags in sentences), encoding="utf-8")
    convert(conll, tmp_path / "doccano", "doccano")
    scores = []
    for folder in (conll, tmp_path / "doccano"):
        result = edge_ner("evaluate", str(artifacts["onnx-int8"]), str(folder), "--json",
                          cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        scores.append(json.loads(result.stdout))
    assert scores[1]["data"].endswith("test.jsonl") and scores[1]["sentences"] == 2
    assert scores[1]["spans"] == "2 texts, 5 entities"
    for key in ("precision", "recall", "f1", "support", "per_type"):
        assert scores[1][key] == scores[0][key]


def test_a_named_shape_reads_its_own_records_and_refuses_others(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", [
        {"text": TEXT, "label": {"PER": {"Angela Merkel": [[0, 12]]}}}])
    (sentence,), _ = read_span_file(path, shape="cluener")
    assert sentence.tags[:2] == ["B-PER", "I-PER"]
    with pytest.raises(DataError, match="c.jsonl:1: not a doccano record"):
        read_span_file(path, shape="doccano")
    with pytest.raises(DataError, match="unknown span format 'brat'"):
        read_labelled(path, shape="brat")
