"""`edge-ner label ... --output DIR`: files into a folder of shard files, in this process or on
a local Ray instance the tests start (2 CPUs); killed workers, a killed driver, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from edgener.cli.main import main
from edgener.labelling.job import PLAN_FILE, TEMP_MARK
from edgener.runtime.errors import UserError
from tests.conftest import module_env
from tests.test_cli import EDGE_NER, entity_dicts
from tests.test_predictor import TEXTS, artifacts  # noqa: F401 (a fixture)

WORDS = ("Maria Lopez", "Northwind Traders", "New York", "Köln", "Bob O'Neil", "Contoso")


def texts(count: int, seed: int = 0) -> list[str]:
    """Varied texts, none alike, so a row out of place or tagged twice shows."""
    return [f"{WORDS[(i + seed) % 6]} met {WORDS[(i * 7 + seed) % 6]} on day {i}. "
            f"{TEXTS[i % 3]}" for i in range(count)]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """A text file, a JSON Lines file (other fields, a blank line) and a Parquet file of
    row groups of 40, with 100, 90 and 130 rows."""
    root = tmp_path_factory.mktemp("inputs")
    paths = {"text": root / "notes.txt", "jsonl": root / "posts.jsonl",
             "parquet": root / "archive.parquet"}
    paths["text"].write_text("\n".join(texts(100)) + "\n", encoding="utf-8")
    lines = [json.dumps({"id": i, "body": t, "tags": ["a", i]}) for i, t in
             enumerate(texts(90, seed=1))]
    paths["jsonl"].write_text("\n".join(lines[:50] + [""] + lines[50:]) + "\n",
                              encoding="utf-8")
    table = pa.table({"doc": list(range(130)), "body": texts(130, seed=2),
                      "score": [i / 10 for i in range(130)]})
    pq.write_table(table, paths["parquet"], row_group_size=40)
    return paths


def label(*args: str) -> int:
    return main(["label", *map(str, args)])


def read_output(folder: Path) -> list[dict]:
    rows = []
    for path in sorted(folder.glob("part-*")):
        if path.suffix == ".parquet":
            rows.extend(pq.read_table(path).to_pylist())
        else:
            rows.extend(json.loads(line) for line in path.read_text(encoding="utf-8")
                        .splitlines())
    return rows


def test_every_row_once_in_order_with_its_columns_and_the_runtimes_entities(
        artifacts, inputs, tmp_path):  # noqa: F811
    artifact = artifacts["onnx-int8"]
    out = tmp_path / "out"
    assert label(artifact, inputs["jsonl"], inputs["parquet"], "--output", out, "--column",
                 "body", "--shard-rows", "25", "--threads", "1") == 0
    rows = read_output(out)
    expected_texts = texts(90, seed=1) + texts(130, seed=2)
    assert [r["body"] for r in rows] == expected_texts
    assert [r["id"] for r in rows[:90]] == list(range(90))
    assert rows[7]["tags"] == ["a", 7]  # JSON fields kept as they were
    assert [r["doc"] for r in rows[90:]] == list(range(130))
    assert rows[95]["score"] == pytest.approx(0.5)
    assert [r["entities"] for r in rows] == entity_dicts(artifact, expected_texts)
    assert any(r["entities"] for r in rows)
    # Line files cut at 25 rows; Parquet at whole row groups of 40 (one group a shard).
    names = sorted(p.name for p in out.glob("part-*"))
    assert names == [f"part-00000-{i:012d}.jsonl" for i in (0, 25, 50, 75)] + \
        [f"part-00001-{i:012d}.jsonl" for i in (0, 40, 80, 120)]


def test_parquet_out_holds_the_input_columns_and_typed_entities(artifacts, inputs, tmp_path):  # noqa: F811,E501
    out = tmp_path / "out"
    assert label(artifacts["onnx-int8"], inputs["parquet"], "--output", out, "--column", "body",
                 "--format", "parquet", "--threads", "1") == 0
    table = pq.read_table(sorted(out.glob("part-*.parquet"))[0])
    assert table.schema.field("doc").type == pa.int64()
    entity = table.schema.field("entities").type.value_type
    assert [(f.name, str(f.type)) for f in entity] == [
        ("type", "string"), ("text", "string"), ("start", "int64"), ("end", "int64"),
        ("score", "double")]
    rows = table.to_pylist()
    assert [r["entities"] for r in rows] == entity_dicts(artifacts["onnx-int8"],
                                                          texts(130, seed=2))


def test_a_text_file_gives_the_rows_label_writes_for_one_file(artifacts, inputs, tmp_path):  # noqa: F811,E501
    one_file = tmp_path / "one.jsonl"
    assert label(artifacts["onnx-int8"], inputs["text"], "--output", one_file) == 0
    folder = tmp_path / "folder"
    assert label(artifacts["onnx-int8"], inputs["text"], "--output", folder, "--format",
                 "parquet") == 0
    single = [json.loads(line) for line in one_file.read_text(encoding="utf-8").splitlines()]
    assert read_output(folder) == single and len(single) == 100


def test_a_rerun_writes_only_the_missing_shards_and_clears_leftovers(
        artifacts, inputs, tmp_path, capfd):  # noqa: F811
    out = tmp_path / "out"
    args = (artifacts["onnx-int8"], inputs["text"], inputs["jsonl"], "--output", out,
            "--column", "body", "--shard-rows", "30", "--threads", "1")
    # A text file's lines are the --column field of its rows.
    assert label(*args) == 0
    whole = read_output(out)
    assert [r["body"] for r in whole[:100]] == texts(100)
    parts = sorted(out.glob("part-*"))
    # As a crash leaves it: one shard never written, another's temporary file half written.
    parts[2].unlink()
    (out / f"{parts[3].name}{TEMP_MARK}dead").write_text('{"half": ', encoding="utf-8")
    untouched = {p.name: p.stat().st_mtime_ns for p in parts if p != parts[2]}
    capfd.readouterr()
    assert label(*args) == 0
    assert "resuming: 6 of 7 shards (160 rows) already written" in capfd.readouterr().err
    assert read_output(out) == whole
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("part-*") if p != parts[2]} == \
        untouched
    assert not list(out.glob(f"*{TEMP_MARK}*"))
    assert label(*args) == 0
    assert "already holds all 7 shards" in capfd.readouterr().err


def test_a_folder_of_another_job_or_other_files_is_refused(artifacts, inputs, tmp_path):  # noqa: F811,E501
    out = tmp_path / "out"
    assert label(artifacts["onnx-int8"], inputs["jsonl"], "--output", out, "--column",
                 "body") == 0
    with pytest.raises(UserError, match="another labelling job"):
        label(artifacts["onnx-int8"], inputs["jsonl"], "--output", out, "--column", "body",
              "--shard-rows", "7")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(UserError, match="not empty"):
        label(artifacts["onnx-int8"], inputs["text"], "--output", tmp_path / "mine")


def test_globs_folders_and_file_urls_name_the_same_files(artifacts, inputs, tmp_path):  # noqa: F811,E501
    outs = {}
    for name, given in (("glob", str(inputs["text"].parent / "*.txt")),
                        ("url", inputs["text"].as_uri())):
        outs[name] = tmp_path / name
        assert label(artifacts["onnx-int8"], given, "--output", outs[name]) == 0
    assert read_output(outs["glob"]) == read_output(outs["url"])
    assert len(read_output(outs["url"])) == 100


@pytest.mark.parametrize("case, message", [
    ("missing", "no input at"),
    ("glob", "matches no file"),
    ("empty", "hold no rows"),
    ("column", "c.jsonl:1: no 'body' field (it has text)"),
    ("parquet-column", "has no column 'body' (it has doc, text)"),
    ("not-parquet", "not a readable Parquet file"),
    ("bad-json", "bad.jsonl:2: not JSON"),
    ("not-text", "row 2: 'body' is int, not text"),
    ("utf8", "not valid UTF-8"),
    ("conll-format", "--format conll tags one file"),
])
def test_bad_input_is_one_line(artifacts, tmp_path, case, message):  # noqa: F811
    path = tmp_path / {"missing": "nothing.jsonl", "glob": "none-*.jsonl", "empty": "e.jsonl",
                       "column": "c.jsonl", "parquet-column": "p.parquet",
                       "not-parquet": "x.parquet", "bad-json": "bad.jsonl",
                       "not-text": "n.jsonl", "utf8": "u.txt",
                       "conll-format": "f.jsonl"}[case]
    if case == "empty":
        path.write_text("\n\n", encoding="utf-8")
    elif case in ("column", "conll-format"):
        path.write_text('{"text": "Bob"}\n', encoding="utf-8")
    elif case == "parquet-column":
        pq.write_table(pa.table({"doc": [1], "text": ["Bob"]}), path)
    elif case == "not-parquet":
        path.write_text("PAR1 but not really", encoding="utf-8")
    elif case == "bad-json":
        path.write_text('{"body": "Bob"}\n{"body": "Ann\n', encoding="utf-8")
    elif case == "not-text":
        path.write_text('{"body": "Bob"}\n{"body": 7}\n', encoding="utf-8")
    elif case == "utf8":
        path.write_bytes(b"Bob in K\xf6ln\n")
    fmt = ["--format", "conll"] if case == "conll-format" else []
    result = subprocess.run(
        [str(EDGE_NER), "label", str(artifacts["onnx-int8"]), str(path), "--output",
         str(tmp_path / "out"), "--column", "text" if case == "utf8" else "body", *fmt],
        env=module_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
    assert message in result.stderr


# On Ray: a local instance of 2 CPUs that each command starts and stops.

def start_label(artifact: Path, source: Path, out: Path, log: Path) -> subprocess.Popen:
    """The big input on Ray, 2 workers x 1 thread, in the reference's shards of 400 rows."""
    command = [str(EDGE_NER), "label", str(artifact), str(source), "--output", str(out),
               "--engine", "ray", "--workers", "2", "--threads", "1", "--shard-rows", "400"]
    # Output to a file: a pipe nobody drains would stall the command once it is full.
    return subprocess.Popen(command, env=module_env(), stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def finish(process: subprocess.Popen, log: Path) -> str:
    try:
        code = process.wait(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    text = log.read_text(encoding="utf-8")
    assert code == 0, text
    return text


def wait_for_parts(out: Path, count: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 240
    while len(list(out.glob("part-*.jsonl"))) < count:
        assert process.poll() is None and time.monotonic() < deadline, "no output appeared"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def big_input(tmp_path_factory) -> Path:
    """Enough rows that the job is still running when a test kills part of it."""
    path = tmp_path_factory.mktemp("big") / "big.txt"
    path.write_text("\n".join(texts(24_000)) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reference(artifacts, big_input, tmp_path_factory) -> Path:  # noqa: F811
    """The big input labelled in one process."""
    out = tmp_path_factory.mktemp("reference") / "out"
    assert label(artifacts["onnx-int8"], big_input, "--output", out, "--shard-rows", "400",
                 "--threads", "1") == 0
    return out


def same_files(out: Path, reference: Path) -> None:
    names = sorted(p.name for p in reference.glob("part-*"))
    assert sorted(p.name for p in out.glob("part-*")) == names
    for name in names:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


def test_ray_writes_the_files_one_process_writes(artifacts, big_input, reference, tmp_path):  # noqa: F811,E501
    out, log = tmp_path / "out", tmp_path / "log"
    process = start_label(artifacts["onnx-int8"], big_input, out, log)
    text = finish(process, log)
    same_files(out, reference)
    assert "labelled 24,000 rows into 60 files" in text


def ray_actors() -> list[int]:
    listing = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True)
    return [int(line.split()[0]) for line in listing.stdout.splitlines()
            if "MapWorker" in line and "ShardLabeller" in line]


def test_a_killed_worker_is_replaced_and_the_output_is_the_same(
        artifacts, big_input, reference, tmp_path):  # noqa: F811
    out, log = tmp_path / "out", tmp_path / "log"
    process = start_label(artifacts["onnx-int8"], big_input, out, log)
    wait_for_parts(out, 2, process)
    actors = ray_actors()
    assert len(actors) == 2, "two Ray actors expected"
    os.kill(actors[0], signal.SIGKILL)
    assert len(list(out.glob("part-*"))) < 60  # killed mid-job
    finish(process, log)
    same_files(out, reference)


def test_a_killed_driver_leaves_whole_files_and_a_rerun_finishes_the_rest(
        artifacts, big_input, reference, tmp_path):  # noqa: F811
    out, log = tmp_path / "out", tmp_path / "log"
    process = start_label(artifacts["onnx-int8"], big_input, out, log)
    wait_for_parts(out, 3, process)
    os.kill(process.pid, signal.SIGKILL)  # the driver only, as kill -9 would
    process.wait(timeout=60)
    time.sleep(2)  # the local Ray instance goes down with its driver
    written = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")}
    assert 3 <= len(written) < 60
    for name in written:  # every file there is whole
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    rerun = start_label(artifacts["onnx-int8"], big_input, out, log)
    text = finish(rerun, log)
    assert f"resuming: {len(written)} of 60 shards" in text
    same_files(out, reference)
    assert {n: (out / n).stat().st_mtime_ns for n in written} == written
    assert not list(out.glob(f"*{TEMP_MARK}*"))
    assert (out / PLAN_FILE).is_file()


def test_bad_input_found_by_an_actor_is_one_line(artifacts, tmp_path):  # noqa: F811
    path = tmp_path / "late.jsonl"
    rows = [{"body": t} for t in texts(50)] + [{"body": None}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = subprocess.run(
        [str(EDGE_NER), "label", str(artifacts["onnx-int8"]), str(path), "--output",
         str(tmp_path / "out"), "--column", "body", "--engine", "ray", "--workers", "1",
         "--shard-rows", "20"], env=module_env(), capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"error: {path}, row 51: 'body' is NoneType, not text", result.stderr
    assert "Traceback" not in result.stderr
