"""The report: Pareto frontier, FLOPs, target checks on planted rows, and `python -m bench.report`
end to end on a tiny teacher with two quantized artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.compare import round_ratios
from bench.measure import evenly_spaced, flops
from bench.report import (
    LABEL_OFFSETS,
    add_ratios,
    best_int8_student,
    pareto_front,
    place_labels,
    target_checks,
)
from tests.conftest import run_module
from tests.test_teacher import tiny_args

REQUIRED_KEYS = ("name", "backend", "precision", "is_peer", "test_f1", "p50_ms", "p90_ms",
                 "p99_ms", "throughput_sps", "size_mb", "peak_rss_mb", "floor_ms",
                 "speedup_vs_eager")


def text_box(label, renderer):
    """A label's text on the canvas, without its leader line."""
    from matplotlib.text import Text

    label.update_positions(renderer)
    return Text.get_window_extent(label, renderer)


def test_labels_of_crowded_points_do_not_overlap():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 6.5))
    # Five artifacts of one model within a few pixels of each other, one far away.
    points = [(f"L3-ffn512-variant-{i}", 1.0 + 0.01 * i, 88.0 + 0.01 * i) for i in range(5)]
    points.append(("teacher", 10.0, 89.5))
    axes.scatter([x for _, x, _ in points], [y for _, _, y in points])
    axes.set_xscale("log")
    labels = place_labels(axes, points)
    renderer = figure.canvas.get_renderer()
    boxes = [text_box(label, renderer) for label in labels]
    for i, box in enumerate(boxes):
        for other in boxes[i + 1:]:
            assert not box.overlaps(other), (box, other)
    assert [label.get_text() for label in labels] == [name for name, _, _ in points]
    # A label with room keeps the first place: right of and above its point.
    assert tuple(labels[-1].get_position()) == LABEL_OFFSETS[0]
    # Labels pushed past the places beside the marker are tied to it by a line.
    far = [tuple(label.get_position()) not in LABEL_OFFSETS[:4] for label in labels]
    assert any(far)
    assert [label.arrow_patch.get_visible() for label in labels] == far
    plt.close(figure)


def test_labels_do_not_cover_other_points_where_there_is_room():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 6.5))
    axes.set_xlim(0, 10)
    axes.set_ylim(0, 10)
    # B sits where A's first label place (right of and above A) would cover it.
    a_x, a_y = axes.transData.transform((2.0, 5.0))
    b = axes.transData.inverted().transform((a_x + 30, a_y + 10))
    points = [("artifact-a-with-a-long-name", 2.0, 5.0), ("b", float(b[0]), float(b[1]))]
    axes.scatter([x for _, x, _ in points], [y for _, _, y in points], s=60)
    labels = place_labels(axes, points)
    renderer = figure.canvas.get_renderer()
    for label, (name, _, _) in zip(labels, points, strict=True):
        box = text_box(label, renderer)
        for other, x, y in points:
            if other != name:
                px, py = axes.transData.transform((x, y))
                assert not box.contains(px, py), (name, other)
    assert tuple(labels[0].get_position()) != LABEL_OFFSETS[0]  # it had to move
    plt.close(figure)


def test_pareto_front_on_planted_points():
    points = [
        ("slow-best", 10.0, 0.95),
        ("fast-good", 2.0, 0.90),
        ("fast-worse", 2.0, 0.85),  # as fast as fast-good, less accurate
        ("mid-worse", 5.0, 0.89),  # slower and less accurate than fast-good
        ("fastest", 1.0, 0.70),
        ("mid-better", 5.0, 0.93),
        ("twin", 5.0, 0.93),  # equal to mid-better: neither dominates the other
    ]
    assert pareto_front(points) == ["fastest", "fast-good", "mid-better", "twin", "slow-best"]
    assert pareto_front([]) == []


def test_flops_counts_projections_ffn_attention_and_classifier():
    # 1 layer, hidden 2, FFN 4, 3 tokens, 5 labels, by hand:
    # projections 8*3*2*2 = 96, FFN 4*3*2*4 = 96, attention 4*3*3*2 = 72, head 2*3*2*5 = 60
    shape = {"layers": 1, "hidden_size": 2, "intermediate_size": 4, "labels": 5}
    assert flops(shape, 3) == 324
    assert flops(shape | {"layers": 2}, 3) == 2 * 264 + 60


def test_evenly_spaced_covers_the_split():
    assert evenly_spaced(3, 10) == [0, 4, 9]  # round(4.5) is 4 in Python
    assert evenly_spaced(20, 5) == [0, 1, 2, 3, 4]
    assert evenly_spaced(1, 5) == [0]


def row(name, p50, f1, precision="int8", source="L3", is_peer=False, floor=1.0, eager=20.0,
        peer=6.0):
    return {"name": name, "p50_ms": p50, "test_f1": f1, "precision": precision,
            "source": source, "is_peer": is_peer, "floor_ms": floor,
            "floor_ratio": p50 / floor, "speedup_vs_eager": eager / p50,
            "speedup_vs_peer": peer / p50}


def timed(name, p50_rounds, anchor_rounds=None, f1=0.9, floor=None):
    """A measured row before add_ratios: p50 per round, and the anchor's beside it."""
    return {"name": name, "p50_ms": sorted(p50_rounds)[len(p50_rounds) // 2], "test_f1": f1,
            "floor_ms": floor, "vs_anchor_rounds": None if anchor_rounds is None else
            [a / p for a, p in zip(anchor_rounds, p50_rounds, strict=True)]}


def test_paired_ratios_cancel_drift_between_processes():
    # The machine ran twice as slow while L3 was measured: its own p50 looks no better
    # than the teacher's ORT peer measured earlier, but beside the peer it is 3x faster.
    peer = timed("peer", [2.0, 2.0, 2.0])
    eager = timed("teacher", [12.0, 12.0, 13.0], anchor_rounds=[2.0, 2.0, 2.0], f1=0.9)
    l3 = timed("L3", [2.0, 2.0, 2.2], anchor_rounds=[6.0, 6.0, 6.0], f1=0.89, floor=0.5)
    rows = [eager, peer, l3]
    add_ratios(rows, anchor="peer")
    assert peer["speedup_vs_peer"] == 1.0
    assert l3["speedup_vs_peer"] == pytest.approx(3.0)  # median of 3, 3, 2.73
    assert eager["speedup_vs_peer"] == pytest.approx(2 / 12)
    assert eager["speedup_vs_eager"] == pytest.approx(1.0)
    assert l3["speedup_vs_eager"] == pytest.approx(3.0 / (2 / 12))  # 18x, not 12/2 = 6x
    assert peer["speedup_vs_eager"] == pytest.approx(6.0)
    assert l3["floor_ratio"] == pytest.approx(4.0) and eager["floor_ratio"] is None
    assert l3["f1_change_vs_teacher"] == pytest.approx(-0.01)


def test_without_an_anchor_ratios_are_of_p50s():
    rows = [timed("teacher", [12.0]), timed("L3", [3.0])]
    add_ratios(rows, anchor=None)
    assert rows[1]["speedup_vs_eager"] == 4.0 and rows[1]["speedup_vs_peer"] is None


def test_checks_pick_the_fastest_int8_student_within_the_f1_limit():
    rows = [row("teacher", 20.0, 0.90, "fp32", "teacher", True, floor=5.0),
            row("teacher-ort-dynamic-int8-unfused", 6.0, 0.899, source="teacher", is_peer=True),
            row("L2-ort-int8-static", 1.0, 0.87),  # fastest, but 3 points below the teacher
            row("L3-ort-int8-static", 2.0, 0.889, floor=0.5),  # 1.1 points below: eligible
            row("L3-onnx-fp32", 2.5, 0.89, "fp32"),
            row("teacher-ort-int8-static", 1.5, 0.90, source="teacher")]  # not a student
    assert best_int8_student(rows)["name"] == "L3-ort-int8-static"
    speed, versus_peer, floor, wall = target_checks(rows, wall_s=600)
    assert speed["artifact"] == "L3-ort-int8-static" and speed["value"] == 10.0 and speed["met"]
    assert versus_peer["value"] == 3.0 and versus_peer["met"]
    assert not floor["met"] and floor["artifact"] == "L3-ort-int8-static"
    assert floor["over"] == ["L3-ort-int8-static"]  # 4x its floor; the teacher is a peer
    assert wall["met"] and not target_checks(rows, wall_s=901)[3]["met"]
    rows[3]["test_f1"] = 0.88  # now 2 points below: no student qualifies
    speed = target_checks(rows, wall_s=600)[0]
    assert speed["artifact"] is None and not speed["met"]


@pytest.fixture(scope="module")
def reported(tmp_path_factory, tiny_bert, conll_dir) -> Path:
    workdir = tmp_path_factory.mktemp("report")
    # Enough steps for a test F1 above zero, so that equal F1s below mean something.
    teacher = run_module("teacher", *tiny_args(tiny_bert, conll_dir, "r", "train_limit=400",
                                               "epochs=3", "lr=3e-3", "threads=1"), cwd=workdir)
    assert teacher.returncode == 0, teacher.stdout[-3000:] + teacher.stderr[-3000:]
    quantized = run_module("quantize", "run=r", f"data_dir={conll_dir.parent}",
                           "eval_limit=40", "threads=1", "variants=[onnx-fp32,ort-int8-dynamic]",
                           cwd=workdir)
    assert quantized.returncode == 0, quantized.stdout[-3000:] + quantized.stderr[-3000:]
    result = run_module("bench.report", "run=r", f"data_dir={conll_dir.parent}",
                        "threads=1", "test_limit=80", "latency_sentences=12",
                        "latency_rounds=2", "warmup=2", "throughput_sentences=16",
                        "throughput_batch=8", cwd=workdir, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workdir / "runs" / "r"


@pytest.mark.slow
def test_report_files_are_written_and_parse(reported):
    report = json.loads((reported / "report" / "report.json").read_text())
    names = [r["name"] for r in report["rows"]]
    assert names == ["teacher", "teacher-torch-dynamic-int8", "teacher-ort-dynamic-int8-unfused",
                     "teacher-onnx-fp32", "teacher-ort-int8-dynamic"]
    for r in report["rows"]:
        for key in REQUIRED_KEYS:
            assert key in r, (r["name"], key)
        assert 0 <= r["test_f1"] <= 1 and r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert r["latency_samples"] == 24 and r["peak_rss_mb"] > 50
    peers = {r["name"] for r in report["rows"] if r["is_peer"]}
    assert peers == {"teacher", "teacher-torch-dynamic-int8", "teacher-ort-dynamic-int8-unfused"}
    assert report["gemm_gflops"]["fp32"] > 0 and report["gemm_gflops"]["int8"] > 0
    assert report["date"] and report["test_sentences"] == 80 and report["failed"] == []
    assert set(report["pareto"]) <= set(names) and report["pareto"]
    md = (reported / "report" / "report.md").read_text()
    assert all(f"| {name}" in md or f"**{name}" in md for name in names)
    assert (reported / "report" / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_report_f1_is_the_runtime_f1_of_each_artifact(reported):
    """The teacher's F1 through the Predictor equals what the teacher stage measured on the
    same 80 test sentences, and the FP32 ONNX export (parity-checked) scores the same."""
    rows = {r["name"]: r for r in json.loads((reported / "report" / "report.json").read_text())
            ["rows"]}
    metrics = json.loads((reported / "teacher" / "metrics.json").read_text())
    assert metrics["test"]["f1"] > 0.05
    assert rows["teacher"]["test_f1"] == pytest.approx(metrics["test"]["f1"], abs=1e-9)
    assert rows["teacher-onnx-fp32"]["test_f1"] == pytest.approx(metrics["test"]["f1"], abs=1e-9)
    assert rows["teacher"]["speedup_vs_eager"] == 1.0
    anchor = "teacher-ort-dynamic-int8-unfused"
    assert rows[anchor]["speedup_vs_peer"] == 1.0 and rows[anchor]["vs_anchor_rounds"] is None
    for name, r in rows.items():
        if name != anchor:  # timed beside the peer, round for round
            assert r["anchor"] == anchor and len(r["vs_anchor_rounds"]) == 2, name
            assert len(r["anchor_p50_rounds_ms"]) == 2 and r["speedup_vs_peer"] > 0, name


def test_round_ratios_are_per_round_speedups_over_the_first():
    ratios = round_ratios({"eager": [10.0, 12.0], "int8": [2.0, 3.0], "slow": [20.0, 12.0]})
    assert ratios == {"eager": [1.0, 1.0], "int8": [5.0, 4.0], "slow": [0.5, 1.0]}


@pytest.mark.slow
def test_compare_times_artifacts_round_robin(reported, conll_dir):
    teacher, int8 = "teacher", "quantized/teacher-ort-int8-dynamic"  # relative to the run
    result = run_module("bench.compare", teacher, int8, "--data-dir",
                        str(conll_dir.parent), "--sentences", "6", "--rounds", "2",
                        "--warmup", "1", "--threads", "1", cwd=reported)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines()
            if line.count("│") > 3}
    assert {teacher, int8} <= set(rows)
    # The first artifact against itself, every round.
    assert [cell.strip() for cell in rows[teacher].split("│")[-4:-1]] == ["1.00"] * 3
    missing = run_module("bench.compare", "nothing", cwd=reported)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr


@pytest.mark.slow
def test_kernels_sets_each_artifacts_matrix_time_beside_its_floor(reported, conll_dir):
    artifacts = ["teacher", "quantized/teacher-onnx-fp32", "quantized/teacher-ort-int8-dynamic"]
    result = run_module("bench.kernels", *artifacts, "--data-dir", str(conll_dir.parent),
                        "--sentences", "20", "--calls", "5", "--threads", "1", cwd=reported)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = {cells[0]: cells for line in result.stdout.splitlines() if line.count("│") > 6
            for cells in [[c.strip() for c in line.split("│")[1:-1]]]}
    assert set(rows) == {"teacher", "teacher-onnx-fp32", "teacher-ort-int8-dynamic"}
    assert [rows[name][1:3] for name in rows] == [
        ["pytorch", "fp32"], ["onnxruntime", "fp32"], ["onnxruntime", "int8"]]
    for cells in rows.values():
        tokens, kernel_ms, floor_ms, ratio = int(cells[3]), *map(float, cells[4:])
        assert tokens > 2 and kernel_ms > 0 and floor_ms > 0
        assert ratio == pytest.approx(kernel_ms / floor_ms, rel=0.1, abs=0.06)
    # One model, one precision: one floor, whichever backend runs it.
    assert rows["teacher"][5] == rows["teacher-onnx-fp32"][5]
    missing = run_module("bench.kernels", "nothing", "--tokens", "8", cwd=reported)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
