"""`edge-ner`: the one command.

    edge-ner predict ARTIFACT "Angela Merkel visited Paris."
    edge-ner label ARTIFACT notes.txt --output notes.jsonl
    edge-ner evaluate ARTIFACT test.txt
    edge-ner info ARTIFACT
    edge-ner serve ARTIFACT --port 8080   (an HTTP service; needs edge-ner[serve])
    edge-ner build-engine ARTIFACT   (a trt-int8 engine for this GPU; needs TensorRT)
    edge-ner pretrain|teacher|distill|quantize|report ...   (the pipeline's stages; need extras)

Exit codes: 0 on success, 1 on a user error (one line on stderr), 2 on bad usage. The
serving commands import only the runtime (ONNX Runtime, tokenizers, numpy); a stage
imports its training stack when it runs, and says which extra to install if it is missing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from edgener.cli.commands import (
    command_build_engine,
    command_evaluate,
    command_info,
    command_label,
    command_predict,
    command_serve,
)
from edgener.runtime.console import run_cli
from edgener.training.stage import run_stage_module

# subcommand -> (module whose main(argv) runs it, what it does)
STAGE_COMMANDS = {
    "pretrain": ("pretrain.train", "MLM pretraining of the backbone on your own text (needs "
                 "edge-ner[train])"),
    "teacher": ("teacher.train", "fine-tune the teacher (needs edge-ner[train])"),
    "distill": ("distill.train", "distill students from the teacher (needs edge-ner[train])"),
    "quantize": ("quantize.build", "build INT8 artifacts (needs edge-ner[train,quantize])"),
    "report": ("bench.report", "latency against F1 of every artifact (needs edge-ner[all])"),
}


def stage_command(name: str, argv: list[str]) -> int:
    """A pipeline stage (teacher, distill, quantize, report), which parses its own options."""
    return run_stage_module(STAGE_COMMANDS[name][0], argv, f"edge-ner {name}")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def build_parser() -> argparse.ArgumentParser:
    from edgener.labelling.job import SHARD_ROWS
    from edgener.runtime.inference import BATCH_TOKENS

    parser = argparse.ArgumentParser(
        prog="edge-ner", description="Named entities from raw text with a small, fast model, "
        "and the pipeline that makes it.", formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def artifact_command(name: str, help: str, handler) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument("artifact", help="an artifact folder: runs/<run>/quantized/<name>, "
                         "runs/<run>/students/<name> or runs/<run>/teacher")
        sub.add_argument("--threads", type=positive_int, default=None,
                         help="CPU threads (default: all cores)")
        sub.add_argument("--max-batch-tokens", type=positive_int, default=BATCH_TOKENS,
                         metavar="N", help="padded tokens per model call (default "
                         f"{BATCH_TOKENS}); a larger budget holds more memory")
        sub.set_defaults(handler=handler)
        return sub

    predict = artifact_command("predict", "entities of texts as JSON lines", command_predict)
    predict.add_argument("text", nargs="*", help="texts to tag; none: one a line from stdin")
    predict.add_argument("--document", action="store_true",
                         help="the texts are consecutive parts of one document (an artifact "
                              "trained with context reads each with the others around it)")
    label = artifact_command(
        "label", "tag files: a text file (a text a line, JSON lines out) or a CoNLL file (the "
        "predicted tag as a last column); or Parquet, JSON Lines and text files, globs and "
        "object-store URLs into a folder, each row with its entities, resumable (--output "
        "DIR)", command_label)
    label.add_argument("input", nargs="+", help="the files to tag")
    label.add_argument("--format", choices=("jsonl", "conll", "doccano", "label-studio",
                                            "parquet"), default="jsonl",
                       help="jsonl: JSON lines out; conll: a CoNLL file in, the same lines "
                       "with the predicted tag appended out; doccano, label-studio: "
                       "pre-annotations the tool imports; parquet: Parquet files in DIR")
    label.add_argument("--output", help="write here (default: stdout); a folder (a name "
                       "without a suffix, or ending in /) gets a file a shard, resumable; "
                       "Parquet or JSON Lines inputs, several inputs or --engine ray need one")
    label.add_argument("--column", default="text",
                       help="the column (JSON field) holding the text (default: text)")
    label.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="local: this process; ray: Ray Data's actors, on a local "
                       "instance or the cluster at --address (needs edge-ner[ray])")
    label.add_argument("--workers", type=positive_int, default=None,
                       help="Ray actors, each loading the model once (default: the "
                       "cluster's CPUs over --threads)")
    label.add_argument("--address", default=None,
                       help="a Ray cluster to join (auto: the one this node belongs to; "
                       "default: start one on this machine)")
    label.add_argument("--shard-rows", type=positive_int, default=SHARD_ROWS, metavar="N",
                       help=f"rows a shard (default {SHARD_ROWS:,}): an output file each, "
                       "the work a rerun after a crash may redo")
    evaluate = artifact_command("evaluate", "entity precision, recall and F1 on labelled data",
                                command_evaluate)
    evaluate.add_argument("data", help="a CoNLL file, an annotation tool's JSON (Lines) with "
                          "character spans, or a dataset folder (its --split file)")
    evaluate.add_argument("--split", default="test", choices=("train", "valid", "test"))
    evaluate.add_argument("--json", action="store_true", help="the scores as JSON")
    evaluate.add_argument("--span-format", default="auto",
                          choices=("auto", "doccano", "label-studio", "cluener"),
                          help="span files: the tool's shape (default: told from the records)")
    evaluate.add_argument("--snap-spans", action="store_true",
                          help="span files: widen a span off word boundaries to whole words "
                          "(else an error)")
    serve = artifact_command("serve", "serve an artifact over HTTP: POST /v1/entities, "
                             "/healthz, /v1/model, /metrics, /openapi.json (needs "
                             "edge-ner[serve])", command_serve)
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--max-wait-ms", type=float, default=5.0, metavar="MS",
                       help="how long a request may wait for others to share its model call "
                       "(default 5; 0: every request a model call of its own)")
    serve.add_argument("--max-queue", type=positive_int, default=256, metavar="N",
                       help="requests waiting for the model before new ones get 503")
    serve.add_argument("--max-text-chars", type=positive_int, default=100_000, metavar="N")
    serve.add_argument("--max-texts", type=positive_int, default=256, metavar="N",
                       help="texts in one request")
    serve.add_argument("--max-body-bytes", type=positive_int, default=1_000_000, metavar="N")
    serve.add_argument("--timeout-ms", type=positive_int, default=30_000, metavar="MS",
                       help="a request not answered by then gets 504")
    serve.add_argument("--spinning", action="store_true",
                       help="let ONNX Runtime's threads spin between operators (faster on "
                       "cores the server does not share; off by default)")
    serve.add_argument("--log-json", action="store_true", help="log a JSON object a line")
    serve.add_argument("--api-key", default=None, metavar="KEY",
                       help="every route but /healthz needs 'Authorization: Bearer KEY' "
                       "(better: $EDGE_NER_API_KEY or --api-key-file, which stay out of "
                       "process listings and shell history)")
    serve.add_argument("--api-key-file", default=None, metavar="PATH",
                       help="read the API key from this file")
    serve.add_argument("--metrics-without-key", action="store_true",
                       help="leave /metrics open to scrapers without the key")
    serve.add_argument("--ssl-keyfile", default=None, metavar="PATH",
                       help="serve HTTPS with this private key (and --ssl-certfile)")
    serve.add_argument("--ssl-certfile", default=None, metavar="PATH")
    serve.add_argument("--insecure", action="store_true",
                       help="serve beyond this machine (--host other than loopback) without "
                       "an API key")
    engine = commands.add_parser(
        "build-engine", help="rebuild a trt-int8 artifact's TensorRT engine for this GPU "
        "and TensorRT release, from the model.qdq.onnx it ships (needs TensorRT and CUDA)")
    engine.add_argument("artifact", help="a trt-int8 folder: runs/<run>/quantized/<name>")
    engine.set_defaults(handler=command_build_engine)
    info = commands.add_parser("info", help="what an artifact is and what it scores")
    info.add_argument("artifact")
    info.add_argument("--verify", action="store_true",
                      help="check every file against the SHA-256 in its manifest")
    info.add_argument("--json", action="store_true")
    info.set_defaults(handler=command_info)
    for name, (_, help) in STAGE_COMMANDS.items():
        stage = commands.add_parser(name, help=help, add_help=False)
        stage.add_argument("stage_args", nargs=argparse.REMAINDER)
        stage.set_defaults(stage=name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in STAGE_COMMANDS:  # the stage parses its own options (and --help)
        return stage_command(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    return args.handler(args)


def entry() -> None:
    """The console script."""
    try:
        sys.exit(run_cli(main))
    except BrokenPipeError:  # `edge-ner predict ... | head`: the reader left
        sys.stderr.close()
        sys.exit(0)
