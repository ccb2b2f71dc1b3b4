"""Student shapes, their initialisation from the teacher, and the layer matches between them.

Everything here is derived from the two models' configs, so any BERT-style teacher and
student pair works without model-specific code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from transformers import AutoModelForTokenClassification, PretrainedConfig

LAYER_KEY = re.compile(r"\.layer\.(\d+)\.")


@dataclass
class StudentSpec:
    layers: int
    hidden_size: int | None = None  # None: the teacher's
    heads: int | None = None  # None: keep the teacher's head size
    intermediate_size: int | None = None  # None: scaled with the width
    # Copies of the train split with mentions swapped by type, added as teacher-labelled
    # transfer text when this student is distilled (distill/augment.py); not a shape, and
    # its baseline never sees them.
    augment_copies: int = 0
    # A distilled student of the same run to start from instead of the teacher (prune,
    # then distill again): its layers map onto this shape like the teacher's would, and a
    # narrower feed-forward keeps its strongest neurons. The baseline still starts from
    # the teacher.
    init_from: str | None = None


def student_config(teacher: PretrainedConfig, spec: StudentSpec) -> PretrainedConfig:
    config = teacher.__class__.from_dict(teacher.to_dict())
    width = spec.hidden_size or teacher.hidden_size
    head_size = teacher.hidden_size // teacher.num_attention_heads
    heads = spec.heads or max(1, width // head_size)
    if width % heads:
        raise ValueError(f"student width {width} is not divisible by {heads} heads")
    config.num_hidden_layers = spec.layers
    config.hidden_size = width
    config.num_attention_heads = heads
    config.intermediate_size = spec.intermediate_size or round(
        teacher.intermediate_size * width / teacher.hidden_size
    )
    config.architectures = teacher.architectures
    return config


def layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Teacher hidden-state index for each student hidden-state index, embeddings (0) included.

    A uniform mapping: student output i sits at teacher output round(i * Lt / Ls), so the
    last student layer always meets the last teacher layer.
    """
    return [int(i * teacher_layers / student_layers + 0.5) for i in range(student_layers + 1)]


def init_from_model(student: torch.nn.Module, source: torch.nn.Module) -> dict[str, str]:
    """Copy a larger model's weights (the teacher's, or a student's being pruned) into the
    student as well as its shape allows.

    Student layer j takes source layer layer_map(...)[j + 1] - 1 (alternate layers for a
    half-depth student); embeddings and the classifier head come across too. Where the
    student's feed-forward is narrower, each layer keeps the source's most important
    feed-forward neurons (ffn_neuron_order); in every other narrower dimension a tensor
    takes the source tensor's leading slice (weight selection), which keeps whole
    attention heads. Returns which source tensor each student tensor came from.
    """
    layers = layer_map(student.config.num_hidden_layers, source.config.num_hidden_layers)
    source_layer = {j: layers[j + 1] - 1 for j in range(student.config.num_hidden_layers)}
    source_state = source.state_dict()
    ffn_width = source.config.intermediate_size
    neuron_order = ffn_neuron_order(source_state, ffn_width, source.config.hidden_size)
    copied = {}
    with torch.no_grad():
        for name, tensor in student.state_dict().items():
            source_name = LAYER_KEY.sub(lambda m: f".layer.{source_layer[int(m.group(1))]}.",
                                        name)
            if source_name not in source_state:
                continue
            origin = source_state[source_name]
            if origin.ndim != tensor.ndim or any(
                s > t for s, t in zip(tensor.shape, origin.shape, strict=True)
            ):
                continue
            layer = LAYER_KEY.search(source_name)
            order = neuron_order.get(int(layer.group(1))) if layer else None
            for axis, size in enumerate(tensor.shape):
                if order is not None and origin.shape[axis] == ffn_width and size < ffn_width:
                    kept = order[:size].sort().values
                    origin = origin.index_select(axis, kept)
                else:
                    origin = origin.narrow(axis, 0, size)
            tensor.copy_(origin)
            copied[name] = source_name
    return copied


def ffn_neuron_order(state: dict[str, torch.Tensor], ffn_width: int, hidden_size: int
                     ) -> dict[int, torch.Tensor]:
    """Each layer's feed-forward neurons, most important first: a neuron's importance is
    the norm of its input weights times the norm of its output weights (magnitude-based
    structured pruning), so a narrower feed-forward starts from the neurons that carry the
    most signal instead of an arbitrary first slice. Found by shape alone: the [ffn, hidden]
    and [hidden, ffn] weights of a layer (none when the two widths are equal)."""
    if ffn_width == hidden_size:
        return {}
    norms: dict[int, list[torch.Tensor]] = {}
    for name, tensor in state.items():
        layer = LAYER_KEY.search(name)
        if layer is None or tensor.ndim != 2:
            continue
        if tensor.shape == (ffn_width, hidden_size):
            norms.setdefault(int(layer.group(1)), []).append(tensor.norm(dim=1))
        elif tensor.shape == (hidden_size, ffn_width):
            norms.setdefault(int(layer.group(1)), []).append(tensor.norm(dim=0))
    return {layer: torch.stack(found).prod(dim=0).argsort(descending=True)
            for layer, found in norms.items() if len(found) == 2}


def build_student(teacher: torch.nn.Module, spec: StudentSpec, seed: int,
                  source: torch.nn.Module | None = None
                  ) -> tuple[torch.nn.Module, dict[str, str]]:
    """The student's shape follows the spec relative to the teacher; its weights come from
    `source` (spec.init_from's model) when given, else from the teacher."""
    torch.manual_seed(seed)
    student = AutoModelForTokenClassification.from_config(student_config(teacher.config, spec))
    copied = init_from_model(student, source if source is not None else teacher)
    return student, copied


def derive_matches(student: PretrainedConfig, teacher: PretrainedConfig, loss: str,
                   weight: float) -> list[dict]:
    """TextBrewer intermediate matches: every student hidden state (embeddings included)
    against its uniformly mapped teacher hidden state, with a linear projection when the
    widths differ."""
    matches = []
    for layer_s, layer_t in enumerate(layer_map(student.num_hidden_layers,
                                                teacher.num_hidden_layers)):
        match = {"layer_T": layer_t, "layer_S": layer_s, "feature": "hidden",
                 "loss": loss, "weight": weight}
        if student.hidden_size != teacher.hidden_size:
            match["proj"] = ["linear", student.hidden_size, teacher.hidden_size, {}]
        matches.append(match)
    return matches


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
