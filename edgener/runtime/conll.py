"""CoNLL-style files: a token and its tag a line, blank lines between sentences."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgener.runtime.errors import UserError
from edgener.runtime.tags import is_valid_tag

# CoNLL files, or the JSON (Lines) of an annotation tool (edgener.runtime.spans).
SPLIT_FILES = {
    "train": ("train.txt", "train", "train.jsonl", "train.json"),
    "valid": ("valid.txt", "valid", "dev.txt", "dev", "valid.jsonl", "valid.json",
              "dev.jsonl", "dev.json"),
    "test": ("test.txt", "test", "test.jsonl", "test.json"),
}


class DataError(UserError, ValueError):
    """Bad input data; the message names the file and line."""


@dataclass
class Sentence:
    words: list[str]
    tags: list[str]
    # Line of each word in its source file, for error messages; 0 where there is no file.
    lines: list[int] = field(default_factory=list)
    # Which document of its file it belongs to (counted by -DOCSTART- lines; a file without
    # them is one document, its sentences in order): the context a sentence is read in.
    document: int = 0


def read_conll(path: str | Path) -> list[Sentence]:
    """Read one CoNLL-style file: token first, tag last, blank lines between sentences.

    Columns may be separated by spaces or tabs; a -DOCSTART- line starts a new document
    (`Sentence.document`). Raises DataError naming the file and line for anything it cannot
    read faithfully.
    """
    path = Path(path)
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: file is empty")
    sentences: list[Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    lines: list[int] = []
    document = 0

    def close_sentence() -> None:
        if words:
            sentences.append(Sentence(words.copy(), tags.copy(), lines.copy(), document))
            words.clear()
            tags.clear()
            lines.clear()

    for number, raw_line in enumerate(raw.split(b"\n"), start=1):
        try:
            line = raw_line.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DataError(
                f"{path}:{number}: not valid UTF-8 (byte {raw_line[error.start]:#04x} "
                f"at column {error.start + 1})"
            ) from None
        if number == 1:  # an editor's byte-order mark is no part of the first token
            line = line.removeprefix("\ufeff")
        columns = line.split()
        if not columns:
            close_sentence()
            continue
        if columns[0] == "-DOCSTART-":
            close_sentence()
            document += bool(sentences)  # the first document starts with the file
            continue
        if len(columns) < 2:
            raise DataError(
                f"{path}:{number}: expected a token and a tag, found one column {line.strip()!r}"
            )
        tag = columns[-1]
        if not is_valid_tag(tag):
            raise DataError(
                f"{path}:{number}: malformed tag {tag!r} (expected O or B-/I-/E-/S- and a type)"
            )
        words.append(columns[0])
        tags.append(tag)
        lines.append(number)
    close_sentence()
    if not sentences:
        raise DataError(f"{path}: no sentences found")
    return sentences


def find_split_file(folder: Path, split: str) -> Path:
    for name in SPLIT_FILES[split]:
        candidate = folder / name
        if candidate.is_file():
            return candidate
    raise DataError(
        f"{folder}: no {split} file (looked for {', '.join(SPLIT_FILES[split])})"
    )
