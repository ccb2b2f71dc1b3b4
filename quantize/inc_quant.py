"""Intel Neural Compressor (INC 3.x): accuracy-aware static INT8 through PyTorch 2 export (PT2E).

The classifier is exported with dynamic batch and sequence dimensions, and INC's `autotune`
walks its static INT8 tuning set (symmetric or asymmetric activations, KL or min-max
calibration): each trial is calibrated on train sentences, scored by entity F1 on valid
through the kernels that will serve it, and tuning stops at the first trial within
`max_f1_drop` (relative) of the FP32 graph or after `inc_max_trials`, keeping the best.

The artifact is INC's PT2E save (an ExportedProgram and its qconfig.json); loading it needs
torch, torchao and neural-compressor only, not this project's code (see
`edgener.backends.torch_graph.IncBackend`).

Measured on a 2-core AVX2 machine (torch 2.13, INC 3.10, torchao 0.18):
  * the converted graph run as is computes in FP32 with fake quantize/dequantize steps;
    INT8 kernels (oneDNN qlinear) appear only with torch.compile *and* inductor freezing,
    set through `torch._inductor.config` (passing {"freezing": True} as a torch.compile
    option fails with UnsupportedOperatorException: onednn.qlinear_prepack.default);
  * compiling a 2-layer toy model took 8-20 s (up to ~50 s while the machine was busier);
    with dynamic=True it did not recompile across batch and sequence sizes, except for a
    batch of one (0/1 specialisation, ~20 s more): hence the padding in
    `edgener.backends.torch_graph.GraphBackend`;
  * on a CPU without VNNI, oneDNN's u8 x s8 kernels saturate: the toy model's logits moved
    by ~6% of their scale (~40% untrained), against <1% (~4%) for the same graph run
    uncompiled. torchao advises reduce_range=True there, which INC 3.10 does not expose.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from edgener.backends.torch_eager import TokenLogits
from edgener.backends.torch_graph import (
    GraphBackend,
    IncBackend,
    is_quantized,
    quiet_neural_compressor,
)
from edgener.runtime.artifacts import ArtifactError
from edgener.runtime.backend import MODEL_INPUTS
from edgener.runtime.console import console
from edgener.runtime.inference import score
from quantize.config import QuantizeConfig
from quantize.source import Built, Source, calibration_reader

if TYPE_CHECKING:
    from neural_compressor.torch.quantization import INT8StaticQuantConfig

# Operators that do the arithmetic of a transformer; each is INT8 when its tensor operands
# (the activation and the weight, or both attention operands) come out of dequantize nodes.
COMPUTE_OPS = ("linear", "matmul", "bmm", "mm", "addmm", "baddbmm", "conv1d", "conv2d",
               "scaled_dot_product_attention", "embedding")
EXAMPLE_SHAPE = (2, 8)  # export and save trace with it; 0 or 1 would pin a dimension


def example_inputs(pad_id: int = 0) -> tuple[torch.Tensor, ...]:
    ids = torch.full(EXAMPLE_SHAPE, pad_id, dtype=torch.long)
    return ids, torch.ones(EXAMPLE_SHAPE, dtype=torch.long), torch.zeros_like(ids)


def dynamic_shapes(max_length: int) -> tuple[dict, ...]:
    from torch.export import Dim

    batch = Dim("batch", min=1)
    sequence = Dim("sequence", min=1, max=max_length)
    return tuple({0: batch, 1: sequence} for _ in MODEL_INPUTS)


def export_for_pt2e(model: torch.nn.Module, max_length: int,
                    pad_id: int = 0) -> torch.fx.GraphModule:
    """The classifier as an ATen graph for PT2E quantization, SDPA attention."""
    from neural_compressor.torch.export import export

    config = model.config
    previous = config._attn_implementation
    # The ONNX export switches the shared model to eager attention; inductor has a fused
    # CPU kernel for SDPA, and the attention products stay FP32 either way.
    config._attn_implementation = "sdpa"
    try:
        graph = export(TokenLogits(model.eval()), example_inputs(pad_id),
                       dynamic_shapes=dynamic_shapes(max_length))
    except RuntimeError as error:
        # INC logs the cause and raises a generic error; keep both in one line.
        raise ArtifactError(f"neural-compressor: torch.export of the classifier failed "
                            f"({str(error).splitlines()[0]})") from error
    finally:
        config._attn_implementation = previous
    return graph


def calibrate(model: torch.nn.Module, batches: Sequence[dict[str, np.ndarray]]) -> None:
    """Run the observed (prepared) model over calibration batches."""
    with torch.no_grad():
        for batch in batches:
            model(*(torch.from_numpy(batch[name]) for name in MODEL_INPUTS))


def tuning_set() -> INT8StaticQuantConfig:
    """INC's own static INT8 tuning set (four configs: activations sym/asym x KL/min-max)."""
    from neural_compressor.torch.quantization import StaticQuantConfig

    return StaticQuantConfig.get_config_set_for_tuning(dtype="int8")


def config_summary(config: INT8StaticQuantConfig | dict) -> dict:
    """The quantization settings of an INC config (or of its saved dict form)."""
    settings = config if isinstance(config, dict) else config.to_dict()
    return {k: v for k, v in settings.items() if k.startswith(("w_", "act_"))}


def model_config(model: torch.nn.Module) -> dict:
    """The settings INC quantized a model with (its qconfig holds one static config)."""
    qconfig = getattr(model, "qconfig", None) or {}
    return config_summary(next(iter(qconfig.values()))) if qconfig else {}


def compute_ops(model: torch.nn.Module) -> tuple[dict[str, int], dict[str, int]]:
    """(INT8, FP32) counts of the graph's compute operators, by operator name."""

    def dequantized(arg) -> bool:
        return isinstance(arg, torch.fx.Node) and arg.op == "call_function" and \
            "dequantize" in getattr(arg.target, "_opname", "")

    int8, fp32 = Counter(), Counter()
    for node in model.graph.nodes:
        name = getattr(node.target, "_opname", None)
        if node.op != "call_function" or name not in COMPUTE_OPS:
            continue
        # embedding(weight, indices): integer indices are never quantized.
        operands = node.args[:1] if name == "embedding" else node.args[:2]
        (int8 if all(dequantized(a) for a in operands) else fp32)[name] += 1
    return dict(int8), dict(fp32)


def store_int8_weights(model: torch.fx.GraphModule) -> int:
    """Replace each weight's quantize node by its int8 result and drop the FP32 original.

    INC converts with fold_quantize=False, so its graph quantizes FP32 weights at every
    call and its save stores them in FP32: the artifact would be as large as the FP32
    model. Outputs are unchanged (same op, same scale). Returns how many weights changed.
    """
    graph = model.graph
    folded = 0
    for node in list(graph.nodes):
        if getattr(node.target, "_opname", "") != "quantize_per_channel" or \
                not all(isinstance(a, torch.fx.Node) and a.op == "get_attr"
                        for a in node.args[:3]):
            continue
        with torch.no_grad():
            values = node.target(*[_attribute(model, a.target) for a in node.args[:3]],
                                 *node.args[3:])
        name = f"int8_weight_{folded}"
        model.register_buffer(name, values)
        with graph.inserting_before(node):
            replacement = graph.get_attr(name)
        replacement.meta = dict(node.meta)
        node.replace_all_uses_with(replacement)
        graph.erase_node(node)
        folded += 1
    graph.eliminate_dead_code()
    used = {node.target for node in graph.nodes if node.op == "get_attr"}
    for name, _ in [*model.named_parameters(), *model.named_buffers()]:
        if name not in used:
            owner, _, attr = name.rpartition(".")
            delattr(model.get_submodule(owner), attr)
    model.recompile()
    return folded


def _attribute(model: torch.nn.Module, target: str) -> torch.Tensor:
    value = model
    for part in target.split("."):
        value = getattr(value, part)
    return value


def build(source: Source, config: QuantizeConfig, splits: dict, min_f1: float,
          work: Path) -> Built:
    """INC accuracy-aware static INT8 of `source`, saved under work/inc."""
    quiet_neural_compressor()  # the stage reports each trial itself
    from neural_compressor.torch.quantization import TuningConfig, autotune
    from neural_compressor.torch.quantization import quantize as inc_quantize

    seconds: dict[str, float] = {}
    started = time.time()
    encoder = source.encoder
    max_length = min(encoder.max_length, source.model.config.max_position_embeddings)
    pad_id = encoder.pad_id or 0
    graph = export_for_pt2e(source.model, max_length, pad_id)
    seconds["export"] = time.time() - started

    reader = calibration_reader(source, config, splits)  # train sentences only

    def run_fn(model: torch.nn.Module) -> None:
        calibrate(model, reader.batches)

    valid = splits["valid"]
    trials: list[dict] = []
    baseline: list[float] = []

    def eval_fn(model: torch.nn.Module) -> float:
        f1 = score(GraphBackend(model, config.threads), encoder, [s.words for s in valid],
                   [s.tags for s in valid], source.labels, config.eval_batch_tokens,
                   [s.document for s in valid])["f1"]
        if not is_quantized(model):
            if f1 <= 0:
                # INC divides by the baseline when it reports a trial.
                raise _ZeroBaseline
            baseline.append(f1)
        else:
            trials.append({"trial": len(trials) + 1, "config": model_config(model),
                           "valid_f1": f1})
            console.print(f"    INC trial {len(trials)}: valid F1 {100 * f1:.2f} with "
                          f"{_describe(trials[-1]['config'])}")
        return f1

    # A list, although TuningConfig documents a single config too: autotune iterates it.
    tuning = TuningConfig(config_set=[tuning_set()], tolerable_loss=config.max_f1_drop,
                          max_trials=config.inc_max_trials)
    started = time.time()
    try:
        model = autotune(graph, tuning, eval_fn=eval_fn, run_fn=run_fn,
                         example_inputs=example_inputs(pad_id))
        note = None
    except _ZeroBaseline:
        # Any trial meets a budget relative to 0, so autotune would keep its first one.
        first = tuning_set().expand()[0]
        model = inc_quantize(graph, quant_config=first, run_fn=run_fn,
                             example_inputs=example_inputs(pad_id))
        note = "FP32 valid F1 is 0: no tuning, INC's first static config kept"
    except ArtifactError:
        raise
    except Exception as error:
        raise ArtifactError(f"neural-compressor: autotune failed ({type(error).__name__}: "
                            f"{str(error).splitlines()[0] if str(error) else ''})") from error
    if model is None and trials:
        # INC returns nothing when its config set runs out before a stop condition.
        best = max(trials, key=lambda t: t["valid_f1"])
        chosen = next(c for c in tuning_set().expand()
                      if config_summary(c) == best["config"])
        model = inc_quantize(graph, quant_config=chosen, run_fn=run_fn,
                             example_inputs=example_inputs(pad_id))
    if model is None:
        raise ArtifactError("neural-compressor: autotune returned no model and ran no trial")
    seconds["tuning"] = time.time() - started

    best_config = model_config(model)
    int8_ops, fp32_ops = compute_ops(model)
    folded = store_int8_weights(model)
    folder = work / "inc"
    shutil.rmtree(folder, ignore_errors=True)
    started = time.time()
    try:
        # neural_compressor.torch.quantization.save(model, dir) passes the folder as the
        # PT2E save's example inputs; the model's own save takes them explicitly.
        model.save(example_inputs=example_inputs(pad_id), output_dir=str(folder))
    except Exception as error:
        raise ArtifactError(f"neural-compressor: saving the INT8 graph failed "
                            f"({type(error).__name__}: {str(error).splitlines()[0]})"
                            ) from error
    seconds["save"] = time.time() - started

    best_f1 = max((t["valid_f1"] for t in trials if t["config"] == best_config), default=None)
    if best_f1 is not None and best_f1 < min_f1:
        console.print(f"    INC: best trial F1 {100 * best_f1:.2f} misses "
                      f"{100 * min_f1:.2f}; keeping it")
    # A private helper: None where a later torch drops it.
    vnni = getattr(torch.cpu, "_is_vnni_supported", lambda: None)()
    details = {
        "graph": "torch.export (PT2E), dynamic batch and sequence",
        "quantization": "static, INC autotune over StaticQuantConfig's INT8 tuning set",
        "calibration": {"sentences": reader.sentences, "split": "train",
                        "batches": len(reader.batches)},
        "weights": f"int8 symmetric per-channel ({folded} matrices stored as int8)",
        "activations": _describe(best_config),
        "kernels": "torch.compile(dynamic=True) with inductor freezing (oneDNN INT8 GEMMs)",
        "cpu_vnni": vnni,
        "int8_ops": int8_ops,
        "fp32_ops": fp32_ops,
        "tuning": {"trials": len(trials), "max_trials": config.inc_max_trials,
                   "tolerable_loss": config.max_f1_drop,
                   "fp32_valid_f1": baseline[0] if baseline else 0.0,
                   "best": best_config, "best_valid_f1": best_f1, "history": trials,
                   **({"note": note} if note else {})},
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }
    if not vnni:
        details["warning"] = ("no VNNI on this CPU: oneDNN's u8 x s8 GEMMs may saturate "
                              "(INC 3.10 offers no reduce_range); F1 is measured through them")
    return Built({"inc": folder}, "neural-compressor", "int8",
                 IncBackend(folder, config.threads), details)


class _ZeroBaseline(Exception):
    """The FP32 graph scores 0 F1, which INC's relative-loss report cannot divide by."""


def _describe(settings: dict) -> str:
    if not settings:
        return "unknown"
    scheme = "symmetric" if settings.get("act_sym") else "asymmetric"
    return (f"{settings.get('act_dtype')} {scheme} {settings.get('act_granularity')}, "
            f"{settings.get('act_algo')} calibration")
