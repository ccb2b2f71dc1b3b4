"""Build deployable artifacts for every model of a run, each checked through the runtime
that will serve it; publish runs/<run>/quantized/<model>-<variant>.

    python -m quantize [--preset default|FILE.yaml] [--quick] [--fresh] [key=value ...]

For each model (the teacher and the distilled students): export FP32 ONNX and check it
against PyTorch, then build the ONNX Runtime, neural-compressor and (on CUDA) TensorRT
variants, measure each one's valid F1, and judge it against the FP32 ONNX reference.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.table import Table

from edgener.backends.torch_eager import TorchBackend
from edgener.predictor import MODEL_FILES, Predictor
from edgener.runtime.artifacts import (
    MANIFEST,
    ArtifactError,
    publish_dir,
    read_json,
    write_json_atomic,
)
from edgener.runtime.backend import Backend, OnnxBackend
from edgener.runtime.conll import Sentence
from edgener.runtime.console import console
from edgener.runtime.inference import batch_invariance, score, word_logits
from edgener.training.backbone import load_stage_model
from edgener.training.config import (
    ConfigError,
    as_dict,
    load_config,
    parse_overrides,
    preset_path,
    run_path,
    stage_parser,
)
from edgener.training.datasets import load_recorded_dataset
from edgener.training.publish import fingerprint, machine, make_manifest, seal_folder
from quantize import ort_quant
from quantize.config import GPU_VARIANTS, QuantizeConfig
from quantize.onnx_export import ParityError, compare, export_onnx
from quantize.source import Built, Source, calibration_reader

HINT = "make teacher"
FAILURES = "failures.json"  # runs/<run>/quantized/: variants that failed, and why
SHAPE_KEYS = ("architecture", "layers", "hidden_size", "heads", "intermediate_size")


def main(argv: list[str] | None = None, prog: str = "python -m quantize") -> int:
    parser = stage_parser(prog, __doc__, "quantize", "fewer sentences, fewer trials",
                          fresh="rebuild up-to-date artifacts", preset="default")
    args = parser.parse_args(argv)
    config = load_config(QuantizeConfig, preset_path("quantize", args.preset),
                         parse_overrides(args.overrides), args.quick)
    if config.threads:
        torch.set_num_threads(config.threads)
    # ONNX Runtime's quantizer logs advice on the root logger at every call.
    logging.getLogger().setLevel(logging.ERROR)
    return quantize(config, args.fresh)


def quantize(config: QuantizeConfig, fresh: bool) -> int:
    run_dir = run_path(config.runs_dir, config.run)
    sources = find_models(run_dir, config.models)
    dataset = load_recorded_dataset(read_json(sources[0][1] / MANIFEST), config.dataset,
                                    config.data_dir)
    splits = {"train": dataset.split("train"),
              "valid": dataset.split("valid")[: config.eval_limit],
              "test": dataset.split("test")[: config.eval_limit]}
    console.print(f"[bold]quantize[/]: {len(sources)} model(s) from {run_dir}; F1 checks on "
                  f"{len(splits['valid'])} valid sentences; budget: at most "
                  f"{100 * config.max_f1_drop:g}% relative F1 drop against FP32 ONNX")
    variants = list(config.variants)
    gpu = [v for v in variants if v in GPU_VARIANTS]
    if gpu:
        from quantize.tensorrt_build import tensorrt_available

        available, reason = tensorrt_available()
        if not available:
            console.print(f"[yellow]skipping {', '.join(gpu)}[/]: {reason}", soft_wrap=True)
            variants = [v for v in variants if v not in GPU_VARIANTS]
    rows = []
    for name, folder in sources:
        stage = "teacher" if name == "teacher" else "student"
        model, tokenizer, labels, manifest, encoder = load_stage_model(folder, stage, HINT)
        source = Source(name, folder, model.eval(), tokenizer, labels, manifest, encoder,
                        run_dir / ".quantize-work" / name)
        rows += quantize_model(source, config, variants, splits, run_dir / "quantized", fresh)
    failed = [row for row in rows if "failed" in row]
    # The run's record of what could not be built (an empty list once all were).
    (run_dir / "quantized").mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "quantized" / FAILURES, failed)
    print_summary(rows, run_dir / "quantized")
    return 1 if failed else 0


def find_models(run_dir: Path, names: list | None) -> list[tuple[str, Path]]:
    """(name, folder) of the teacher and each distilled student (baselines only on request)."""
    teacher = run_dir / "teacher"
    if not (teacher / MANIFEST).is_file():
        raise ArtifactError(f"{teacher} holds no teacher ({MANIFEST} missing); run `{HINT}` first")
    found = [("teacher", teacher)]
    students = run_dir / "students"
    for folder in sorted(students.glob("*")) if students.is_dir() else []:
        if (folder / MANIFEST).is_file():
            found.append((folder.name, folder))
    if names is None:
        return [(n, f) for n, f in found if not n.endswith("-baseline")]
    known = {n for n, _ in found}
    missing = [n for n in names if n not in known]
    if missing:
        raise ConfigError(f"models: {', '.join(missing)} not found in {run_dir}; "
                          f"known: {', '.join(sorted(known))}")
    return [(n, f) for n, f in found if n in names]


def quantize_model(source: Source, config: QuantizeConfig, variants: list[str],
                   splits: dict[str, list[Sentence]], out_root: Path, fresh: bool) -> list[dict]:
    source.work.mkdir(parents=True, exist_ok=True)
    # Which models and variants this run builds does not change any one artifact.
    base_id = fingerprint([source.fingerprint,
                           as_dict(config) | {"models": None, "variants": None}])
    console.print(f"\n[bold]{source.name}[/] ({source.folder})")

    def variant_id(variant: str) -> str:
        return fingerprint([base_id, variant])

    def up_to_date(variant: str) -> dict | None:
        """The published manifest of `variant`, if it was built from this model and config."""
        path = out_root / f"{source.name}-{variant}" / MANIFEST
        if fresh or not path.is_file():
            return None
        manifest = read_json(path)
        return manifest if manifest.get("config_fingerprint") == variant_id(variant) else None

    published = [up_to_date(variant) for variant in variants]
    if all(published):  # nothing to build: skip the export and its parity check
        for variant in variants:
            console.print(f"  {source.name}-{variant}: up to date")
        return published

    # The FP32 export, checked against PyTorch before anything is built on it.
    plain = source.work / "model.onnx"
    export_onnx(source.model, plain, config.opset)
    fp32 = OnnxBackend(plain, config.threads)
    valid_words = [s.words for s in splits["valid"]]
    parity = compare(TorchBackend(source.model), fp32, source.encoder, valid_words,
                     source.labels, config.eval_batch_tokens)
    if not parity.ok(config.parity_atol):
        raise ParityError(f"{source.name}: the ONNX export does not match PyTorch on valid: "
                          f"{parity.describe()} (tolerance {config.parity_atol:g})")
    console.print(f"  ONNX export matches PyTorch: {parity.describe()}")
    reference = evaluate(fp32, source, splits["valid"], config)["f1"]
    min_f1 = reference * (1 - config.max_f1_drop)

    rows = []
    for variant, manifest in zip(variants, published, strict=True):
        out_dir = out_root / f"{source.name}-{variant}"
        if manifest:
            console.print(f"  {out_dir.name}: up to date")
            rows.append(manifest)
            continue
        started = time.time()
        try:
            with console.status(f"  building {variant}"):
                built = build_variant(variant, source, config, plain, splits, min_f1,
                                      parity=parity, reference=reference)
            valid = evaluate(built.runtime, source, splits["valid"], config)
            test = evaluate(built.runtime, source, splits["test"], config)
            seconds = time.time() - started
            built.details["latency"] = batch1_latency(built.runtime, source,
                                                      splits["valid"], config.threads,
                                                      on_gpu=variant in GPU_VARIANTS)
            built.details["batch_invariance"] = batch_invariance(
                built.runtime, source.encoder,
                [s.words for s in splits["valid"][: config.invariance_sentences]],
                config.eval_batch_tokens)
            manifest = publish(out_dir, built, source, config, variant_id(variant), valid,
                               test, reference, min_f1, seconds)
        except Exception as error:  # one variant's failure must not cost the others
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            console.print(f"  [red]{out_dir.name} failed[/]: {reason}", soft_wrap=True)
            rows.append({"name": out_dir.name, "model": source.name, "variant": variant,
                         "failed": f"{type(error).__name__}: {reason}"})
            continue
        console.print(f"  {out_dir.name}: valid F1 {100 * valid['f1']:.2f} "
                      f"({100 * (valid['f1'] - reference):+.2f}), {manifest['size_mb']:.1f} MB, "
                      + ("within budget" if manifest["within_budget"] else
                         "[red]over budget[/]"))
        rows.append(manifest)
    shutil.rmtree(source.work, ignore_errors=True)
    return rows


def batch1_latency(backend: Backend, source: Source, sentences: list[Sentence],
                   threads: int | None, on_gpu: bool = False, count: int = 200) -> dict:
    """Batch-1 latency, raw text to entities, on the machine that builds the artifact: what
    its model card can say of speed (the report measures it beside every other row)."""
    step = max(1, len(sentences) // count)
    texts = [" ".join(s.words) for s in sentences[::step][:count]]
    predictor = Predictor(backend, source.encoder, source.labels)
    for text in texts[:10]:
        predictor.predict(text)
    times = []
    for text in texts:
        tick = time.perf_counter()
        predictor.predict(text)
        times.append(1000 * (time.perf_counter() - tick))
    return {"p50_ms": round(float(np.percentile(times, 50)), 3),
            "p90_ms": round(float(np.percentile(times, 90)), 3), "sentences": len(texts),
            "threads": threads or os.cpu_count(), "machine": machine(),
            "gpu": torch.cuda.get_device_name(0) if on_gpu else None}


def evaluate(backend: Backend, source: Source, sentences: list[Sentence],
             config: QuantizeConfig) -> dict:
    return score(backend, source.encoder, [s.words for s in sentences],
                 [s.tags for s in sentences], source.labels, config.eval_batch_tokens,
                 [s.document for s in sentences])


def build_variant(variant: str, source: Source, config: QuantizeConfig, plain: Path,
                  splits: dict, min_f1: float, parity, reference: float) -> Built:
    work = source.work
    shape = source.model.config
    if variant == "onnx-fp32":
        return Built({"model.onnx": plain}, "onnxruntime", "fp32",
                     OnnxBackend(plain, config.threads),
                     {"graph": "exported", "parity": {"max_abs_logit_diff": parity.max_abs_diff,
                                                      "tag_mismatches": parity.tag_mismatches,
                                                      "sentences": parity.sentences}})
    if variant in ("ort-fp32", "ort-int8-dynamic"):
        if source.fused is None:  # both variants start from the same fused graph
            path = work / "fused.onnx"
            source.fused = path, ort_quant.fuse(plain, path, shape.num_attention_heads,
                                                shape.hidden_size)
        fused, fused_ops = source.fused
        if variant == "ort-fp32":
            return Built({"model.onnx": fused}, "onnxruntime", "fp32",
                         OnnxBackend(fused, config.threads), {"graph": "fused",
                                                              "fused_ops": fused_ops})
        dynamic = work / "dynamic.onnx"
        ort_quant.quantize_dynamic_int8(fused, dynamic)
        return Built({"model.onnx": dynamic}, "onnxruntime", "int8",
                     OnnxBackend(dynamic, config.threads),
                     {"graph": "fused", "fused_ops": fused_ops, "quantization": "dynamic",
                      "weights": "int8 per-tensor",
                      "activations": "uint8, quantized at run time with one scale and zero "
                                     "point per sequence, over its real tokens",
                      "fp32_ops": ort_quant.float_ops(dynamic)})
    if variant == "ort-int8-static":
        return build_static(source, config, plain, splits, reference)
    if variant == "inc-int8":
        from quantize import inc_quant

        return inc_quant.build(source, config, splits, min_f1, work)
    from quantize import tensorrt_build

    def f1_of(backend: Backend) -> float:
        return evaluate(backend, source, splits["valid"], config)["f1"]

    return tensorrt_build.build(variant, source, config, plain, splits, work, f1_of, min_f1)


def build_static(source: Source, config: QuantizeConfig, plain: Path, splits: dict,
                 reference: float) -> Built:
    """Static QDQ; layers go back to FP32, most sensitive first, while it misses its budget."""
    work = source.work
    reader = calibration_reader(source, config, splits)
    target = work / "static.onnx"
    ort_quant.quantize_static_qdq(plain, target, reader, config.calibration_method,
                                  config.quantize_embeddings)

    def f1_at(path: Path) -> float:
        return evaluate(OnnxBackend(path, config.threads), source, splits["valid"], config)["f1"]

    min_f1 = reference * (1 - config.static_max_f1_drop)
    f1 = f1_at(target)
    fallback = {"full_int8_valid_f1": f1, "fp32_groups": [], "sensitivity": {}}
    if f1 < min_f1:
        fp32 = OnnxBackend(plain, config.threads)
        check = [s.words for s in splits["train"][: min(config.calibration_sentences, 256)]]
        expected = word_logits(fp32, source.encoder, check, config.eval_batch_tokens)

        def logit_error(path: Path) -> float:
            actual = word_logits(OnnxBackend(path, config.threads), source.encoder, check,
                                 config.eval_batch_tokens)
            return sum(ort_quant.mean_squared_logit_error(a, b)
                       for a, b in zip(expected, actual, strict=True) if a.size) / len(check)

        console.print(f"  static INT8 valid F1 {100 * f1:.2f} misses {100 * min_f1:.2f}; "
                      "measuring layer sensitivity")
        f1, kept, sensitivity = ort_quant.sensitivity_fallback(
            plain, target, reader, config.calibration_method, config.quantize_embeddings,
            logit_error, f1_at, min_f1, progress=lambda text: console.print(f"    {text}"))
        fallback |= {"fp32_groups": kept, "sensitivity": sensitivity, "valid_f1": f1}
    # The graph, not the fallback's bookkeeping, says whether anything INT8 is left: a
    # model with none is an FP32 model under another name, and is labelled FP32 (its folder
    # keeps the variant's name, which up-to-date checks and reruns look it up by).
    quantized = ort_quant.quantized_groups(target)
    precision = "int8" if quantized else "fp32"
    if not quantized:
        console.print(f"  [yellow]{fp32_note(fallback)}[/]")
    return Built({"model.onnx": target}, "onnxruntime", precision,
                 OnnxBackend(target, config.threads),
                 {"graph": "exported", "quantization": "static QDQ",
                  "quantized_groups": quantized,
                  "calibration": {"method": config.calibration_method,
                                  "sentences": reader.sentences, "split": "train"},
                  "weights": "int8 symmetric per-channel, 7-bit range",
                  "activations": "uint8 asymmetric",
                  "embeddings_quantized": config.quantize_embeddings,
                  "fp32_ops": ort_quant.float_ops(target), "fallback": fallback})


def fp32_note(fallback: dict) -> str:
    kept, groups = fallback.get("fp32_groups") or [], fallback.get("sensitivity") or {}
    if groups and len(kept) == len(groups):
        return "all groups kept in FP32: published as FP32"
    return "no operator left in INT8: published as FP32"


def precision_note(row: dict) -> str | None:
    """A line for the summary when a quantized artifact is not what its name says: nothing
    INT8 left, or only part of it INT8 after the sensitivity fallback."""
    fallback = row.get("fallback") or {}
    if row.get("quantization") and row.get("precision") == "fp32":
        return f"{row['name']}: {fp32_note(fallback)}"
    kept, groups = fallback.get("fp32_groups") or [], fallback.get("sensitivity") or {}
    if kept:
        return (f"{row['name']}: {', '.join(kept)} kept in FP32 ({len(kept)} of {len(groups)} "
                "groups), the rest INT8")
    return None


def publish(out_dir: Path, built: Built, source: Source, config: QuantizeConfig,
            config_id: str, valid: dict, test: dict, reference: float, min_f1: float,
            seconds: float) -> dict:
    # The model's size, not its companions' (a trt-int8 folder also ships the engine's
    # source, which the box never loads).
    size = file_size(built.files[MODEL_FILES[built.backend]])
    manifest = make_manifest(
        "quantized",
        config_fingerprint=config_id,
        name=out_dir.name,
        variant=out_dir.name[len(source.name) + 1:],
        backend=built.backend,
        precision=built.precision,
        source=str(source.folder),
        source_name=source.name,
        source_params=sum(p.numel() for p in source.model.parameters()),
        # What the model card says it was made from, carried over from the source.
        base_model=source.manifest.get("model_source") or source.manifest.get("base_model"),
        dataset=source.manifest.get("dataset"),
        **{key: source.manifest[key] for key in SHAPE_KEYS if key in source.manifest},
        labels=source.labels,
        encoding=source.encoder.settings(),
        **built.details,
        valid_f1=valid["f1"],
        reference_valid_f1=reference,
        f1_change=valid["f1"] - reference,
        max_f1_drop=config.max_f1_drop,
        within_budget=valid["f1"] >= min_f1,
        test_f1=test["f1"],
        size_mb=round(size / 2**20, 2),
        build_seconds=round(seconds, 1),
    )
    with publish_dir(out_dir) as staging:
        for name, path in built.files.items():
            if path.is_dir():
                shutil.copytree(path, staging / name)
            else:
                shutil.copy2(path, staging / name)
        source.tokenizer.save_pretrained(staging)
        write_json_atomic(staging / "labels.json", source.labels)
        metrics = {"valid": valid, "test": test}
        write_json_atomic(staging / "metrics.json", metrics)
        return seal_folder(staging, out_dir, manifest, metrics)


def file_size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def print_summary(rows: list[dict], where: Path) -> None:
    table = Table(title="Quantized artifacts (valid F1 against FP32 ONNX)")
    table.add_column("artifact", no_wrap=True)
    for column in ("size", "valid F1", "change", "verdict"):
        table.add_column(column, justify="left" if column == "verdict" else "right",
                         no_wrap=True)
    built = [row for row in rows if "failed" not in row]
    for row in rows:
        if "failed" in row:
            table.add_row(row["name"], "–", "–", "–", f"[red]FAILED[/]: {row['failed']}")
            continue
        verdict = "[green]ok[/]" if row["within_budget"] else "[red]OVER BUDGET[/]"
        table.add_row(row["name"], f"{row['size_mb']:.1f} MB", f"{100 * row['valid_f1']:.2f}",
                      f"{100 * row['f1_change']:+.2f}", verdict)
    console.print(table)
    failed = [row["name"] for row in rows if "failed" in row]
    if failed:
        console.print(f"[red]{len(failed)} variant(s) failed[/]: {', '.join(failed)} (the "
                      f"others were built; reasons in {where / FAILURES})", soft_wrap=True)
    rows = built
    for note in filter(None, map(precision_note, rows)):
        console.print(f"[yellow]{note}[/]", soft_wrap=True)
    over = [row["name"] for row in rows if not row["within_budget"]]
    if over:
        console.print(f"[red]{len(over)} artifact(s) over budget[/]: {', '.join(over)} "
                      "(kept, marked in their manifests)")
    console.print(f"artifacts in [bold]{where}[/]")


if __name__ == "__main__":
    sys.exit(main())
