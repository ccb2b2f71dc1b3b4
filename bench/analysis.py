"""What the report computes from its measured rows: speedups, each device's Pareto frontier
and the artifact it recommends. Pure functions of the rows' dicts: nothing here measures,
prints or draws.

Each device is its own comparison: speedups against the eager teacher on that device
(Hugging Face PyTorch eager FP32, the default a user runs), and a Pareto frontier and a
recommendation for each.

Ratios are paired: in every CPU row's process, its latency rounds alternate with the ORT
peer's (cheap to time, so it anchors every row), and a speedup is the median over rounds of
the two p50s' ratio; the speedup over the eager teacher is the row's over the peer divided
by the teacher's over the peer. On a shared machine whose speed drifts by tens of percent
within minutes, ratios between rows timed minutes apart would carry that drift.

The recommendation, per device: the fastest artifact whose test F1 is within
`max_f1_drop` points of the eager teacher's, and why.
"""

from __future__ import annotations

import statistics

from bench.measure import ORT_DYNAMIC_INT8

EAGER = "teacher"  # the row every CPU speedup is relative to
ORT_PEER = f"{EAGER}-{ORT_DYNAMIC_INT8}-unfused"  # the peer every CPU row is timed beside
# Each device's eager teacher: what that device's speedups are counted from.
REFERENCES = {"cpu": EAGER, "cuda": f"{EAGER}-cuda-fp32"}
DEVICE_LABELS = {"cpu": "CPU", "cuda": "GPU"}


def by_device(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows grouped by device type, the CPU's first, each group in the rows' order."""
    groups: dict[str, list[dict]] = {}
    for row in sorted(rows, key=lambda r: r["device_type"] != "cpu"):
        groups.setdefault(row["device_type"], []).append(row)
    return groups


def add_ratios(rows: list[dict], anchor: str | None) -> None:
    """Speedups against the eager teacher on the row's own device and against the ORT
    peer (CPU rows), F1 change against that teacher, distance to the floor. Rows timed
    beside the anchor use the paired ratios (see the module notes); the others, ratios of
    p50s measured in different processes."""
    for device, group in by_device(rows).items():
        eager = next((r for r in group if r["name"] == REFERENCES[device]), None)
        peer = next((r for r in group if r["name"] == anchor), None)
        for row in group:
            row["speedup_vs_peer"] = paired_ratio(row, anchor) or (
                peer["p50_ms"] / row["p50_ms"] if peer else None)
        for row in group:
            if eager is None:
                row["speedup_vs_eager"] = None
            elif row["speedup_vs_peer"] is not None and eager["speedup_vs_peer"] is not None:
                row["speedup_vs_eager"] = row["speedup_vs_peer"] / eager["speedup_vs_peer"]
            else:
                row["speedup_vs_eager"] = eager["p50_ms"] / row["p50_ms"]
            row["f1_change_vs_teacher"] = row["test_f1"] - eager["test_f1"] if eager else None
            row["floor_ratio"] = row["p50_ms"] / row["floor_ms"] if row["floor_ms"] else None


def device_summaries(rows: list[dict], max_f1_drop: float) -> list[dict]:
    """Per device (the CPU's first): its name, its reference row, whether its ratios are
    paired, its Pareto frontier and its recommendation."""
    summaries = []
    for device, group in by_device(rows).items():
        reference = REFERENCES[device]
        summaries.append({
            "type": device, "name": group[0]["device"], "reference": reference,
            "anchored": any(r.get("vs_anchor_rounds") for r in group),
            "pareto": pareto_front([(r["name"], r["p50_ms"], r["test_f1"]) for r in group]),
            "recommendation": recommend(group, max_f1_drop, reference,
                                        DEVICE_LABELS[device])})
    return summaries


def paired_ratio(row: dict, anchor: str | None) -> float | None:
    """The anchor's p50 over the row's, median over rounds timed in one process."""
    if anchor is not None and row["name"] == anchor:
        return 1.0
    return statistics.median(row["vs_anchor_rounds"]) if row.get("vs_anchor_rounds") else None


def pareto_front(points: list[tuple[str, float, float]]) -> list[str]:
    """Names of the points no other point beats: none is at least as fast and at least as
    accurate while strictly better in one (latency lower is better, F1 higher)."""
    front = []
    for name, latency, f1 in points:
        dominated = any(other_latency <= latency and other_f1 >= f1 and
                        (other_latency < latency or other_f1 > f1)
                        for _, other_latency, other_f1 in points)
        if not dominated:
            front.append(name)
    return sorted(front, key=lambda n: next(p[1] for p in points if p[0] == n))


def recommend(rows: list[dict], max_f1_drop: float, reference: str = EAGER,
              device: str = "CPU") -> dict:
    """Of one device's rows, the fastest artifact (a peer is no artifact of this run) whose
    test F1 is at most `max_f1_drop` points below the eager teacher's (the `reference`
    row), with a plain summary and the reason it was chosen; "artifact" is None, and the
    summary says why, when none qualifies."""
    eager = next((r for r in rows if r["name"] == reference), None)
    artifacts = [r for r in rows if not r["is_peer"]]
    found = {"artifact": None, "max_f1_drop": max_f1_drop, "measured": len(artifacts),
             "within_budget": 0}
    if eager is None:
        return found | {"summary": f"no recommendation on the {device}: the eager teacher "
                                   "was not measured there, and the F1 budget and speedups "
                                   "are counted from it",
                        "reason": ""}
    if not artifacts:
        return found | {"summary": f"no recommendation on the {device}: no artifact besides "
                                   "the teacher and its peers was measured", "reason": ""}
    # F1 is a fraction; the budget is in points. The small slack keeps a drop of exactly
    # the budget inside it despite float rounding.
    eligible = [r for r in artifacts
                if 100 * (eager["test_f1"] - r["test_f1"]) <= max_f1_drop + 1e-9]
    found["within_budget"] = len(eligible)
    if not eligible:
        closest = max(artifacts, key=lambda r: r["test_f1"])
        return found | {
            "summary": f"no artifact on the {device} is within {max_f1_drop:g} F1 points of "
                       f"the eager teacher; the most accurate, {closest['name']}, is "
                       f"{trade_off(closest, eager)}",
            "reason": f"raise max_f1_drop (now {max_f1_drop:g}) to accept a larger F1 loss"}
    # The paired speedup ranks them (steadier than p50s taken minutes apart); ties go to
    # the more accurate.
    best = max(eligible, key=lambda r: (r["speedup_vs_eager"], r["test_f1"]))
    return found | {
        "artifact": best["name"], "backend": best["backend"], "precision": best["precision"],
        "speedup_vs_eager": best["speedup_vs_eager"],
        "f1_change_points": 100 * (best["test_f1"] - eager["test_f1"]),
        "context": best.get("context"),
        "summary": f"recommended on the {device}: {best['name']} — {trade_off(best, eager)}",
        "reason": f"the fastest of the {len(eligible)} of {len(artifacts)} measured artifacts "
                  f"whose test F1 is within {max_f1_drop:g} points of the eager teacher's "
                  f"(the max_f1_drop setting)"}


def trade_off(row: dict, eager: dict) -> str:
    """'9.8x faster than the eager teacher at 0.42 F1 points below it', in words."""
    points = 100 * (row["test_f1"] - eager["test_f1"])
    f1 = ("the same F1" if abs(points) < 0.005 else
          f"{abs(points):.2f} F1 points {'below' if points < 0 else 'above'} it")
    return f"{row['speedup_vs_eager']:.1f}x faster than the eager teacher at {f1}"
