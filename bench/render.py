"""The report in words and numbers: one table per device, printed to the console and
written as report.md, each with its Pareto frontier starred, its recommendation and why,
and the rows that could not be measured. Rendering only: every number comes computed
(bench.analysis) in the report's result.
"""

from __future__ import annotations

from rich.table import Table

from bench.analysis import DEVICE_LABELS
from edgener.runtime.console import console, print_wide

COLUMNS = ("artifact", "backend", "prec.", "test F1", "p50 ms", "± ms", "p99 ms", "x floor",
           "sent/s 1", "sent/s batched", "x batch-1", "model x floor", "text ms", "≠ alone",
           "MB", "RSS MB", "x eager", "x peer")


def cells(row: dict) -> list[str]:
    """One row under COLUMNS, as text: the console and report.md show the same cells."""
    def number(value, fmt, unit=""):
        return "–" if value is None else format(value, fmt) + unit

    return [row["name"] + (" (peer)" if row["is_peer"] else ""), row["backend"],
            row["precision"], f"{100 * row['test_f1']:.2f}", f"{row['p50_ms']:.2f}",
            f"{row['p50_spread_ms']:.2f}", f"{row['p99_ms']:.2f}",
            number(row["floor_ratio"], ".1f"), f"{row['batch1_sps']:.0f}",
            f"{row['batched_sps']:.0f}", f"{row['batched_vs_batch1']:.2f}x",
            number(row["batched_floor_ratio"], ".1f"), f"{row['batched_text_ms']:.3f}",
            str(row["batched_differs"]), f"{row['size_mb']:.1f}", f"{row['peak_rss_mb']:.0f}",
            number(row["speedup_vs_eager"], ".2f", "x"),
            number(row["speedup_vs_peer"], ".2f", "x")]


def device_title(device: dict, threads: int) -> str:
    """'CPU: AMD EPYC 7B13, 2 threads' or 'GPU: NVIDIA H200'."""
    label = DEVICE_LABELS[device["type"]]
    return f"{label}: {device['name']}" + (f", {threads} threads" if device["type"] == "cpu"
                                           else "")


def device_rows(result: dict, device: dict) -> list[dict]:
    """The result's rows measured on `device`, in the report's order."""
    return [r for r in result["rows"] if r["device_type"] == device["type"]]


def print_table(result: dict) -> None:
    """Each device's table, the rows not measured, then each device's recommendation."""
    for device in result["devices"]:
        table = Table(title=f"Latency against F1 on the {device_title(device, result['threads'])}"
                            " (★ Pareto frontier; speedups against the eager teacher on this "
                            "device" + (" and the ORT peer)" if device["type"] == "cpu" else ")"))
        for index, column in enumerate(COLUMNS):
            table.add_column(column, justify="left" if index < 3 else "right",
                             no_wrap=index == 0)
        for row in device_rows(result, device):
            front = row["name"] in device["pareto"]
            values = cells(row)
            if front:
                values[0] = "★ " + values[0]
            table.add_row(*values, style="dim" if row["is_peer"] else ("bold" if front else ""))
        print_wide(table, 230)  # eighteen columns
    for failure in result["failed"]:
        console.print(f"[red]not measured[/]: {failure['name']}: {failure['error']}")
    for device in result["devices"]:
        recommendation = device["recommendation"]
        console.print(f"[bold]{recommendation['summary']}[/]", highlight=False)
        if recommendation["reason"]:
            console.print(f"  {recommendation['reason']}", highlight=False)
        if recommendation.get("context"):
            console.print(f"  {context_trade_off(recommendation['context'])}", highlight=False)


def context_trade_off(context: dict) -> str:
    """What reading each sentence in its document costs and gives, in words."""
    how = "packed into windows by document" if context.get("pack_documents") else \
        f"up to {context['context_tokens']} tokens of context each side"
    return (f"Read in their documents ({how}), the test sentences score "
            f"{100 * context['f1_in_context']:.2f} F1 "
            f"against {100 * context['f1_alone']:.2f} alone, at "
            f"{context['sps_in_context']:.0f} sentences/s against {context['sps_alone']:.0f} "
            f"({context['in_context_vs_alone']:.2f}x the speed): each sentence reads "
            f"{context['tokens_in_context']:.0f} tokens instead of "
            f"{context['tokens_alone']:.0f}.")


def markdown(result: dict) -> str:
    """report.md: how it was measured, then each device's table and recommendation."""
    gemm = result["gemm_gflops"]
    lines = [
        "# edge-ner report",
        "",
        f"- date: {result['date']}",
        f"- command: `{result['command']}`",
        f"- machine: {result['machine']}; {result['threads']} threads",
        f"- matrix throughput of the CPU (same run): FP32 {gemm['fp32']:.0f} GFLOP/s "
        f"(PyTorch GEMM), INT8 {gemm['int8']:.0f} GOP/s (ONNX Runtime MatMulInteger)",
        f"- test F1 on {result['test_sentences']} sentences, batched as the runtime batches; "
        f"latency: text in, entities out, batch 1, "
        f"{result['settings']['latency_sentences']} test sentences x "
        f"{result['settings']['latency_rounds']} rounds after "
        f"{result['settings']['warmup']} warm-up calls (± is the spread of p50 across "
        "rounds)",
        f"- throughput over the test split, {result['settings']['throughput_rounds']} "
        "alternating rounds: `sent/s 1` one text a call; `sent/s batched` all texts in one "
        "call, the runtime's token-budget batching (windows sorted by length across the call, "
        f"{result['settings']['batch_tokens']} padded tokens a model call); `x batch-1` the "
        "paired ratio; `model x floor` the batched model calls' time over the floor of the "
        "tokens they ran, padding included; `text ms` the work around the model (words, "
        "subwords, decoding, entities) per text; `≠ alone` the test texts whose entities "
        "batched differ from alone (a type or span, or a score by more than 0.001)",
        "- floor (CPU rows): FLOPs from the model's shape over the matrix throughput of its "
        "precision; `x floor` is batch 1's p50 over the median sentence's",
        "- each device is compared on its own: `x eager` is the speedup against the teacher "
        "in Hugging Face PyTorch eager FP32 on the same device, and the frontier and the "
        "recommendation are the device's",
        f"- wall time: {result['wall_s'] / 60:.1f} min",
    ]
    for device in result["devices"]:
        lines += ["", f"## {device_title(device, result['threads'])}", ""]
        if device["type"] == "cpu":
            lines += ["x peer: speedup against the teacher's ONNX Runtime dynamic INT8 "
                      "(unfused); " + (
                          "paired: each row's latency rounds alternate with the peer's in the "
                          "row's own process, a ratio is the median over rounds, and x eager "
                          "is the row's x peer over the teacher's" if device["anchored"] else
                          "ratios of p50s measured in separate processes") + ".", ""]
        else:
            lines += ["Ratios of p50s measured in separate processes, against "
                      f"`{device['reference']}`.", ""]
        lines += ["| " + " | ".join(COLUMNS) + " |",
                  "|" + "|".join(["---"] * 3 + ["---:"] * (len(COLUMNS) - 3)) + "|"]
        for row in device_rows(result, device):
            values = cells(row)
            if row["name"] in device["pareto"]:
                values[0] = f"**{values[0]}** ★"
            lines.append("| " + " | ".join(values) + " |")
        recommendation = device["recommendation"]
        lines += ["", "★: on this device's Pareto frontier of latency against F1.", "",
                  "### Recommendation", "", recommendation["summary"] + "."]
        if recommendation["reason"]:
            lines += ["", recommendation["reason"][0].upper() + recommendation["reason"][1:]
                      + "."]
        if recommendation.get("context"):
            lines += ["", context_trade_off(recommendation["context"])]
    if result["failed"]:
        lines.append("")
    for failure in result["failed"]:
        lines.append(f"- not measured: {failure['name']}: {failure['error']}")
    return "\n".join(lines) + "\n"
