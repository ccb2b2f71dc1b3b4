"""Model cards: the README.md every published folder (teacher, student, quantized) carries,
rendered from its manifest and metrics, so that a folder copied elsewhere or uploaded to
the Hugging Face hub still says what it is, how good it is and how to run it.

One renderer serves the three stages; a fact the manifest lacks is left out, not guessed.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from edgener.runtime.encoding import CASE_CLASSES

STAGE_TITLES = {"teacher": "teacher", "student": "distilled student", "quantized": "quantized"}
# Backends whose folders run in PyTorch, so need the training extra installed.
TORCH_BACKENDS = ("pytorch", "neural-compressor")
TENSORRT_BACKENDS = ("tensorrt", "torch-tensorrt")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx", ".engine", ".ep", ".pt")


def render_card(manifest: dict, metrics: dict, folder: str | Path) -> str:
    """The model card of the folder `folder` (named in its commands as given) as Markdown
    with a Hugging Face front matter block."""
    folder = str(folder)
    if manifest.get("stage") == "pretrained":
        return pretrained_card(manifest, folder)
    sections = [
        front_matter(manifest),
        what_it_is(manifest, folder),
        made_from(manifest),
        scores(manifest, metrics),
        vocabulary(manifest),
        latency(manifest),
        batching(manifest),
        gpu_binding(manifest, folder),
        input_contract(manifest),
        casing_warning(manifest),
        usage(manifest, folder),
    ]
    return "\n\n".join(s for s in sections if s) + "\n"


def pretrained_card(manifest: dict, folder: str) -> str:
    """The card of a pretrained backbone: how it was made, and what it predicts of held-out
    text; it tags nothing until `make teacher` fine-tunes it."""
    corpus, vocab = manifest.get("corpus") or {}, manifest.get("vocabulary") or {}
    heldout, training = manifest.get("heldout") or {}, manifest.get("training") or {}
    objective = manifest.get("objective") or {}
    probability = objective.get("mlm_probability", 0)
    extras = [name for key, name in (("whole_word_mask", "whole words masked"),
                                     ("nsp", "next-sentence prediction")) if objective.get(key)]
    start = {"continue": f"`{manifest.get('model_source')}`, as it was",
             "extend": f"`{manifest.get('model_source')}` with {vocab.get('added', 0):,} "
                       "tokens added to its vocabulary (old ids and rows unchanged)",
             "scratch": "random weights and a WordPiece vocabulary learned from the text"}
    lines = [f"Started from {start.get(manifest.get('mode'), '?')}; {vocab.get('size', '?'):,} "
             "tokens in its vocabulary.",
             f"Text: {corpus.get('source', '?')}, {corpus.get('lines', 0):,} lines "
             f"({corpus.get('removed_as_valid_or_test', 0):,} removed for holding a valid or "
             f"test sentence), {corpus.get('tokens', 0):,} tokens in blocks of "
             f"{corpus.get('block_size', '?')}.",
             f"Objective: masked-language modelling, {pct(probability)}% of the tokens "
             "chosen (80% [MASK], 10% random, 10% kept)"
             + "".join(f", {extra}" for extra in extras) + "; "
             f"{training.get('epochs', '?')} epoch(s), {training.get('steps', 0):,} steps, "
             f"{training.get('tokens_per_s', 0):,} tokens/s"
             + (f", the embeddings at their own learning rate {objective['embedding_lr']:g}"
                if objective.get("embedding_lr") else "") + "."]
    if vocab.get("added_first"):
        lines.append("First tokens added: "
                     + " ".join(f"`{token}`" for token in vocab["added_first"][:20]))
    data = {"language": manifest.get("language") or "en", "tags": ["fill-mask", "bert"],
            "pipeline_tag": "fill-mask"}
    return "\n\n".join([
        f"---\n{yaml.safe_dump(data, sort_keys=False)}---",
        f"# {Path(folder).name}\n\nA BERT backbone pretrained by edge-ner's pretrain stage "
        f"({manifest.get('mode', '?')} mode), {manifest.get('layers')} layers, hidden size "
        f"{manifest.get('hidden_size')}.",
        "## What it was made from\n\n" + "\n".join(f"- {line}" for line in lines),
        f"## Held-out text\n\nMasked tokens predicted right: "
        f"{pct(heldout.get('accuracy', 0))}% (loss {heldout.get('loss', float('nan')):.3f}, "
        f"{heldout.get('masked_tokens', 0):,} masked tokens)"
        + (f"; next sentence told right: {pct(heldout['next_sentence_accuracy'])}%."
           if "next_sentence_accuracy" in heldout else "."),
        "## Use it\n\nA backbone, not a tagger: fine-tune it for NER with\n\n```bash\n"
        "make teacher ARGS=model=pretrained   # the run's own runs/<run>/pretrained\n"
        f"make teacher ARGS=model={folder}\n```"]) + "\n"


def pct(fraction: float) -> str:
    return f"{100 * fraction:.2f}"


def backend_of(manifest: dict) -> str:
    return manifest.get("backend", "pytorch")


def base_model(manifest: dict) -> str | None:
    return manifest.get("model_source") or manifest.get("base_model")


def dataset_name(manifest: dict) -> str | None:
    name = (manifest.get("dataset") or {}).get("name")
    return Path(str(name)).name if name else None  # a folder path names it by its last part


def front_matter(manifest: dict) -> str:
    # The hub reads these keys; a license is not claimed, since the base model's decides it.
    language = manifest.get("language") or (
        "zh" if "chinese" in str(base_model(manifest)).lower() else "en")
    data = {"language": language, "tags": ["token-classification", "ner"],
            "pipeline_tag": "token-classification", "metrics": ["f1"]}
    if dataset_name(manifest):
        data["datasets"] = [dataset_name(manifest)]
    return f"---\n{yaml.safe_dump(data, sort_keys=False)}---"


def what_it_is(manifest: dict, folder: str) -> str:
    stage = manifest.get("stage", "?")
    title = manifest.get("name") or Path(folder).name
    kind = STAGE_TITLES.get(stage, stage)
    if stage == "quantized" and manifest.get("variant"):
        kind += f" ({manifest['variant']})"
    rows = [("stage", kind), ("backend", backend_of(manifest)),
            ("precision", manifest.get("precision", "fp32"))]
    if manifest.get("architecture"):
        layers = manifest.get("layers")
        rows.append(("architecture", f"{manifest['architecture']}, {layers} "
                                     f"layer{'' if layers == 1 else 's'}, hidden size "
                                     f"{manifest.get('hidden_size')}"))
    params = manifest.get("params") or manifest.get("source_params")
    if params:
        rows.append(("parameters", f"{params / 1e6:.1f}M"))
    size = size_on_disk(manifest)
    if size:
        rows.append(("size on disk", size))
    table = "\n".join(f"| {key} | {value} |" for key, value in rows)
    return (f"# {title}\n\nA named-entity recognition (token classification) model made by "
            f"edge-ner's {stage} stage.\n\n| | |\n|---|---|\n{table}")


def size_on_disk(manifest: dict) -> str | None:
    files = manifest.get("files") or {}
    model_mb = manifest.get("size_mb") or sum(
        r["bytes"] for name, r in files.items() if name.endswith(WEIGHT_SUFFIXES)) / 2**20
    if not model_mb:
        return None
    folder_mb = sum(r["bytes"] for r in files.values()) / 2**20
    whole = f", {folder_mb:.1f} MB the whole folder" if folder_mb else ""
    return f"{model_mb:.1f} MB the model{whole}"


def made_from(manifest: dict) -> str:
    stage = manifest.get("stage")
    lines = {"teacher": teacher_origin, "student": student_origin,
             "quantized": quantized_origin}.get(stage, lambda _: [])(manifest)
    if stage != "teacher" and base_model(manifest):
        lines.append(f"Base model: `{base_model(manifest)}`.")
    dataset = manifest.get("dataset") or {}
    if dataset.get("name"):
        lines.append(f"Data: {dataset_name(manifest)} (`{dataset.get('source', '?')}`).")
    for split, summary in (dataset.get("spans") or {}).items():
        lines.append(f"Character spans of the {split} file, as the runtime splits words: "
                     f"{summary}.")
    return "## What it was made from\n\n" + "\n".join(f"- {line}" for line in lines) \
        if lines else ""


def teacher_origin(manifest: dict) -> list[str]:
    preset = f" (preset `{manifest['preset']}`)" if manifest.get("preset") else ""
    return [f"Fine-tuned from `{base_model(manifest) or '?'}`{preset}: AdamW, linear warm-up "
            "and decay, the best epoch on valid kept."]


def student_origin(manifest: dict) -> list[str]:
    teacher = manifest.get("teacher") or {}
    init = manifest.get("init") or {}
    f1 = f" (test F1 {pct(teacher['test_f1'])})" if "test_f1" in teacher else ""
    lines = [f"Initialised from `{init.get('from', 'teacher')}`"
             + (f" (its layers {init['layers']})" if init.get("layers") else "") + "."]
    if not manifest.get("distilled", True):
        return [*lines, f"Trained on the hard labels only, without distillation: the "
                        f"baseline of its distilled namesake (teacher `{teacher.get('dir')}`)."]
    kd = (manifest.get("losses") or {}).get("kd") or {}
    lines.append(f"Distilled from the teacher `{teacher.get('dir', '?')}`{f1} with TextBrewer.")
    recipe = [f"KD cross-entropy on token logits at temperature {kd.get('temperature')} "
              f"(weight {kd.get('weight')})"] if kd else []
    recipe += [f"{loss} on hidden states, student -> teacher layers {pairs}"
               for loss, pairs in match_pairs(manifest.get("matches") or []).items()]
    recipe.append(f"hard-label cross-entropy (weight "
                  f"{(manifest.get('losses') or {}).get('hard_label_weight')})")
    lines.append("Losses: " + "; ".join(recipe) + ".")
    if manifest.get("augment_copies"):
        lines.append(f"Extra transfer text: {manifest['augment_copies']} mention-replaced "
                     "copies of train, labelled softly by the teacher.")
    if manifest.get("unlabeled_windows"):
        lines.append(f"Unlabeled text: {manifest['unlabeled_windows']} windows labelled "
                     "softly by the teacher.")
    return lines


def match_pairs(matches: list[dict]) -> dict[str, str]:
    """'hidden_mse' -> '1->2 (weight 1.0), ...', one entry per loss."""
    pairs: dict[str, list[str]] = {}
    for match in matches:
        pair = f"{match.get('layer_S')}->{match.get('layer_T')}"
        pairs.setdefault(str(match.get("loss")), []).append(
            f"{pair} (weight {match.get('weight')})")
    return {loss: ", ".join(items) for loss, items in pairs.items()}


def quantized_origin(manifest: dict) -> list[str]:
    lines = [f"Built from `{manifest.get('source', '?')}` "
             f"(the {manifest.get('source_name', '?')} model)."]
    method = manifest.get("quantization")
    if method:
        recipe = [method, *(f"{key} {manifest[key]}" for key in ("weights", "activations")
                            if manifest.get(key))]
        calibration = manifest.get("calibration") or {}
        if calibration:
            recipe.append(f"calibrated on {calibration.get('sentences')} "
                          f"{calibration.get('split', 'train')} sentences"
                          + (f" ({calibration['method']})" if calibration.get("method")
                             else ""))
        lines.append("Quantization: " + "; ".join(recipe) + ".")
    else:
        lines.append(f"No quantization: the FP32 ONNX graph ({manifest.get('graph', '?')}).")
    fallback = manifest.get("fallback") or {}
    if fallback.get("fp32_groups"):
        lines.append(f"Kept in FP32 by the sensitivity fallback: "
                     f"{', '.join(fallback['fp32_groups'])}.")
    for key, precision in (("fp32_ops", "FP32"), ("fp16_ops", "FP16")):
        if method and manifest.get(key):
            lines.append(f"Operators left in {precision}: " + ", ".join(
                f"{op} {n}" for op, n in manifest[key].items()) + ".")
    if "reference_valid_f1" in manifest and "valid_f1" in manifest:
        verdict = "within" if manifest.get("within_budget") else "over"
        lines.append(f"Valid F1 {pct(manifest['valid_f1'])} against "
                     f"{pct(manifest['reference_valid_f1'])} for the FP32 ONNX export: "
                     f"{verdict} the budget of "
                     f"{100 * manifest.get('max_f1_drop', 0):g}% relative drop.")
    return lines


def scores(manifest: dict, metrics: dict) -> str:
    """Valid and test entity F1, overall and per type, as percentages."""
    splits = {split: metrics.get(split) or {} for split in ("valid", "test")}
    for split in splits:  # a folder without metrics still has the manifest's overall F1
        if "f1" not in splits[split] and f"{split}_f1" in manifest:
            splits[split] = {"f1": manifest[f"{split}_f1"]}
    if not any("f1" in s for s in splits.values()):
        return ""
    types = sorted({t for s in splits.values() for t in s.get("per_type", {})})

    def cell(split: str, kind: str | None) -> str:
        row = splits[split] if kind is None else splits[split].get("per_type", {}).get(kind)
        return pct(row["f1"]) if row and "f1" in row else "-"

    rows = [f"| **overall** | {cell('valid', None)} | {cell('test', None)} |",
            *(f"| {kind} | {cell('valid', kind)} | {cell('test', kind)} |" for kind in types)]
    return ("## Entity F1 (%)\n\nExact span and type, micro-averaged over entities.\n\n"
            "| type | valid F1 | test F1 |\n|---|---:|---:|\n" + "\n".join(rows))


def vocabulary(manifest: dict) -> str:
    """How much of its training text the model's vocabulary could read."""
    train = (manifest.get("vocabulary_coverage") or {}).get("train")
    if not train:
        return ""
    text = (f"## Vocabulary coverage\n\nOf its train split, {pct(train['unknown_token_share'])}% "
            f"of subword tokens and {pct(train['unknown_word_share'])}% of words were "
            "`[UNK]` to the vocabulary: the model saw nothing of them.")
    if train.get("top_unknown"):
        text += " The most frequent: " + ", ".join(
            f"`{word}` ({count})" for word, count in train["top_unknown"]) + "."
    return text


def latency(manifest: dict) -> str:
    timing = manifest.get("latency") or {}
    if not timing:
        return ""
    return (f"## Latency\n\nBatch 1, raw text in to entities out, on the machine that built it "
            f"({timing['machine']}, {timing['threads']} threads"
            + (f"; on its GPU, {timing['gpu']}" if timing.get("gpu") else "")
            + f"): p50 {timing['p50_ms']} ms, "
            f"p90 {timing['p90_ms']} ms over {timing['sentences']} valid sentences. "
            "`python -m bench.report` measures it beside every other artifact of the run.")


def gpu_binding(manifest: dict, folder: str) -> str:
    """Where a TensorRT engine runs, and how to run it elsewhere."""
    settings = manifest.get("tensorrt") or {}
    if backend_of(manifest) not in TENSORRT_BACKENDS or not settings.get("gpu"):
        return ""
    from edgener.backends.engines import rebuild_command

    return (f"## GPU\n\nThe engine runs on {settings['gpu']} (compute capability "
            f"{settings.get('compute_capability', '?')}) with TensorRT "
            f"{settings.get('tensorrt_version', '?')} only; anywhere else, rebuild it "
            f"there: `{rebuild_command(folder, backend_of(manifest))}`. Tuned for batch "
            f"{settings['shapes']['opt'][0]} at {settings['shapes']['opt'][1]} tokens; it "
            f"accepts up to {settings['shapes']['max'][0]} windows of "
            f"{settings['shapes']['max'][1]} tokens a call.")


def batching(manifest: dict) -> str:
    check = manifest.get("batch_invariance")
    if not check:
        return ""
    measured = (f"measured on {check['windows']} valid windows, each alone and padded in "
                f"batches beside very different lengths")
    if check["invariant"]:
        return ("## Batching\n\nA text gets the same tags whether it runs alone or batched "
                f"with other texts ({measured}: no tag changed, probabilities moved by at most "
                f"{check['max_probability_diff']:.1g}), so a server may put several callers' "
                "texts in one model call.")
    return ("## Batching\n\nA text's tags can depend on the texts it is batched with "
            f"({measured}: {check['argmax_changes']} token tags changed, probabilities moved "
            f"by up to {check['max_probability_diff']:.2f}). Serve each caller's texts in "
            "model calls of their own.")


def input_contract(manifest: dict) -> str:
    encoding = manifest.get("encoding") or {}
    labels = manifest.get("labels") or []
    return (
        "## Input and output\n\n"
        "- Input: raw UTF-8 text. It is split into words the way CoNLL tokens are "
        "(punctuation apart, `U.S.` and dates whole, CJK characters one by one), the words "
        f"into subwords, and the subwords into windows of at most "
        f"{encoding.get('max_length', '?')} tokens overlapping by "
        f"{encoding.get('window_overlap', '?')}, so a text of any length has every word "
        "tagged.\n"
        + (f"- Context: trained to read each sentence with up to "
           f"{encoding['context_tokens']} subword tokens of the sentences before and after "
           "it in its document (a CoNLL file's `-DOCSTART-` documents; its sentences in "
           "order where it has none).\n" if encoding.get("context_tokens") else "")
        + ("- Context: trained on the sentences of each document packed into windows as one "
           "text; give it whole paragraphs or documents.\n"
           if encoding.get("pack_documents") else "")
        +
        f"- Labels (IOB2, in index order): {', '.join(f'`{x}`' for x in labels)}; tags are "
        "decoded under the IOB2 constraints (never `I-X` after `O`).\n"
        "- Output: entities, each with `start` and `end` (character offsets into the input "
        "string, end exclusive), `type`, `text` (the input from start to end) and `score` "
        "(the mean probability of its tags)."
    )


def casing_warning(manifest: dict) -> str:
    if not (manifest.get("encoding") or {}).get("case_features"):
        return ""
    classes = ", ".join(CASE_CLASSES)
    return (
        "## Casing features: load it with edge-ner\n\n"
        f"The token types carry casing classes ({classes}; see "
        "`edgener.runtime.encoding.CASE_CLASSES`): the token type id of each subword is the casing "
        "class of the word it belongs to. Loading this folder in a plain transformers "
        "pipeline gives every token type 0, so different, worse tags. Load it right with "
        "edge-ner (`edge-ner predict` or `edgener.predictor.load_predictor`), or compute "
        "token_type_ids as the casing class of each subword's word."
    )


def install_line(manifest: dict) -> str:
    backend = backend_of(manifest)
    if backend in TORCH_BACKENDS:
        return "pip install 'edge-ner[train]'   # this folder runs in PyTorch"
    if backend in TENSORRT_BACKENDS:
        return "pip install 'edge-ner[tensorrt]'   # on an NVIDIA GPU with TensorRT"
    return "pip install edge-ner"


def usage(manifest: dict, folder: str) -> str:
    quoted = f'"{folder}"' if " " in folder else folder
    return (
        "## Use it\n\n```bash\n"
        f"{install_line(manifest)}\n"
        f'edge-ner predict {quoted} "Angela Merkel visited Paris."\n'
        f"edge-ner label {quoted} input.txt      # one text a line -> entities\n"
        f"edge-ner evaluate {quoted} test.txt    # a CoNLL-format file -> entity F1\n"
        f"edge-ner info {quoted}                 # what it is; --verify checks its files\n"
        "```\n\n```python\nfrom edgener.predictor import load_predictor\n\n"
        f'predictor = load_predictor("{folder}")\n'
        'predictor.predict("Angela Merkel visited Paris.")\n```'
    )
