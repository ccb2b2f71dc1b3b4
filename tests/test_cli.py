"""The `edge-ner` command, run as a user runs it (the installed console script, in a
subprocess): predict, label, evaluate, info, exit codes, and the lean runtime with torch
and transformers unimportable."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from edgener.predictor import load_predictor
from tests.conftest import module_env
from tests.test_predictor import LABELS, TEXTS, artifacts  # noqa: F401 (a fixture)

EDGE_NER = Path(sys.executable).parent / "edge-ner"
# Starts the command with torch and transformers unimportable, as on a box with the base
# install only: `import torch` raises ModuleNotFoundError, as it would there.
WITHOUT_TRAINING_STACK = (
    "import sys\n"
    "from edgener.runtime.errors import EXTRA_OF_MODULE\n"
    "for name in EXTRA_OF_MODULE:\n"
    "    sys.modules[name] = None\n"
    "from edgener.cli.main import entry\n"
    "sys.argv[0] = 'edge-ner'\n"
    "entry()\n"
)


def edge_ner(*args: str, cwd: Path, stdin: str | None = None,
             lean: bool = False) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", WITHOUT_TRAINING_STACK] if lean else [str(EDGE_NER)]
    return subprocess.run([*command, *args], cwd=cwd, env=module_env(), capture_output=True,
                          text=True, encoding="utf-8", timeout=300, input=stdin)


def entity_dicts(folder: Path, texts: list[str]) -> list[list[dict]]:
    found = load_predictor(folder, threads=1).predict_batch(texts)
    return [[e.as_dict() for e in f] for f in found]


def test_predict_tags_arguments_and_stdin_lines(artifacts, tmp_path):  # noqa: F811
    result = edge_ner("predict", str(artifacts["onnx-fp32"]), TEXTS[0], TEXTS[1],
                      "--threads", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["text"] for line in lines] == TEXTS[:2]
    assert [line["entities"] for line in lines] == entity_dicts(artifacts["onnx-fp32"],
                                                                TEXTS[:2])

    piped = edge_ner("predict", str(artifacts["pytorch"]), cwd=tmp_path,
                     stdin=f"{TEXTS[2]}\n\n北京 and Zoë\n")
    assert piped.returncode == 0, piped.stderr
    lines = [json.loads(line) for line in piped.stdout.splitlines()]
    assert [line["text"] for line in lines] == [TEXTS[2], "", "北京 and Zoë"]
    assert lines[1]["entities"] == []


def test_lean_runtime_predicts_without_torch_or_transformers(artifacts, tmp_path):  # noqa: F811
    for kind in ("onnx-fp32", "onnx-int8"):
        result = edge_ner("predict", str(artifacts[kind]), *TEXTS, "--threads", "1",
                          cwd=tmp_path, lean=True)
        assert result.returncode == 0, result.stderr
        lines = [json.loads(line)["entities"] for line in result.stdout.splitlines()]
        assert lines == entity_dicts(artifacts[kind], TEXTS)
        assert sum(map(len, lines)) > 0


def test_without_the_training_stack_a_pytorch_artifact_or_a_stage_names_the_extra(
        artifacts, tmp_path):  # noqa: F811
    result = edge_ner("predict", str(artifacts["pytorch"]), "text", cwd=tmp_path, lean=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "pip install 'edge-ner[train]'" in result.stderr and "Traceback" not in result.stderr
    stage = edge_ner("teacher", "--quick", cwd=tmp_path, lean=True)
    assert stage.returncode == 1
    assert "pip install 'edge-ner[train]'" in stage.stderr and "Traceback" not in stage.stderr


def test_errors_are_one_line_with_exit_1_and_bad_usage_exits_2(tmp_path):
    missing = edge_ner("predict", str(tmp_path / "nothing"), "text", cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: ") and len(missing.stderr.splitlines()) == 1
    assert "Traceback" not in missing.stdout + missing.stderr
    assert edge_ner("predict", cwd=tmp_path).returncode == 2  # no artifact given
    assert edge_ner("no-such-command", cwd=tmp_path).returncode == 2
    for command in ("predict", "label", "evaluate", "info"):
        help_text = edge_ner(command, "--help", cwd=tmp_path)
        assert help_text.returncode == 0 and "usage: edge-ner " + command in help_text.stdout


def test_label_a_text_file_as_json_lines(artifacts, tmp_path):  # noqa: F811
    source = tmp_path / "texts.txt"
    # An editor's byte-order mark must not reach the first text.
    source.write_bytes("\ufeff".encode() + "\n".join(TEXTS).encode() + b"\r\n")
    out = tmp_path / "out.jsonl"
    result = edge_ner("label", str(artifacts["onnx-int8"]), str(source), "--output", str(out),
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [line["text"] for line in lines] == TEXTS
    assert [line["entities"] for line in lines] == entity_dicts(artifacts["onnx-int8"], TEXTS)


def test_label_a_conll_file_keeps_its_lines_and_appends_the_tag(artifacts, tmp_path):  # noqa: F811
    conll = ("-DOCSTART- -X- -X- O\n\n"
             "Maria NNP B-PER\nLopez NNP I-PER\nvisited VBD O\nParis NNP B-LOC\n\n"
             "  \n"
             "Contoso NNP B-ORG\nsigned VBD O\n")
    source = tmp_path / "in.conll"
    source.write_text(conll, encoding="utf-8")
    result = edge_ner("label", str(artifacts["onnx-fp32"]), str(source), "--format", "conll",
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    originals = conll.splitlines()
    assert len(lines) == len(originals)
    predictor = load_predictor(artifacts["onnx-fp32"], threads=1)
    expected = [tags for tags, _ in predictor.tag([["Maria", "Lopez", "visited", "Paris"],
                                                   ["Contoso", "signed"]])]
    word_lines = [(out, original) for out, original in zip(lines, originals, strict=True)
                  if original.strip() and not original.startswith("-DOCSTART-")]
    assert [out.rsplit(" ", 1)[0] for out, _ in word_lines] == [o for _, o in word_lines]
    assert [out.rsplit(" ", 1)[1] for out, _ in word_lines] == expected[0] + expected[1]
    assert lines[0] == originals[0] and lines[1] == "" and lines[6:8] == ["", "  "]


def conll_file(path: Path, sentences: list[tuple[list[str], list[str]]]) -> Path:
    path.write_text("".join("".join(f"{w} {t}\n" for w, t in zip(words, tags, strict=True))
                            + "\n" for words, tags in sentences), encoding="utf-8")
    return path


def test_evaluate_scores_a_conll_file(artifacts, tmp_path):  # noqa: F811
    predictor = load_predictor(artifacts["onnx-fp32"], threads=1)
    sentences = [s.split() for s in TEXTS]
    predicted = [tags for tags, _ in predictor.tag(sentences)]
    assert any(tag != "O" for tags in predicted for tag in tags)
    # Gold equal to the model's own tags scores 100; gold with no entity scores 0 with
    # every predicted entity a false positive.
    perfect = conll_file(tmp_path / "perfect.txt", list(zip(sentences, predicted, strict=True)))
    result = edge_ner("evaluate", str(artifacts["onnx-fp32"]), str(perfect), "--json",
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    assert (scores["precision"], scores["recall"], scores["f1"]) == (1.0, 1.0, 1.0)
    assert scores["sentences"] == 3
    empty = conll_file(tmp_path / "none.txt", [(s, ["O"] * len(s)) for s in sentences])
    scores = json.loads(edge_ner("evaluate", str(artifacts["onnx-fp32"]), str(empty), "--json",
                                 cwd=tmp_path).stdout)
    assert scores["f1"] == 0.0 and scores["support"] == 0
    table = edge_ner("evaluate", str(artifacts["onnx-fp32"]), str(perfect), cwd=tmp_path)
    assert table.returncode == 0 and "100.00" in table.stdout and "all" in table.stdout


def test_evaluate_says_how_much_of_the_data_the_vocabulary_cannot_read(artifacts, tmp_path):  # noqa: F811,E501
    # MiniLM's vocabulary: "paris", "is", "big" known; the snowman and 㐀 (a rare CJK
    # character) are not.
    data = conll_file(tmp_path / "mixed.txt", [(["Paris", "☃", "is", "big"],
                                                ["B-LOC", "O", "O", "O"]),
                                               (["㐀", "☃"], ["O", "O"])])
    result = edge_ner("evaluate", str(artifacts["onnx-fp32"]), str(data), "--json",
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    vocabulary = json.loads(result.stdout)["vocabulary"]
    assert (vocabulary["tokens"], vocabulary["unknown_tokens"]) == (6, 3)
    assert vocabulary["unknown_token_share"] == 0.5
    assert vocabulary["top_unknown"] == [["☃", 2], ["㐀", 1]]
    table = edge_ner("evaluate", str(artifacts["onnx-fp32"]), str(data), cwd=tmp_path)
    assert "vocabulary: 50.0% of subword tokens and 50.0% of words are [UNK] " \
           "(most frequent: ☃ 㐀)" in table.stdout


def test_evaluate_reads_a_dataset_folders_test_split(artifacts, tmp_path):  # noqa: F811
    folder = tmp_path / "my-ner"
    folder.mkdir()
    conll_file(folder / "test.txt", [(["Paris", "is", "big"], ["B-LOC", "O", "O"])])
    result = edge_ner("evaluate", str(artifacts["onnx-fp32"]), str(folder), "--json",
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    assert scores["data"].endswith("test.txt") and scores["support"] == 1


def test_info_says_what_the_artifact_is(artifacts, tmp_path):  # noqa: F811
    result = edge_ner("info", str(artifacts["onnx-int8"]), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["backend"] == "onnxruntime" and facts["precision"] == "int8"
    assert facts["labels"] == LABELS
    assert facts["encoding"] == {"max_length": 16, "window_overlap": 4, "case_features": False,
                                 "context_tokens": 0, "pack_documents": False}
    plain = edge_ner("info", str(artifacts["onnx-int8"]), cwd=tmp_path)
    assert plain.returncode == 0 and "onnxruntime" in plain.stdout


def test_stage_commands_keep_their_options(tmp_path):
    result = edge_ner("quantize", "--help", cwd=tmp_path)
    assert result.returncode == 0 and "--quick" in result.stdout


def test_info_verify_names_a_corrupted_file_and_loading_catches_a_truncated_one(
        artifacts, tmp_path):  # noqa: F811
    import shutil

    from edgener.runtime.artifacts import file_records, read_json, write_json_atomic

    folder = tmp_path / "copy"
    shutil.copytree(artifacts["onnx-int8"], folder)
    manifest = read_json(folder / "manifest.json")
    write_json_atomic(folder / "manifest.json", {**manifest, "files": file_records(folder)})
    assert edge_ner("info", str(folder), "--verify", cwd=tmp_path).returncode == 0
    model = folder / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    model.write_bytes(bytes(data))
    flipped = edge_ner("info", str(folder), "--verify", cwd=tmp_path)
    assert flipped.returncode == 1 and "model.onnx" in flipped.stderr
    assert "make quantize ARGS=--fresh" in flipped.stderr
    model.write_bytes(bytes(data[: len(data) // 2]))  # an interrupted copy
    truncated = edge_ner("predict", str(folder), "Paris", cwd=tmp_path)
    assert truncated.returncode == 1 and "model.onnx" in truncated.stderr
    assert "Traceback" not in truncated.stderr


def test_label_takes_bare_tokens_tabs_crlf_and_a_byte_order_mark(artifacts, tmp_path):  # noqa: F811
    """Unlabelled input is usually a token a line; tab-separated columns keep tabs."""
    source = tmp_path / "bare.conll"
    source.write_bytes("\ufeffMaria\r\nLopez\r\n\r\nParis\tNNP\r\n".encode())
    result = edge_ner("label", str(artifacts["onnx-fp32"]), str(source), "--format", "conll",
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    predictor = load_predictor(artifacts["onnx-fp32"], threads=1)
    (first, _), (second, _) = predictor.tag([["Maria", "Lopez"], ["Paris"]])
    assert result.stdout.splitlines() == [f"Maria {first[0]}", f"Lopez {first[1]}", "",
                                          f"Paris\tNNP\t{second[0]}"]


def test_predict_reads_stdin_as_utf8_without_its_byte_order_mark(artifacts, tmp_path):  # noqa: F811
    command = [str(EDGE_NER), "predict", str(artifacts["onnx-fp32"])]
    result = subprocess.run(command, input="\ufeff".encode() + TEXTS[0].encode(), cwd=tmp_path,
                            env=module_env(), capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (line,) = [json.loads(x) for x in result.stdout.decode().splitlines()]
    assert line["text"] == TEXTS[0]
    assert line["entities"] == entity_dicts(artifacts["onnx-fp32"], TEXTS[:1])[0]
    broken = subprocess.run(command, input=b"Paris\n\xff\xfe bad\n", cwd=tmp_path,
                            env=module_env(), capture_output=True, timeout=300)
    assert broken.returncode == 1
    assert broken.stderr.decode().strip() == "error: stdin:2: not valid UTF-8 (byte 0xff at "\
        "column 1)"


def test_bad_values_and_paths_are_one_line(artifacts, tmp_path):  # noqa: F811
    folder = str(artifacts["onnx-fp32"])
    assert edge_ner("predict", folder, "x", "--max-batch-tokens", "0", cwd=tmp_path).returncode == 2
    source = tmp_path / "texts.txt"
    source.write_text("Paris\n", encoding="utf-8")
    for output in (str(tmp_path), str(source)):  # a folder; the input itself
        result = edge_ner("label", folder, str(source), "--output", output, cwd=tmp_path)
        assert result.returncode == 1 and len(result.stderr.splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
    assert source.read_text(encoding="utf-8") == "Paris\n"


def test_the_scores_table_of_data_without_entities():
    from rich.console import Console

    from edgener.cli.commands import scores_table
    from edgener.runtime.metrics import entity_scores

    console = Console(record=True, width=100)
    console.print(scores_table(entity_scores([["O", "O"]], [["O", "O"]]), "none"))
    text = console.export_text()
    assert "all" in text and "0.00" in text and "PER" not in text


def test_stage_arguments_reach_the_stage(tmp_path):
    result = edge_ner("quantize", "run=none", cwd=tmp_path)
    assert result.returncode == 1
    assert "make teacher" in result.stderr and "Traceback" not in result.stderr
    assert "usage: edge-ner quantize" in edge_ner("quantize", "--help", cwd=tmp_path).stdout


def test_the_lean_path_tags_as_the_transformers_tokenizer_path(artifacts):  # noqa: F811
    """The runtime's encoder (tokenizer.json alone) against the one built from the
    transformers tokenizer, through the same model: the same tags on every sentence."""
    from transformers import AutoTokenizer

    from edgener.predictor import Predictor, open_predictor
    from edgener.runtime.encoding import Encoder

    lean = open_predictor(artifacts["onnx-int8"], threads=1)
    encoder = Encoder.from_transformers(AutoTokenizer.from_pretrained(artifacts["onnx-int8"]),
                                        LABELS, **lean.manifest["encoding"])
    full = Predictor(lean.backend, encoder, LABELS, lean.manifest)
    texts = TEXTS + ["Zoë ＡＢＣ café naïve \u00a0 Æsir ﬁnance", "x" * 300, "İstanbul ǅemal"]
    assert lean.predict_batch(texts) == full.predict_batch(texts)
    assert sum(map(len, lean.predict_batch(texts))) > 0


def test_error_paths_of_label_info_and_evaluate_are_one_line(artifacts, tmp_path):  # noqa: F811
    artifact = artifacts["onnx-int8"]

    def one_line_error(*args: str) -> str:
        result = edge_ner(*args, cwd=tmp_path)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
        return result.stderr

    assert "no input file at nothing.txt" in one_line_error("label", str(artifact), "nothing.txt")
    assert "no input at nothing.jsonl" in one_line_error(
        "label", str(artifact), "nothing.jsonl", "--output", "out")
    unrecorded = tmp_path / "unrecorded"
    shutil.copytree(artifact, unrecorded)
    manifest = json.loads((unrecorded / "manifest.json").read_text())
    manifest.pop("files", None)
    (unrecorded / "manifest.json").write_text(json.dumps(manifest))
    assert "records no file hashes" in one_line_error("info", str(unrecorded), "--verify")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(artifact, corrupt)
    (corrupt / "metrics.json").write_text("{bad", encoding="utf-8")
    assert f"{corrupt}/metrics.json is corrupt" in one_line_error("info", str(corrupt))
    # --split picks the file of a dataset folder: dev.txt for valid; a split it lacks is named.
    data = tmp_path / "data"
    data.mkdir()
    sentences = [(["Angela", "Merkel", "visited", "Paris"], ["B-PER", "I-PER", "O", "B-LOC"])]
    conll_file(data / "dev.txt", sentences)
    scored = edge_ner("evaluate", str(artifact), str(data), "--split", "valid", "--json",
                      cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr
    report = json.loads(scored.stdout)
    assert report["data"] == str(data / "dev.txt") and report["sentences"] == 1
    assert "no test file (looked for test.txt" in one_line_error("evaluate", str(artifact),
                                                                 str(data))
