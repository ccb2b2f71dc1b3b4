"""The report: Pareto frontier, FLOPs, the recommendation and the plot on planted rows, and
`python -m bench.report` end to end on a tiny teacher with two quantized artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import report as report_module
from bench.analysis import add_ratios, device_summaries, pareto_front, recommend
from bench.compare import round_ratios
from bench.config import ReportConfig
from bench.floor import flops
from bench.measure import PYTORCH, evenly_spaced
from bench.plot import LABEL_OFFSETS, draw, log_ticks, place_labels
from bench.render import markdown
from bench.report import find_candidates
from tests.conftest import run_module
from tests.test_teacher import tiny_args

REQUIRED_KEYS = ("name", "backend", "precision", "is_peer", "test_f1", "p50_ms", "p90_ms",
                 "p99_ms", "batch1_sps", "batched_sps", "batched_vs_batch1", "batched_model_s",
                 "batched_text_ms", "batched_differs", "batch_tokens", "size_mb", "peak_rss_mb",
                 "floor_ms", "speedup_vs_eager")


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
    axes.set_xlim(0.5, 30)  # room on every side of the far point
    axes.set_ylim(87, 91)
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
            "backend": "pytorch" if source == "teacher" and is_peer else "onnxruntime",
            "device_type": "cpu", "device": "a CPU",
            "source": source, "is_peer": is_peer, "floor_ms": floor,
            "floor_ratio": p50 / floor, "speedup_vs_eager": eager / p50,
            "speedup_vs_peer": peer / p50}


def timed(name, p50_rounds, anchor_rounds=None, f1=0.9, floor=None, device="cpu"):
    """A measured row before add_ratios: p50 per round, and the anchor's beside it."""
    return {"name": name, "p50_ms": sorted(p50_rounds)[len(p50_rounds) // 2], "test_f1": f1,
            "device_type": device, "device": "a GPU" if device == "cuda" else "a CPU",
            "is_peer": name.startswith("teacher"), "precision": "fp32", "backend": "pytorch",
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


def test_each_device_is_compared_with_its_own_eager_teacher():
    """A CPU set and a GPU set of planted rows: speedups are against the eager teacher on
    the same device, each device has its own frontier and recommendation, and a GPU row's
    speed never enters the CPU's comparison."""
    cpu = [timed("teacher", [12.0], anchor_rounds=[2.0], f1=0.90),
           timed("teacher-ort-dynamic-int8-unfused", [2.0], f1=0.899),
           timed("L3", [6.0], anchor_rounds=[2.0], f1=0.885),
           timed("L3-ort-int8-dynamic", [1.0], anchor_rounds=[2.0], f1=0.886)]
    gpu = [timed("teacher-cuda-fp32", [4.0], f1=0.90, device="cuda"),
           timed("teacher-cuda-fp16", [2.0], f1=0.90, device="cuda"),
           timed("L3-cuda-fp16", [0.8], f1=0.888, device="cuda"),
           timed("L3-cuda-int8", [1.0], f1=0.870, device="cuda")]  # slower and worse
    rows = [gpu[0], *cpu[:2], gpu[2], *cpu[2:], gpu[1], gpu[3]]  # the devices interleaved
    add_ratios(rows, anchor="teacher-ort-dynamic-int8-unfused")
    by_name = {r["name"]: r for r in rows}
    assert by_name["L3-ort-int8-dynamic"]["speedup_vs_eager"] == pytest.approx(12.0)
    assert by_name["L3"]["speedup_vs_eager"] == pytest.approx(2.0)
    assert by_name["teacher-cuda-fp32"]["speedup_vs_eager"] == pytest.approx(1.0)
    assert by_name["L3-cuda-fp16"]["speedup_vs_eager"] == pytest.approx(5.0)  # 4 / 0.8
    assert by_name["L3-cuda-fp16"]["speedup_vs_peer"] is None  # the peer is a CPU row
    assert by_name["L3-cuda-fp16"]["f1_change_vs_teacher"] == pytest.approx(-0.012)

    summaries = device_summaries(rows, max_f1_drop=1.5)
    assert [(d["type"], d["reference"]) for d in summaries] == [
        ("cpu", "teacher"), ("cuda", "teacher-cuda-fp32")]
    cpu_summary, gpu_summary = summaries
    assert cpu_summary["anchored"] and not gpu_summary["anchored"]
    # 0.8 ms on the GPU would dominate every CPU row on one frontier; per device it does not.
    assert cpu_summary["pareto"] == ["L3-ort-int8-dynamic", "teacher-ort-dynamic-int8-unfused",
                                     "teacher"]
    assert gpu_summary["pareto"] == ["L3-cuda-fp16", "teacher-cuda-fp16"]
    assert cpu_summary["recommendation"]["artifact"] == "L3-ort-int8-dynamic"
    assert gpu_summary["recommendation"]["artifact"] == "L3-cuda-fp16"
    assert gpu_summary["recommendation"]["summary"].startswith(
        "recommended on the GPU: L3-cuda-fp16 — 5.0x faster than the eager teacher")

    md = markdown(planted_result(rows, summaries, batch_tokens=512, floor_ratio=None))
    cpu_part, gpu_part = md.split("## GPU: a GPU")
    assert "## CPU: a CPU, 2 threads" in cpu_part
    assert "L3-cuda" not in cpu_part and "L3-ort-int8-dynamic" not in gpu_part
    assert "**L3-cuda-fp16** ★" in gpu_part and "| L3-cuda-int8 |" in gpu_part
    assert "recommended on the GPU: L3-cuda-fp16" in gpu_part
    import matplotlib.pyplot as plt

    figure = draw([("CPU", cpu, cpu_summary["pareto"]), ("GPU", gpu, gpu_summary["pareto"])])
    assert len(figure.axes) == 2
    assert {t.get_text() for t in figure.axes[1].texts} == {r["name"] for r in gpu}
    plt.close(figure)


def planted_result(rows: list[dict], devices: list[dict], batch_tokens: int,
                   floor_ratio: float | None) -> dict:
    """A report result around planted rows, their measured columns filled with constants."""
    for r in rows:
        r.setdefault("backend", "pytorch")
        r |= {"p50_spread_ms": 0.1, "p90_ms": r["p50_ms"], "p99_ms": r["p50_ms"],
              "batch1_sps": 100.0, "batched_sps": 170.0, "batched_vs_batch1": 1.7,
              "batched_floor_ratio": floor_ratio, "batched_text_ms": 0.05,
              "batched_differs": 0, "size_mb": 10.0, "peak_rss_mb": 200.0}
    return {"date": "today", "command": "python -m bench.report", "machine": "a CPU",
            "threads": 2, "gemm_gflops": {"fp32": 100.0, "int8": 200.0},
            "settings": {"latency_sentences": 10, "latency_rounds": 2, "warmup": 2,
                         "throughput_rounds": 2, "batch_tokens": batch_tokens},
            "test_sentences": 80, "rows": rows, "failed": [], "wall_s": 60.0,
            "devices": devices}


def planted_run(root: Path) -> Path:
    """A run folder with a teacher, a student and two quantized artifacts (a CPU one and a
    TensorRT engine), manifests only: what find_candidates reads."""
    run = root / "r"
    for folder, manifest in [
        ("teacher", {"stage": "teacher"}), ("students/L3", {"stage": "student"}),
        ("quantized/L3-ort-int8-dynamic", {"backend": "onnxruntime", "precision": "int8",
                                           "source_name": "L3", "size_mb": 16.6}),
        ("quantized/L3-trt-int8", {"backend": "tensorrt", "precision": "int8",
                                   "source_name": "L3", "size_mb": 20.1})]:
        (run / folder).mkdir(parents=True)
        (run / folder / "manifest.json").write_text(json.dumps(manifest))
    return run


@pytest.mark.parametrize("cuda", [False, True])
def test_on_a_cuda_machine_the_pytorch_models_and_engines_run_on_the_gpu(
        tmp_path, monkeypatch, cuda):
    monkeypatch.setattr(report_module, "cuda_available", lambda: cuda)
    candidates = find_candidates(planted_run(tmp_path), ReportConfig(peers=False))
    devices = {c.name: c.device for c in candidates}
    cpu_rows = {"teacher": "cpu", "L3": "cpu", "L3-ort-int8-dynamic": "cpu"}
    if not cuda:  # the engine needs a GPU: left out, and no GPU rows
        assert devices == cpu_rows
        return
    gpu_rows = {f"{model}-cuda-{precision}": "cuda" for model in ("teacher", "L3")
                for precision in ("fp32", "fp16", "int8")}
    assert devices == cpu_rows | {"L3-trt-int8": "cuda"} | gpu_rows
    by_name = {c.name: c for c in candidates}
    # The GPU's eager teacher is a peer, as the CPU's is; the students' rows are artifacts.
    assert by_name["teacher-cuda-fp32"].is_peer and not by_name["L3-cuda-fp16"].is_peer
    assert (by_name["L3-cuda-int8"].kind, by_name["L3-cuda-int8"].precision) == \
        (PYTORCH, "int8")
    assert by_name["L3-cuda-int8"].folder == tmp_path / "r" / "students" / "L3"
    # Asking for a few artifacts keeps each device's reference.
    few = find_candidates(planted_run(tmp_path / "again"),
                          ReportConfig(peers=False, artifacts=["L3-cuda-fp16"]))
    assert {c.name for c in few} == {"teacher", "teacher-cuda-fp32", "L3-cuda-fp16"}
    fp16_only = find_candidates(planted_run(tmp_path / "fp16"),
                                ReportConfig(peers=False, cuda_precisions=["fp16"]))
    assert "L3-cuda-int8" not in {c.name for c in fp16_only}


def planted_rows() -> list[dict]:
    return [row("teacher", 20.0, 0.90, "fp32", "teacher", True, floor=5.0),
            row("teacher-ort-dynamic-int8-unfused", 6.0, 0.899, source="teacher",
                is_peer=True),  # a peer: never the recommendation, however it scores
            row("L2-ort-int8-static", 1.0, 0.87),  # fastest, but 3 points below the teacher
            row("L3-ort-int8-static", 2.0, 0.889, floor=0.5),  # 1.1 points below: eligible
            row("L3-onnx-fp32", 2.5, 0.89, "fp32"),
            row("teacher-ort-int8-static", 2.2, 0.90, source="teacher")]


def test_recommendation_is_the_fastest_artifact_within_the_f1_budget():
    rows = planted_rows()
    chosen = recommend(rows, max_f1_drop=1.5)
    assert chosen["artifact"] == "L3-ort-int8-static"
    assert chosen["speedup_vs_eager"] == 10.0
    assert chosen["f1_change_points"] == pytest.approx(-1.1)
    assert chosen["within_budget"] == 3 and chosen["measured"] == 4
    # It says what was chosen and why, in plain words.
    assert chosen["summary"] == ("recommended on the CPU: L3-ort-int8-static — 10.0x faster "
                                 "than the eager teacher at 1.10 F1 points below it")
    assert "fastest of the 3 of 4 measured artifacts" in chosen["reason"]
    assert "within 1.5 points" in chosen["reason"]
    # A wider budget admits the 3-point drop, and the fastest row wins.
    assert recommend(rows, max_f1_drop=3.0)["artifact"] == "L2-ort-int8-static"
    # A drop of exactly the budget is inside it.
    assert recommend(rows, max_f1_drop=1.1)["artifact"] == "L3-ort-int8-static"
    # A tight budget leaves the teacher's own INT8 build, at no F1 change.
    tight = recommend(rows, max_f1_drop=0.5)
    assert tight["artifact"] == "teacher-ort-int8-static"
    assert tight["summary"].endswith("at the same F1")


def test_without_an_artifact_in_the_budget_the_report_says_so():
    rows = planted_rows()
    nothing = recommend(rows, max_f1_drop=-1.0)
    assert nothing["artifact"] is None and nothing["within_budget"] == 0
    assert nothing["summary"].startswith("no artifact on the CPU is within -1 F1 points")
    assert "raise max_f1_drop" in nothing["reason"]
    no_teacher = recommend(rows[1:], max_f1_drop=1.5)
    assert no_teacher["artifact"] is None and "not measured" in no_teacher["summary"]


def test_markdown_shows_the_recommendation_and_no_pass_fail_marks():
    rows = planted_rows()
    devices = [{"type": "cpu", "name": "a CPU", "reference": "teacher", "anchored": True,
                "pareto": ["L2-ort-int8-static", "L3-ort-int8-static"],
                "recommendation": recommend(rows, 1.5)}]
    md = markdown(planted_result(rows, devices, batch_tokens=2048, floor_ratio=1.2))
    assert "## CPU: a CPU, 2 threads" in md and "### Recommendation" in md
    assert "recommended on the CPU: L3-ort-int8-static — 10.0x faster than the eager" in md
    assert "2048 padded tokens a model call" in md and "| 1.70x | 1.2 | 0.050 | 0 |" in md
    assert "target" not in md.lower() and "issue" not in md.lower() and "missed" not in md


def test_plot_labels_stay_inside_the_figure_and_ticks_read_as_milliseconds():
    import matplotlib.pyplot as plt

    # Extremes at both ends with long names: the fastest point at the far left and bottom,
    # the slowest at the far right and top, and a crowd in between.
    rows = [row("a-very-long-artifact-name-at-the-fast-end-int8", 0.31, 0.70),
            row("teacher-with-an-equally-long-name-at-the-slow-end", 48.0, 0.95, "fp32",
                is_peer=True)]
    rows += [row(f"L3-ort-int8-static-variant-{i}", 1.0 + 0.02 * i, 0.88 + 0.0005 * i)
             for i in range(5)]
    figure = draw([("CPU", rows, [rows[0]["name"], rows[2]["name"], rows[1]["name"]])])
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    axes = figure.axes[0]
    labels = [text for text in axes.texts if text.get_text()]
    assert len(labels) == len(rows)
    bounds = figure.bbox
    for label in labels:
        box = label.get_window_extent(renderer)  # the text and its leader line, if drawn
        assert (box.x0 >= bounds.x0 and box.x1 <= bounds.x1 and box.y0 >= bounds.y0
                and box.y1 <= bounds.y1), (label.get_text(), box, bounds)
    ticks = [t.get_text() for t in axes.get_xticklabels(which="both") if t.get_text()]
    assert ticks and all("10^" not in t and "$" not in t and "\\times" not in t for t in ticks)
    assert {"0.5", "1", "2", "5", "10", "20"} <= set(ticks)
    assert axes.get_xlabel() == "batch-1 p50 latency (ms)"
    plt.close(figure)


def test_log_ticks_are_plain_steps_of_one_two_five():
    assert log_ticks(0.3, 48.0) == pytest.approx([0.5, 1, 2, 5, 10, 20])
    # Under a decade: every whole multiple, so the axis still has numbers on it.
    assert log_ticks(2.5, 8.5) == pytest.approx([3, 4, 5, 6, 7, 8])
    assert log_ticks(3.1, 3.4) == [3.1, 3.4]
    assert log_ticks(0.2, 5000) == pytest.approx([1, 10, 100, 1000])  # GPU to eager CPU


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
                        "latency_rounds=2", "warmup=2", "throughput_rounds=1",
                        # A tiny random model's INT8 build may move F1 by any amount: a
                        # budget of 100 points admits every artifact, so one is chosen.
                        "batch_tokens=256", "max_f1_drop=100", cwd=workdir, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (workdir / "report.out").write_text(result.stdout, encoding="utf-8")
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
        assert r["latency_samples"] == 24
    # Each row's peak is its own process's: the lean ONNX rows never carry the PyTorch stack.
    onnx_peak = max(r["peak_rss_mb"] for r in report["rows"] if r["backend"] == "onnxruntime")
    torch_peak = min(r["peak_rss_mb"] for r in report["rows"] if r["backend"] == "pytorch")
    assert onnx_peak < torch_peak
    peers = {r["name"] for r in report["rows"] if r["is_peer"]}
    assert peers == {"teacher", "teacher-torch-dynamic-int8", "teacher-ort-dynamic-int8-unfused"}
    assert report["gemm_gflops"]["fp32"] > 0 and report["gemm_gflops"]["int8"] > 0
    assert report["date"] and report["test_sentences"] == 80 and report["failed"] == []
    # No CUDA here: every row is the CPU's, and the CPU is the only device compared.
    assert {r["device_type"] for r in report["rows"]} == {"cpu"}
    assert all(r["device"] and r["torch_cuda_peak_mb"] is None for r in report["rows"])
    [cpu] = report["devices"]
    assert cpu["type"] == "cpu" and cpu["reference"] == "teacher" and cpu["anchored"]
    assert set(cpu["pareto"]) <= set(names) and cpu["pareto"]
    md = (reported / "report" / "report.md").read_text()
    assert all(f"| {name}" in md or f"**{name}" in md for name in names)
    assert (reported / "report" / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "256 padded tokens a model call" in md and "sent/s batched" in md


@pytest.mark.slow
def test_report_batches_as_the_runtime_does_and_counts_what_batching_changed(reported):
    """The batched pass runs the whole split through the runtime's token budget: calls of
    at most 256 padded positions (a window is at most 128), model time inside the pass's
    time; the published artifacts give every test text the same entities batched as
    alone."""
    rows = {r["name"]: r for r in json.loads((reported / "report" / "report.json").read_text())
            ["rows"]}
    for name, r in rows.items():
        assert r["batch_tokens"] == 256 and r["throughput_sentences"] == 80, name
        assert r["batched_padded_tokens"] <= 256 * r["batched_calls"], name
        assert 0 < r["batched_model_s"] < 80 / r["batched_sps"], name
        assert r["batched_text_ms"] > 0 and r["batched_floor_s"] > 0, name
    for name in ("teacher", "teacher-onnx-fp32", "teacher-ort-int8-dynamic"):
        assert rows[name]["batched_differs"] == 0, name


@pytest.mark.slow
def test_report_recommends_an_artifact_in_plain_words(reported):
    report = json.loads((reported / "report" / "report.json").read_text())
    recommendation = report["devices"][0]["recommendation"]
    assert "checks" not in report and recommendation["max_f1_drop"] == 100
    candidates = [r for r in report["rows"] if not r["is_peer"]]
    fastest = max(candidates, key=lambda r: (r["speedup_vs_eager"], r["test_f1"]))["name"]
    assert recommendation["artifact"] == fastest
    assert recommendation["summary"].startswith(f"recommended on the CPU: {fastest} — ")
    md = (reported / "report" / "report.md").read_text()
    stdout = (reported.parent.parent / "report.out").read_text()
    for text in (md, stdout):
        assert recommendation["summary"] in " ".join(text.split())  # rich may wrap it
        assert "target" not in text.lower() and "missed" not in text


@pytest.mark.slow
def test_onnx_rows_are_measured_in_a_process_without_torch(reported):
    """Peak memory of an ONNX Runtime row is the lean runtime's: its process (spawned,
    re-importing bench.report) never imported torch or transformers, the peer it is timed
    beside included. PyTorch rows show that the check sees an import where there is one."""
    rows = json.loads((reported / "report" / "report.json").read_text())["rows"]
    onnx = [r for r in rows if r["backend"] == "onnxruntime"]
    assert {r["name"] for r in onnx} == {"teacher-ort-dynamic-int8-unfused",
                                          "teacher-onnx-fp32", "teacher-ort-int8-dynamic"}
    for r in onnx:
        assert not r["imports_torch"] and not r["imports_transformers"], r["name"]
    assert all(r["imports_torch"] for r in rows if r["backend"] == "pytorch")


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
    anchor = "teacher-ort-dynamic-int8-unfused"
    assert rows[anchor]["speedup_vs_peer"] == 1.0 and rows[anchor]["vs_anchor_rounds"] is None
    for name, r in rows.items():
        if name != anchor:  # timed beside the peer, round for round
            assert r["anchor"] == anchor and len(r["vs_anchor_rounds"]) == 2, name
            assert len(r["anchor_p50_rounds_ms"]) == 2 and r["speedup_vs_peer"] > 0, name


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_a_pytorch_row_runs_at_the_precision_it_names(reported, conll_dir, precision):
    """The rows the report adds on a GPU, measured here on the CPU: the teacher's folder at
    FP16, and with its matrix products in INT8 (torch._int_mm), keeps the FP32 row's F1
    and reports the size of what it loaded."""
    from transformers import AutoModelForTokenClassification

    from bench.measure import Candidate, Settings, measure
    from edgener.training.datasets import load_dataset
    from edgener.training.publish import cpu_model

    teacher = reported / "teacher"
    test = load_dataset(str(conll_dir)).split("test")[:80]
    settings = Settings(threads=1, batch_tokens=256, warmup=2, rounds=1, throughput_rounds=1,
                        gemm_gflops={"fp32": 100.0, "int8": 100.0})
    candidate = Candidate(f"teacher-cpu-{precision}", PYTORCH, teacher, "pytorch", precision,
                          True, teacher, None, "teacher")
    row = measure(candidate, settings, [s.words for s in test], [s.tags for s in test],
                  [" ".join(s.words) for s in test[:6]])
    fp32 = {r["name"]: r for r in json.loads((reported / "report" / "report.json").read_text())
            ["rows"]}["teacher"]
    assert (row["device_type"], row["device"], row["precision"]) == ("cpu", cpu_model(),
                                                                     precision)
    assert row["torch_cuda_peak_mb"] is None
    assert abs(row["test_f1"] - fp32["test_f1"]) <= 0.02, (row["test_f1"], fp32["test_f1"])
    # The size is of the loaded model's tensors: FP16 halves all of them. INT8 stores the
    # encoder's 2 x (4 x 32 x 32 + 2 x 32 x 64) = 16,384 matrix weights in a byte instead of
    # four, plus a 4-byte scale for each of their 2 x 224 output channels; the embeddings
    # (most of this tiny model) stay FP32 on a CPU.
    params = sum(p.numel() for p in AutoModelForTokenClassification.from_pretrained(
        teacher).parameters())
    fp32_mb = 4 * params / 2**20
    expected = fp32_mb / 2 if precision == "fp16" else fp32_mb - (3 * 16_384 - 4 * 448) / 2**20
    assert row["size_mb"] == pytest.approx(expected, abs=0.01)


def test_round_ratios_are_per_round_speedups_over_the_first():
    ratios = round_ratios({"eager": [10.0, 12.0], "int8": [2.0, 3.0], "slow": [20.0, 12.0]})
    assert ratios == {"eager": [1.0, 1.0], "int8": [5.0, 4.0], "slow": [0.5, 1.0]}


@pytest.mark.slow
def test_compare_times_artifacts_round_robin(reported):
    teacher, int8 = "teacher", "quantized/teacher-ort-int8-dynamic"  # relative to the run
    # No --data-dir: the sentences come from the dataset the teacher's manifest records.
    result = run_module("bench.compare", teacher, int8, "--sentences", "6", "--rounds", "2",
                        "--warmup", "1", "--threads", "1", cwd=reported)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines()
            if line.count("│") > 3}
    assert {teacher, int8} <= set(rows)
    # The first artifact against itself, every round.
    assert [cell.strip() for cell in rows[teacher].split("│")[-4:-1]] == ["1.00"] * 3
    missing = run_module("bench.compare", "nothing", cwd=reported)
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert "nothing is no artifact folder" in missing.stdout + missing.stderr


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
        # The table rounds to 0.01 ms, and a tiny model's floor (~0.01 ms) is mostly that
        # rounding: the ratio must lie within what the printed values allow.
        low = (kernel_ms - 0.005) / (floor_ms + 0.005)
        high = (kernel_ms + 0.005) / max(floor_ms - 0.005, 1e-6)
        assert 0.9 * low - 0.06 <= ratio <= 1.1 * high + 0.06, (kernel_ms, floor_ms, ratio)
    # One model, one precision: one floor, whichever backend runs it.
    assert rows["teacher"][5] == rows["teacher-onnx-fp32"][5]
    missing = run_module("bench.kernels", "nothing", "--tokens", "8", cwd=reported)
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert "nothing" in missing.stdout + missing.stderr
