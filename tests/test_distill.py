"""The distill stage: layer matches, student init, masked KD loss, the teacher cache, and an
end-to-end run of `python -m distill` on a tiny teacher."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForTokenClassification

from distill.augment import mention_replaced
from distill.distiller import (
    DistillStep,
    TeacherCache,
    hard_label_loss,
    make_distiller,
    real_token_mask,
    student_adaptor,
    teacher_adaptor,
    teacher_outputs,
)
from distill.students import (
    StudentSpec,
    build_student,
    derive_matches,
    layer_map,
    student_config,
)
from distill.train import check_init_sources, print_students
from edgener.runtime.conll import Sentence
from edgener.runtime.encoding import IGNORE_INDEX, Window
from edgener.training.config import ConfigError
from edgener.training.loop import collate
from tests.conftest import module_env, run_module
from tests.test_teacher import tiny_args

PAD, CLS, SEP = 0, 1, 2
NUM_LABELS = 5
CPU = torch.device("cpu")
X = IGNORE_INDEX


def bert_config(layers: int = 2, hidden: int = 16, heads: int = 2, intermediate: int = 32
                ) -> BertConfig:
    return BertConfig(vocab_size=100, hidden_size=hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, intermediate_size=intermediate,
                      num_labels=NUM_LABELS, max_position_embeddings=32,
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                      # Far from BERT's 0.02, so that each layer visibly changes the hidden
                      # states and a mix-up of layers shows in the losses.
                      initializer_range=0.5)


def tiny_model(seed: int, **shape) -> BertForTokenClassification:
    torch.manual_seed(seed)
    return BertForTokenClassification(bert_config(**shape)).eval()


def window(words: list[list[int]], tags: list[int]) -> Window:
    """[CLS] subwords... [SEP], the label on each word's first subword."""
    ids, labels = [CLS], [X]
    for pieces, tag in zip(words, tags, strict=True):
        ids += pieces
        labels += [tag] + [X] * (len(pieces) - 1)
    ids.append(SEP)
    labels.append(X)
    return Window(0, ids, [0] * len(ids), labels, [-1] * len(ids))


# Lengths 7, 4 and 5 tokens: the shorter ones are padded in a batch with the first.
WINDOWS = [
    window([[10, 11], [12], [13, 14]], [1, 0, 3]),  # two words split into subwords
    window([[20], [21]], [2, 4]),
    window([[30], [31, 32]], [0, 1]),
]


# --- matches -------------------------------------------------------------------------------

@pytest.mark.parametrize(("student", "teacher", "expected"), [
    (3, 6, [0, 2, 4, 6]),
    (4, 6, [0, 2, 3, 5, 6]),  # 1.5 -> 2 and 4.5 -> 5: halves round up
    (2, 12, [0, 6, 12]),
    (6, 6, [0, 1, 2, 3, 4, 5, 6]),
    (1, 2, [0, 2]),
])
def test_layer_map(student, teacher, expected):
    assert layer_map(student, teacher) == expected


def test_matches_at_equal_width_have_no_projection():
    student, teacher = bert_config(layers=3), bert_config(layers=6)
    matches = derive_matches(student, teacher, "hidden_mse", 0.5)
    assert matches == [
        {"layer_T": t, "layer_S": s, "feature": "hidden", "loss": "hidden_mse", "weight": 0.5}
        for s, t in [(0, 0), (1, 2), (2, 4), (3, 6)]
    ]


def test_matches_at_unequal_width_project_student_to_teacher():
    student = bert_config(layers=4, hidden=8, heads=1, intermediate=16)
    teacher = bert_config(layers=6, hidden=16)
    matches = derive_matches(student, teacher, "hidden_mse", 1.0)
    assert [(m["layer_S"], m["layer_T"]) for m in matches] == [
        (0, 0), (1, 2), (2, 3), (3, 5), (4, 6)]
    assert all(m["proj"] == ["linear", 8, 16, {}] for m in matches)


def test_student_config_keeps_head_size_and_scales_ffn():
    teacher = bert_config(layers=6, hidden=16, heads=2, intermediate=32)  # heads of 8
    config = student_config(teacher, StudentSpec(layers=3, hidden_size=8))
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
            config.intermediate_size) == (3, 8, 1, 16)
    assert (teacher.num_hidden_layers, teacher.hidden_size) == (6, 16)  # left alone
    with pytest.raises(ValueError, match="not divisible"):
        student_config(teacher, StudentSpec(layers=1, hidden_size=12, heads=5))


# --- student init --------------------------------------------------------------------------

def test_half_depth_student_takes_alternate_teacher_layers():
    teacher = tiny_model(0, layers=6)
    student, copied = build_student(teacher, StudentSpec(layers=3), seed=1)
    assert student.config.num_hidden_layers == 3
    t_layers, s_layers = teacher.bert.encoder.layer, student.bert.encoder.layer
    for j, t in [(0, 1), (1, 3), (2, 5)]:
        for name, tensor in s_layers[j].state_dict().items():
            assert torch.equal(tensor, t_layers[t].state_dict()[name]), (j, name)
        assert copied[f"bert.encoder.layer.{j}.output.dense.weight"] == \
            f"bert.encoder.layer.{t}.output.dense.weight"
    # Random teacher layers differ, so the above really tells the source layer apart.
    q = s_layers[0].attention.self.query.weight
    assert not torch.equal(q, t_layers[0].attention.self.query.weight)
    for name, tensor in student.bert.embeddings.state_dict().items():
        assert torch.equal(tensor, teacher.bert.embeddings.state_dict()[name]), name
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    assert torch.equal(student.classifier.bias, teacher.classifier.bias)
    assert {name for name, _ in student.named_parameters()} <= set(copied)


def test_narrow_student_takes_leading_slices_outside_the_feed_forward():
    teacher = tiny_model(0, layers=6, hidden=16, heads=2, intermediate=32)
    spec = StudentSpec(layers=3, hidden_size=8, heads=1, intermediate_size=16)
    student, _ = build_student(teacher, spec, seed=1)
    s, t = student.bert.encoder.layer[1], teacher.bert.encoder.layer[3]
    pairs = [
        (s.attention.self.query.weight, t.attention.self.query.weight[:8, :8]),
        (s.attention.self.query.bias, t.attention.self.query.bias[:8]),
        (s.attention.self.value.weight, t.attention.self.value.weight[:8, :8]),
        (s.attention.output.dense.weight, t.attention.output.dense.weight[:8, :8]),
        (s.attention.output.LayerNorm.weight, t.attention.output.LayerNorm.weight[:8]),
        (student.bert.embeddings.word_embeddings.weight,
         teacher.bert.embeddings.word_embeddings.weight[:, :8]),
        (student.bert.embeddings.position_embeddings.weight,
         teacher.bert.embeddings.position_embeddings.weight[:, :8]),
        (student.classifier.weight, teacher.classifier.weight[:, :8]),
        (student.classifier.bias, teacher.classifier.bias),
    ]
    for got, want in pairs:
        assert got.shape == want.shape
        assert torch.equal(got, want)


def test_narrower_feed_forward_keeps_the_strongest_neurons_in_order():
    teacher = tiny_model(0, layers=2, hidden=16, heads=2, intermediate=32)
    strong = [3, 10, 20, 31]  # planted: far larger input and output weights than the rest
    with torch.no_grad():
        for layer in teacher.bert.encoder.layer:
            layer.intermediate.dense.weight[strong] *= 50
            layer.output.dense.weight[:, strong] *= 50
    student, _ = build_student(teacher, StudentSpec(layers=2, intermediate_size=4), seed=1)
    for s, t in zip(student.bert.encoder.layer, teacher.bert.encoder.layer, strict=True):
        assert torch.equal(s.intermediate.dense.weight, t.intermediate.dense.weight[strong])
        assert torch.equal(s.intermediate.dense.bias, t.intermediate.dense.bias[strong])
        assert torch.equal(s.output.dense.weight, t.output.dense.weight[:, strong])
        assert torch.equal(s.output.dense.bias, t.output.dense.bias)  # hidden-sized: whole


def test_pruned_student_starts_from_the_source_student_not_the_teacher():
    teacher = tiny_model(0, layers=4, hidden=16, heads=2, intermediate=32)
    source = tiny_model(5, layers=2, hidden=16, heads=2, intermediate=32)  # a trained student
    strong = [1, 7, 30]
    with torch.no_grad():
        for layer in source.bert.encoder.layer:
            layer.intermediate.dense.weight[strong] *= 50
            layer.output.dense.weight[:, strong] *= 50
    spec = StudentSpec(layers=2, intermediate_size=3, init_from="S")
    student, copied = build_student(teacher, spec, seed=1, source=source)
    # Same depth as the source: layer j from layer j, its feed-forward cut to the strongest.
    assert copied["bert.encoder.layer.1.output.dense.weight"] == \
        "bert.encoder.layer.1.output.dense.weight"
    for s, src in zip(student.bert.encoder.layer, source.bert.encoder.layer, strict=True):
        assert torch.equal(s.intermediate.dense.weight, src.intermediate.dense.weight[strong])
        assert torch.equal(s.output.dense.weight, src.output.dense.weight[:, strong])
        assert torch.equal(s.attention.self.key.weight, src.attention.self.key.weight)
    assert torch.equal(student.classifier.weight, source.classifier.weight)
    assert not torch.equal(student.classifier.weight, teacher.classifier.weight)
    # The shape still follows the spec relative to the teacher.
    assert student.config.intermediate_size == 3
    assert student.config.num_attention_heads == teacher.config.num_attention_heads


@pytest.mark.parametrize(("students", "message"), [
    ({"P": StudentSpec(layers=1, init_from="P")}, "names itself"),
    ({"P": StudentSpec(layers=1, init_from="S"), "S": StudentSpec(layers=2)}, "list the source"),
])
def test_init_sources_must_be_trained_first(students, message):
    with pytest.raises(ConfigError, match=message):
        check_init_sources(students)


# --- loss ----------------------------------------------------------------------------------

def test_real_token_mask_drops_padding_cls_and_sep():
    batch = collate(WINDOWS, PAD)
    expected = torch.tensor([
        [0, 1, 1, 1, 1, 1, 0],
        [0, 1, 1, 0, 0, 0, 0],
        [0, 1, 1, 1, 0, 0, 0],
    ], dtype=torch.bool)
    assert torch.equal(real_token_mask(batch, [CLS, SEP]), expected)


def test_real_token_mask_leaves_a_bool_attention_mask_alone():
    batch = collate(WINDOWS, PAD)
    batch["attention_mask"] = batch["attention_mask"].bool()
    before = batch["attention_mask"].clone()
    real_token_mask(batch, [CLS, SEP])
    assert torch.equal(batch["attention_mask"], before)


def test_hard_label_loss():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, NUM_LABELS, requires_grad=True)
    labels = torch.tensor([[X, 2, X], [4, X, X]])
    expected = -(torch.log_softmax(logits[0, 1], -1)[2] + torch.log_softmax(logits[1, 0], -1)[4]
                 ) / 2
    assert torch.allclose(hard_label_loss(logits, labels), expected)
    none = hard_label_loss(logits, torch.full((2, 3), X))
    assert torch.isfinite(none) and none.item() == 0.0
    none.backward()  # an unlabeled batch still trains on the other losses
    assert torch.isfinite(logits.grad).all()


def distill_batch(windows=WINDOWS) -> dict:
    batch = collate(windows, PAD)
    batch["logits_mask"] = real_token_mask(batch, [CLS, SEP])
    return batch


def test_kd_loss_ignores_padding_and_special_tokens(tmp_path):
    teacher = tiny_model(0, layers=2)
    student = tiny_model(1, layers=1)
    matches = derive_matches(student.config, teacher.config, "hidden_mse", 1.0)
    distiller = make_distiller(teacher, student, matches, 2.0, 1.0, 1.0, str(tmp_path), CPU)
    batch = distill_batch(WINDOWS[:2])  # lengths 7 and 4
    mask = batch["logits_mask"]
    with torch.no_grad():
        student_out = student(**{k: batch[k] for k in ("input_ids", "attention_mask",
                                                       "token_type_ids")},
                              output_hidden_states=True)
        teacher_out = teacher_outputs(teacher, batch, CPU)

    def loss(s_logits, t_logits):
        s = SimpleNamespace(logits=s_logits, hidden_states=student_out.hidden_states)
        t = {"logits": t_logits, "hidden": teacher_out["hidden"]}
        return distiller.compute_loss(student_adaptor(batch, s), teacher_adaptor(batch, t))

    s_logits, t_logits = student_out.logits, teacher_out["logits"]
    total, parts = loss(s_logits, t_logits)

    # The KD term by hand: cross-entropy of T=2 softened distributions over the 7 real tokens.
    assert int(mask.sum()) == 5 + 2
    p_t = F.softmax(t_logits[mask] / 2.0, -1)
    expected_kd = -(p_t * F.log_softmax(s_logits[mask] / 2.0, -1)).sum(-1).mean()
    assert torch.allclose(parts["unweighted_kd_loss"], expected_kd, atol=1e-6)

    generator = torch.Generator().manual_seed(7)
    garbage_s, garbage_t = s_logits.clone(), t_logits.clone()
    garbage_s[~mask] = 50 * torch.randn(int((~mask).sum()), NUM_LABELS, generator=generator)
    garbage_t[~mask] = 50 * torch.randn(int((~mask).sum()), NUM_LABELS, generator=generator)
    total_garbage, parts_garbage = loss(garbage_s, garbage_t)
    assert torch.allclose(parts_garbage["unweighted_kd_loss"], parts["unweighted_kd_loss"])
    assert torch.allclose(total_garbage, total)

    # The same garbage at a real token does change the loss (the check above can fail).
    real = s_logits.clone()
    real[0, 2] = garbage_s[0, 0]
    assert not torch.allclose(loss(real, t_logits)[0], total)


# --- projections and the step ---------------------------------------------------------------

def test_narrow_student_gets_trainable_projections(tmp_path):
    teacher = tiny_model(0, layers=2, hidden=16, heads=2, intermediate=32)
    student, _ = build_student(teacher, StudentSpec(layers=1, hidden_size=8), seed=1)
    matches = derive_matches(student.config, teacher.config, "hidden_mse", 1.0)
    distiller = make_distiller(teacher, student, matches, 4.0, 1.0, 1.0, str(tmp_path), CPU)
    assert len(distiller.projs) == 2  # embeddings and the one layer
    for proj in distiller.projs:
        assert isinstance(proj, torch.nn.Linear)
        assert proj.weight.shape == (16, 8)  # student width in, teacher width out

    step = DistillStep(distiller, WINDOWS, PAD, [CLS, SEP], CPU, cache=None)
    params = {id(p) for p in step.parameters()}
    for proj in distiller.projs:
        assert id(proj.weight) in params and id(proj.bias) in params
    assert all(id(p) in params for p in student.parameters())
    assert not any(id(p) in params for p in teacher.parameters())  # the teacher stays fixed
    assert set(step.state_dict()) >= {"projections.0.weight", "projections.1.bias"}

    loss = step([0, 1, 2])
    loss.backward()
    for proj in distiller.projs:
        assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0


def test_equal_width_student_has_no_projections(tmp_path):
    teacher = tiny_model(0, layers=2)
    student, _ = build_student(teacher, StudentSpec(layers=1), seed=1)
    matches = derive_matches(student.config, teacher.config, "hidden_mse", 1.0)
    distiller = make_distiller(teacher, student, matches, 4.0, 1.0, 1.0, str(tmp_path), CPU)
    step = DistillStep(distiller, WINDOWS, PAD, [CLS, SEP], CPU, cache=None)
    assert len(step.projections) == 0
    assert sum(p.numel() for p in step.parameters()) == \
        sum(p.numel() for p in student.parameters())


# --- the teacher cache ----------------------------------------------------------------------

def more_windows() -> list[Window]:
    torch.manual_seed(3)
    out = []
    for n in (1, 6, 3, 9, 2):
        words = [[int(v)] for v in torch.randint(5, 100, (n,))]
        out.append(window(words, [i % NUM_LABELS for i in range(n)]))
    return [*WINDOWS, *out]


def test_cache_matches_the_online_teacher():
    teacher = tiny_model(0, layers=2)
    windows = more_windows()
    # Batched two at a time, longest first: every window padded differently from below.
    cache = TeacherCache(teacher, windows, [2, 0], max_tokens=32, device=CPU, pad_id=PAD)
    for indices in ([0, 1, 2], [7, 3], [4], [6, 5, 1]):
        batch = collate([windows[i] for i in indices], PAD)
        width = batch["input_ids"].shape[1]
        cached = cache.batch(indices, width, CPU)
        with torch.no_grad():
            online = teacher_outputs(teacher, batch, CPU)
        assert len(cached["hidden"]) == 3  # embeddings + 2 layers
        assert cached["hidden"][1] is None
        assert cached["logits"].shape == online["logits"].shape
        for row, index in enumerate(indices):
            n = len(windows[index].input_ids)
            assert torch.allclose(cached["logits"][row, :n], online["logits"][row, :n],
                                  atol=1e-5)
            for layer in (0, 2):
                assert cached["hidden"][layer].shape == online["hidden"][layer].shape
                assert torch.allclose(cached["hidden"][layer][row, :n],
                                      online["hidden"][layer][row, :n], atol=1e-5)


def test_cached_and_online_steps_give_the_same_loss(tmp_path):
    teacher = tiny_model(0, layers=2)
    windows = more_windows()
    losses = []
    for cached in (False, True):
        student, _ = build_student(teacher, StudentSpec(layers=1), seed=1)
        matches = derive_matches(student.config, teacher.config, "hidden_mse", 1.0)
        distiller = make_distiller(teacher, student, matches, 4.0, 1.0, 1.0, str(tmp_path),
                                   CPU)
        cache = TeacherCache(teacher, windows, [0, 2], 64, CPU, PAD) if cached else None
        step = DistillStep(distiller, windows, PAD, [CLS, SEP], CPU, cache)
        with torch.no_grad():
            losses.append(step([5, 0, 7, 2]))
    assert torch.allclose(losses[0], losses[1], atol=1e-5)


def test_students_table_survives_a_zero_f1_teacher(tmp_path, capsys):
    row = {"test": {"f1": 0.0}, "params": 1_000_000, "wall_time_s": 6.0}
    print_students([row | {"name": "S1"}, row | {"name": "S1-baseline"}], 0.0, tmp_path)
    assert "S1-baseline" in capsys.readouterr().out


# --- end to end -----------------------------------------------------------------------------

STUDENTS_YAML = """\
students:
  S1:
    layers: 1
  N1:
    layers: 1
    hidden_size: 16
    heads: 2
    intermediate_size: 32
epochs: 1
batch_size: 8
lr: 1.0e-3
checkpoint_every: 5
"""
OUTPUTS = ("S1", "S1-baseline", "N1", "N1-baseline")
# One torch thread: on a small machine that is busy with something else, two threads per
# process can make these runs several times slower.
THREADS = "threads=1"


def distill_args(workdir: Path, conll_dir: Path, run: str) -> list[str]:
    preset = workdir / "students.yaml"
    preset.write_text(STUDENTS_YAML)
    return ["--preset", str(preset), f"run={run}", f"data_dir={conll_dir.parent}",
            "train_limit=120", "eval_limit=60", THREADS]


def read(path: Path):
    return json.loads(path.read_text())


def assert_exit_0(result) -> None:
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


def table_names(stdout: str) -> list[str]:
    """The first cell of each row of the students table."""
    table = stdout[stdout.index("Students (teacher test F1"):]
    rows = [re.split(r"[│|]", line)[1].strip() for line in table.splitlines()
            if re.match(r"\s*[│|]", line)]
    return [name for name in rows if name != "student"]


@pytest.fixture(scope="module")
def distill_run(tmp_path_factory, tiny_bert, conll_dir):
    """A tiny teacher, then two tiny students (and their baselines) distilled from it."""
    workdir = tmp_path_factory.mktemp("distill")
    teacher = run_module("teacher", *tiny_args(tiny_bert, conll_dir, "d", "epochs=1", THREADS),
                         cwd=workdir)
    assert teacher.returncode == 0, teacher.stdout + teacher.stderr
    result = run_module("distill", *distill_args(workdir, conll_dir, "d"), cwd=workdir)
    assert "Traceback" not in result.stderr, result.stderr[-4000:]
    return workdir, result


@pytest.fixture(scope="module")
def rerun(distill_run, conll_dir):
    workdir, _ = distill_run
    students = workdir / "runs" / "d" / "students"
    before = {name: (students / name / "metrics.json").read_text() for name in OUTPUTS
              if (students / name / "metrics.json").is_file()}
    result = run_module("distill", *distill_args(workdir, conll_dir, "d"), cwd=workdir)
    return result, before


@pytest.mark.slow
def test_distill_exits_0_and_tables_each_student(distill_run):
    workdir, result = distill_run
    assert_exit_0(result)
    assert sorted(table_names(result.stdout)) == sorted(OUTPUTS)


@pytest.mark.slow
def test_distill_publishes_students_and_baselines(distill_run):
    workdir, _ = distill_run
    run_dir = workdir / "runs" / "d"
    teacher_metrics = read(run_dir / "teacher" / "metrics.json")
    teacher_params = read(run_dir / "teacher" / "manifest.json")["params"]
    params = {}
    for name in OUTPUTS:
        folder = run_dir / "students" / name
        for file in ("model.safetensors", "labels.json", "manifest.json", "metrics.json"):
            assert (folder / file).is_file(), (name, file)
        assert read(folder / "labels.json") == read(run_dir / "teacher" / "labels.json")
        metrics = read(folder / "metrics.json")
        for split in ("valid", "test"):
            assert 0.0 <= metrics[split]["f1"] <= 1.0, (name, split)
        assert isinstance(metrics["params"], int) and metrics["params"] > 0
        assert metrics["teacher_test_f1"] == teacher_metrics["test"]["f1"]
        params[name] = metrics["params"]
        manifest = read(folder / "manifest.json")
        assert manifest["stage"] == "student"
        assert manifest["distilled"] is not name.endswith("-baseline")
        assert manifest["layers"] == 1
        assert manifest["hidden_size"] == (16 if name.startswith("N1") else 32)
        if name.endswith("-baseline"):
            assert manifest["matches"] == []
    # One layer of the teacher's two, and then narrower.
    assert params["N1"] < params["S1"] < teacher_params
    assert params["S1"] == params["S1-baseline"] and params["N1"] == params["N1-baseline"]
    students = run_dir / "students"
    assert not [p.name for p in students.iterdir() if "staging" in p.name]
    # Distillation trained something else than hard labels alone.
    for name in ("S1", "N1"):
        assert (students / name / "model.safetensors").read_bytes() != \
            (students / f"{name}-baseline" / "model.safetensors").read_bytes()


@pytest.mark.slow
def test_distilled_manifests_record_matches(distill_run):
    workdir, _ = distill_run
    students = workdir / "runs" / "d" / "students"
    # One student layer against a two-layer teacher: embeddings to embeddings, last to last.
    for name, proj in (("S1", None), ("N1", ["linear", 16, 32, {}])):
        manifest = read(students / name / "manifest.json")
        assert manifest["distilled"] is True
        matches = manifest["matches"]
        assert [(m["layer_S"], m["layer_T"]) for m in matches] == [(0, 0), (1, 2)]
        assert all(m.get("proj") == proj for m in matches), name
        assert all(m["feature"] == "hidden" for m in matches)


@pytest.mark.slow
def test_rerun_is_up_to_date(distill_run, rerun):
    workdir, _ = distill_run
    result, before = rerun
    students = workdir / "runs" / "d" / "students"
    assert result.stdout.count("up to date") == len(OUTPUTS), result.stdout
    assert sorted(before) == sorted(OUTPUTS)
    for name in OUTPUTS:
        assert (students / name / "metrics.json").read_text() == before[name]
    assert_exit_0(result)
    assert sorted(table_names(result.stdout)) == sorted(OUTPUTS)


@pytest.mark.slow
def test_missing_teacher_is_one_clear_line(tmp_path, conll_dir):
    result = run_module("distill", *distill_args(tmp_path, conll_dir, "none"), cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "make teacher" in lines[0]
    assert not (tmp_path / "runs" / "none" / "students").exists()


def one_student_args(workdir: Path, conll_dir: Path, run: str, *extra: str) -> list[str]:
    return [*distill_args(workdir, conll_dir, run), "only=[S1]", "baselines=false", *extra]


@pytest.fixture
def teacher_copy(distill_run, tmp_path) -> Path:
    """A fresh work folder holding the tiny teacher (run 'd') and nothing else."""
    workdir, _ = distill_run
    shutil.copytree(workdir / "runs" / "d" / "teacher", tmp_path / "runs" / "d" / "teacher")
    return tmp_path


@pytest.fixture(scope="module")
def one_student_reference(distill_run, tmp_path_factory, conll_dir) -> dict:
    """The metrics of S1 distilled alone, uninterrupted, in one process."""
    workdir = tmp_path_factory.mktemp("one-student")
    shutil.copytree(distill_run[0] / "runs" / "d" / "teacher", workdir / "runs" / "d" / "teacher")
    result = run_module("distill", *one_student_args(workdir, conll_dir, "d"), cwd=workdir)
    assert_exit_0(result)
    return read(workdir / "runs/d/students/S1/metrics.json")


@pytest.mark.slow
def test_unlabeled_text_adds_soft_labelled_windows(teacher_copy, conll_dir):
    text = teacher_copy / "extra.txt"
    text.write_text("Angela Merkel met Emmanuel Macron in Paris.\n\n"
                    "Shares of Siemens rose 3% on Tuesday.\nZürich is lovely 🙂 in May\n",
                    encoding="utf-8")
    result = run_module("distill", *one_student_args(teacher_copy, conll_dir, "d",
                                                     f"unlabeled_text={text}"),
                        cwd=teacher_copy)
    assert_exit_0(result)
    assert "+ 3 unlabeled windows" in result.stdout  # the blank line is skipped
    manifest = read(teacher_copy / "runs/d/students/S1/manifest.json")
    assert manifest["unlabeled_windows"] == 3


@pytest.mark.slow
def test_augmented_copies_train_only_the_student_that_asks(teacher_copy, conll_dir):
    (teacher_copy / "students.yaml").write_text(STUDENTS_YAML.replace(
        "  S1:\n    layers: 1\n", "  S1:\n    layers: 1\n    augment_copies: 2\n"))
    args = ["--preset", str(teacher_copy / "students.yaml"), "run=d",
            f"data_dir={conll_dir.parent}", "train_limit=120", "eval_limit=60", THREADS,
            "baselines=false"]
    result = run_module("distill", *args, cwd=teacher_copy)
    assert_exit_0(result)
    found = re.search(r"\((\d+) windows\) \+ 2 mention-replaced copies \((\d+)\s+windows\)",
                      result.stdout)  # the console may wrap the line
    assert found, result.stdout
    labeled, augmented = int(found[1]), int(found[2])
    assert re.search(rf"teacher outputs cached for {labeled + augmented}\s+windows",
                     result.stdout)
    students = teacher_copy / "runs/d/students"
    assert read(students / "S1/manifest.json")["augment_copies"] == 2
    assert read(students / "N1/manifest.json")["augment_copies"] == 0
    # S1 trained on the labelled windows and both copies; N1 on the labelled ones alone.
    batch = 8
    assert read(students / "S1/metrics.json")["steps"] == -(-(labeled + augmented) // batch)
    assert read(students / "N1/metrics.json")["steps"] == -(-labeled // batch)


@pytest.mark.slow
def test_student_pruned_from_a_distilled_one(teacher_copy, conll_dir):
    pruned_yaml = STUDENTS_YAML.replace(
        "  N1:\n", "  P1:\n    layers: 1\n    intermediate_size: 16\n    init_from: S1\n"
        "  N1:\n")
    preset = teacher_copy / "students.yaml"

    def run(*only: str):
        return run_module("distill", "--preset", str(preset), "run=d",
                          f"data_dir={conll_dir.parent}", "train_limit=120", "eval_limit=60",
                          THREADS, "baselines=false", f"only=[{','.join(only)}]",
                          cwd=teacher_copy)

    preset.write_text(pruned_yaml)
    missing = run("P1")  # S1 not trained yet: one line saying how to make it
    assert missing.returncode == 1
    assert "Traceback" not in missing.stdout + missing.stderr
    assert "only=[S1]" in missing.stderr, missing.stderr
    assert_exit_0(run("S1", "P1"))
    students = teacher_copy / "runs/d/students"
    pruned = read(students / "P1/manifest.json")
    assert pruned["init"]["from"] == "students/S1"
    assert pruned["intermediate_size"] == 16
    assert read(students / "S1/manifest.json")["init"]["from"] == "teacher"
    again = run("P1")
    assert "up to date" in again.stdout, again.stdout
    # Retraining the source (its own recipe changed, P1's did not) makes P1 stale.
    preset.write_text(pruned_yaml.replace("  S1:\n    layers: 1\n",
                                          "  S1:\n    layers: 1\n    augment_copies: 1\n"))
    assert_exit_0(run("S1"))
    third = run("P1")
    assert_exit_0(third)
    assert "up to date" not in third.stdout


@pytest.mark.slow
def test_torchrun_two_cpu_processes(teacher_copy, conll_dir, one_student_reference):
    launcher = (sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", "29519")
    result = run_module("distill", *one_student_args(teacher_copy, conll_dir, "d"),
                        cwd=teacher_copy, launcher=launcher)
    assert_exit_0(result)
    metrics = read(teacher_copy / "runs/d/students/S1/metrics.json")
    assert metrics["processes"] == 2
    # The global batch is split between the processes, not multiplied: the same steps.
    assert metrics["steps"] == one_student_reference["steps"]
    assert 0.0 <= metrics["test"]["f1"] <= 1.0


@pytest.mark.slow
def test_killed_distillation_resumes_to_the_uninterrupted_result(teacher_copy, conll_dir,
                                                                 one_student_reference):
    args = one_student_args(teacher_copy, conll_dir, "d")
    checkpoint = teacher_copy / "runs/d/.students-work/S1/checkpoint.pt"
    process = subprocess.Popen([sys.executable, "-m", "distill", *args], cwd=teacher_copy,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=module_env())
    deadline = time.time() + 240
    while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "distillation ended before it could be killed"
    process.kill()
    process.communicate(timeout=60)
    assert not (teacher_copy / "runs/d/students/S1").exists()

    resumed = run_module("distill", *args, cwd=teacher_copy)
    assert_exit_0(resumed)
    # Picked up where the checkpoint was, not from the start ...
    epoch, step = map(int, re.search(r"resuming from epoch (\d+), step (\d+)",
                                     resumed.stdout).groups())
    assert (epoch, step) > (1, 0)
    # ... and ended where the uninterrupted run did.
    metrics = read(teacher_copy / "runs/d/students/S1/metrics.json")
    assert metrics["valid"] == one_student_reference["valid"]
    assert metrics["test"] == one_student_reference["test"]
    assert metrics["steps"] == one_student_reference["steps"]


def test_mention_replacement_swaps_mentions_within_their_type():
    sentences = [
        Sentence(["Angela", "Merkel", "visited", "Paris", "."],
                 ["B-PER", "I-PER", "O", "B-LOC", "O"]),
        Sentence(["Rome", "welcomed", "Obama"], ["B-LOC", "O", "B-PER"]),
        Sentence(["nothing", "here"], ["O", "O"]),
    ]
    people = {("Angela", "Merkel"), ("Obama",)}
    places = {("Paris",), ("Rome",)}
    sentences[1].document = 1
    rewritten = mention_replaced(sentences, copies=8, seed=0)
    assert [len(copy) for copy in rewritten] == [2] * 8  # the entity-less sentence is left out
    assert all([s.document for s in copy] == [0, 1] for copy in rewritten)
    for copy in rewritten:  # the tags follow the new mentions' lengths
        first, second = copy
        assert first.tags == (["B-PER", "I-PER"] if len(first.words) == 5 else ["B-PER"]) + \
            ["O", "B-LOC", "O"]
        assert second.tags == ["B-LOC", "O", "B-PER"] + ["I-PER"] * (len(second.words) - 3)
    copies = [[s.words for s in copy] for copy in rewritten]
    for first, second in copies:
        split = first.index("visited")
        assert tuple(first[:split]) in people
        assert tuple(first[split + 1:-1]) in places and first[-1] == "."
        split = second.index("welcomed")
        assert tuple(second[:split]) in places and tuple(second[split + 1:]) in people
    assert len({tuple(first) for first, _ in copies}) > 1  # mentions are drawn, not kept
    assert mention_replaced(sentences, copies=8, seed=0) == rewritten
    assert mention_replaced(sentences, copies=3, seed=0) == rewritten[:3]  # a prefix
    assert mention_replaced(sentences, copies=0, seed=0) == []
