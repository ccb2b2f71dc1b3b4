"""CoNLL reader and dataset loading, on small files written by the tests themselves."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from edgener.runtime.conll import DataError, read_conll
from edgener.training import datasets as datasets_module
from edgener.training.datasets import DATA_DIR_ENV, load_dataset


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def words_and_tags(sentences) -> list[tuple[list[str], list[str]]]:
    return [(s.words, s.tags) for s in sentences]


@pytest.fixture(autouse=True)
def no_data_dir_env(monkeypatch, tmp_path):
    """Tests must not see a data dir from the environment, nor folders in the cwd."""
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)


# ---------------------------------------------------------------- read_conll: good input


def test_space_separated_columns(tmp_path):
    path = write(
        tmp_path / "a.txt", "ACME B-ORG\nhires O\nDutch B-MISC\n\nMaria B-PER\nLopez I-PER\n"
    )
    assert words_and_tags(read_conll(path)) == [
        (["ACME", "hires", "Dutch"], ["B-ORG", "O", "B-MISC"]),
        (["Maria", "Lopez"], ["B-PER", "I-PER"]),
    ]


def test_tab_and_mixed_separators(tmp_path):
    path = write(tmp_path / "a.txt", "ACME\tB-ORG\nhires \t O\n  Dutch\t\tB-MISC\n")
    assert words_and_tags(read_conll(path)) == [
        (["ACME", "hires", "Dutch"], ["B-ORG", "O", "B-MISC"]),
    ]


def test_token_first_tag_last_with_middle_columns(tmp_path):
    text = "ACME NNP B-NP B-ORG\nhires\tVBZ\tB-VP\tO\nstaff NN I-NP extra O\n"
    path = write(tmp_path / "a.txt", text)
    assert words_and_tags(read_conll(path)) == [
        (["ACME", "hires", "staff"], ["B-ORG", "O", "O"]),
    ]


def test_docstart_lines_end_a_sentence_and_start_a_document(tmp_path):
    lines = [
        "-DOCSTART- -X- -X- O",
        "",
        "ACME B-ORG",
        "-DOCSTART- O",
        "Maria B-PER",
        "",
        "-DOCSTART-",
        "Paris B-LOC",
    ]
    text = "\n".join(lines) + "\n"
    path = write(tmp_path / "a.txt", text)
    assert words_and_tags(read_conll(path)) == [
        (["ACME"], ["B-ORG"]),
        (["Maria"], ["B-PER"]),
        (["Paris"], ["B-LOC"]),
    ]
    assert [s.document for s in read_conll(path)] == [0, 1, 2]
    path = write(tmp_path / "b.txt", "ACME B-ORG\n\nhires O\n\n-DOCSTART- -X- O\n\nMaria B-PER\n")
    assert [s.document for s in read_conll(path)] == [0, 0, 1]  # none: one document


def test_blank_and_whitespace_only_lines_separate_sentences(tmp_path):
    text = "\n\nACME B-ORG\n   \nhires O\n\t\n\n \t \nMaria B-PER\nLopez I-PER\n\n\n"
    path = write(tmp_path / "a.txt", text)
    assert words_and_tags(read_conll(path)) == [
        (["ACME"], ["B-ORG"]),
        (["hires"], ["O"]),
        (["Maria", "Lopez"], ["B-PER", "I-PER"]),
    ]


def test_crlf_line_endings(tmp_path):
    path = write(tmp_path / "a.txt", b"ACME B-ORG\r\nhires O\r\n\r\nMaria B-PER\r\n")
    assert words_and_tags(read_conll(path)) == [
        (["ACME", "hires"], ["B-ORG", "O"]),
        (["Maria"], ["B-PER"]),
    ]


def test_file_without_trailing_newline_keeps_last_sentence(tmp_path):
    path = write(tmp_path / "a.txt", "ACME B-ORG\n\nMaria B-PER\nLopez I-PER")
    assert words_and_tags(read_conll(path))[-1] == (["Maria", "Lopez"], ["B-PER", "I-PER"])


def test_sentences_record_source_line_numbers(tmp_path):
    text = "-DOCSTART- -X- O\n\nACME B-ORG\nhires O\n  \nMaria B-PER\n"
    path = write(tmp_path / "a.txt", text)
    assert [s.lines for s in read_conll(path)] == [[3, 4], [6]]


def test_all_tag_prefixes_and_utf8_words_accepted(tmp_path):
    path = write(tmp_path / "a.txt", "Zürich S-LOC\nNew B-LOC\nYork E-LOC\nCity I-LOC\n")
    assert words_and_tags(read_conll(path)) == [
        (["Zürich", "New", "York", "City"], ["S-LOC", "B-LOC", "E-LOC", "I-LOC"]),
    ]


# ---------------------------------------------------------------- read_conll: bad input


def test_one_column_line_names_file_and_line(tmp_path):
    path = write(tmp_path / "bad.txt", "ACME B-ORG\n\nhires O\nDutch\nstaff O\n")
    with pytest.raises(DataError) as info:
        read_conll(path)
    assert f"{path}:4:" in str(info.value)
    assert "Dutch" in str(info.value)


@pytest.mark.parametrize("content", [b"", b"   \n\t\n\n  ", b"\n"])
def test_empty_or_whitespace_only_file(tmp_path, content):
    path = write(tmp_path / "empty.txt", content)
    with pytest.raises(DataError) as info:
        read_conll(path)
    assert str(path) in str(info.value)


def test_file_with_only_docstart_lines(tmp_path):
    path = write(tmp_path / "docs.txt", "-DOCSTART- -X- O\n\n-DOCSTART- -X- O\n")
    with pytest.raises(DataError) as info:
        read_conll(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("content", "line"),
    [
        (b"\xff O\n", 1),
        (b"ACME B-ORG\n\nhires O\nDu\xfftch B-MISC\n", 4),
        (b"ACME B-ORG\nhires O\n\n\xc3 O\n", 4),
    ],
)
def test_undecodable_bytes_name_file_and_line(tmp_path, content, line):
    path = write(tmp_path / "bytes.txt", content)
    with pytest.raises(DataError) as info:
        read_conll(path)
    assert f"{path}:{line}:" in str(info.value)


@pytest.mark.parametrize("bad_tag", ["B_PER", "X-LOC", "B-", "per", "O-PER"])
def test_malformed_tag_names_file_line_and_tag(tmp_path, bad_tag):
    text = f"-DOCSTART- -X- O\n\nACME B-ORG\nhires O\n\nMaria {bad_tag}\n"
    path = write(tmp_path / "tags.txt", text)
    with pytest.raises(DataError) as info:
        read_conll(path)
    assert f"{path}:6:" in str(info.value)
    assert repr(bad_tag) in str(info.value)


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


# ---------------------------------------------------------------- load_dataset

TRAIN = (
    "-DOCSTART- -X- -X- O\n"
    "\n"
    "Maria B-PER\n"
    "Lopez I-PER\n"
    "visits O\n"
    "Paris B-LOC\n"
    "\n"
    "Dutch B-MISC\n"
    "Open I-MISC\n"
)
VALID = "Anna B-PER\nin O\nRome B-LOC\n"
TEST = "Open B-MISC\n\nBerlin B-LOC\n"
TRAIN_LABELS = ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-PER", "I-PER"]


def make_dataset(
    folder: Path,
    train: str = TRAIN,
    valid: str = VALID,
    test: str = TEST,
    valid_name: str = "valid.txt",
) -> Path:
    write(folder / "train.txt", train)
    write(folder / valid_name, valid)
    write(folder / "test.txt", test)
    return folder


def test_load_dataset_by_folder_path(tmp_path):
    folder = make_dataset(tmp_path / "toy")
    dataset = load_dataset(str(folder))
    assert dataset.labels == TRAIN_LABELS
    assert words_and_tags(dataset.split("train")) == [
        (["Maria", "Lopez", "visits", "Paris"], ["B-PER", "I-PER", "O", "B-LOC"]),
        (["Dutch", "Open"], ["B-MISC", "I-MISC"]),
    ]
    assert words_and_tags(dataset.split("valid")) == [
        (["Anna", "in", "Rome"], ["B-PER", "O", "B-LOC"]),
    ]
    assert words_and_tags(dataset.split("test")) == [
        (["Open"], ["B-MISC"]),
        (["Berlin"], ["B-LOC"]),
    ]
    assert dataset.files == {
        "train": str(folder / "train.txt"),
        "valid": str(folder / "valid.txt"),
        "test": str(folder / "test.txt"),
    }
    assert Path(dataset.source) == folder.resolve()


def test_dev_txt_accepted_for_valid(tmp_path):
    folder = make_dataset(tmp_path / "toy", valid_name="dev.txt")
    dataset = load_dataset(str(folder))
    assert dataset.files["valid"] == str(folder / "dev.txt")
    assert words_and_tags(dataset.split("valid")) == [
        (["Anna", "in", "Rome"], ["B-PER", "O", "B-LOC"]),
    ]


def test_missing_split_file_is_a_data_error(tmp_path):
    folder = make_dataset(tmp_path / "toy")
    (folder / "test.txt").unlink()
    with pytest.raises(DataError) as info:
        load_dataset(str(folder))
    assert str(folder) in str(info.value)
    assert "test" in str(info.value)


def test_load_dataset_by_name_under_data_dir(tmp_path):
    make_dataset(tmp_path / "datasets" / "toyner")
    dataset = load_dataset("toyner", data_dir=str(tmp_path / "datasets"))
    assert dataset.name == "toyner"
    assert dataset.labels == TRAIN_LABELS
    assert dataset.files["train"] == str(tmp_path / "datasets" / "toyner" / "train.txt")


def test_load_dataset_by_name_via_env_var(tmp_path, monkeypatch):
    make_dataset(tmp_path / "datasets" / "toyner")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "datasets"))
    dataset = load_dataset("toyner")
    assert dataset.labels == TRAIN_LABELS
    assert dataset.files["test"] == str(tmp_path / "datasets" / "toyner" / "test.txt")


def test_data_dir_argument_wins_over_env_var(tmp_path, monkeypatch):
    make_dataset(tmp_path / "from_arg" / "toyner")
    make_dataset(
        tmp_path / "from_env" / "toyner", train="Acme B-ORG\n", valid="Acme B-ORG\n", test="x O\n"
    )
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "from_env"))
    dataset = load_dataset("toyner", data_dir=str(tmp_path / "from_arg"))
    assert dataset.labels == TRAIN_LABELS


def test_labels_come_from_train_only_with_o_first(tmp_path):
    # No O tag anywhere in train: O is still the first label.
    folder = make_dataset(
        tmp_path / "toy",
        train="Acme B-ORG\nCorp I-ORG\n\nBob B-PER\n\nZed B-ZZZ\n\nAda B-AAA\n",
        valid="Acme B-ORG\n",
        test="x O\n",
    )
    assert load_dataset(str(folder)).labels == [
        "O", "B-AAA", "I-AAA", "B-ORG", "I-ORG", "B-PER", "I-PER", "B-ZZZ", "I-ZZZ"
    ]


@pytest.mark.parametrize("split", ["valid", "test"])
def test_tag_unknown_to_train_names_file_line_and_tag(tmp_path, split):
    bad = "Anna B-PER\n\nin O\nAcme B-ORG\n"
    files = {"valid": VALID, "test": TEST, split: bad}
    folder = make_dataset(tmp_path / "toy", valid=files["valid"], test=files["test"])
    with pytest.raises(DataError) as info:
        load_dataset(str(folder))
    message = str(info.value)
    assert f"{folder / f'{split}.txt'}:4:" in message
    assert "B-ORG" in message


def test_iob1_input_converted_to_iob2(tmp_path):
    train = "John I-PER\nSmith I-PER\nMary B-PER\nlives O\nin O\nParis I-LOC\n"
    valid = "in O\nBerlin I-LOC\nAnna I-PER\n"
    test = "Bob I-PER\nAl B-PER\nLee I-PER\n"
    folder = make_dataset(tmp_path / "toy", train=train, valid=valid, test=test)
    for scheme in ("auto", "iob1"):
        dataset = load_dataset(str(folder), scheme=scheme)
        assert dataset.split("train")[0].tags == ["B-PER", "I-PER", "B-PER", "O", "O", "B-LOC"]
        assert dataset.split("valid")[0].tags == ["O", "B-LOC", "B-PER"]
        assert dataset.split("test")[0].tags == ["B-PER", "B-PER", "I-PER"]
        assert dataset.labels == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def test_bioes_input_converted_to_iob2(tmp_path):
    train = (
        "Bob S-PER\nin O\nNew B-LOC\nYork E-LOC\n\nBig B-ORG\nBlue I-ORG\nCorp E-ORG\nAl S-PER\n"
    )
    valid = "Rome S-LOC\nAnn S-PER\nSan B-LOC\nJose E-LOC\n"
    test = "Los B-LOC\nAngeles E-LOC\n"
    folder = make_dataset(tmp_path / "toy", train=train, valid=valid, test=test)
    for scheme in ("auto", "bioes"):
        dataset = load_dataset(str(folder), scheme=scheme)
        assert [s.tags for s in dataset.split("train")] == [
            ["B-PER", "O", "B-LOC", "I-LOC"],
            ["B-ORG", "I-ORG", "I-ORG", "B-PER"],
        ]
        assert dataset.split("valid")[0].tags == ["B-LOC", "B-PER", "B-LOC", "I-LOC"]
        assert dataset.split("test")[0].tags == ["B-LOC", "I-LOC"]
        assert dataset.labels == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]


def test_unknown_scheme_is_a_data_error(tmp_path):
    folder = make_dataset(tmp_path / "toy")
    with pytest.raises(DataError):
        load_dataset(str(folder), scheme="bilou")


def test_bad_line_in_a_split_surfaces_through_load_dataset(tmp_path):
    folder = make_dataset(tmp_path / "toy", test="Open B-MISC\n\nBerlin B_LOC\n")
    with pytest.raises(DataError) as info:
        load_dataset(str(folder))
    assert f"{folder / 'test.txt'}:3:" in str(info.value)


# ---------------------------------------------------------------- hub fallback, offline


@pytest.mark.parametrize("error", [ConnectionError("no network"), FileNotFoundError()])
def test_missing_dataset_without_hub_is_a_data_error(tmp_path, monkeypatch, error):
    datasets = pytest.importorskip("datasets")
    calls = []

    def offline(name, *args, **kwargs):
        calls.append(name)
        raise error

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.setattr(datasets_module, "hub_unreachable", lambda: None)  # it answers
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):  # online: the hub is asked
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(DataError) as info:
        load_dataset("no-such-dataset-xyz", data_dir=str(tmp_path))
    assert calls == ["no-such-dataset-xyz"]
    assert "no-such-dataset-xyz" in str(info.value)


def test_a_hub_that_takes_no_connection_is_said_at_once_without_asking_it(tmp_path,
                                                                          monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda name, *a, **k: calls.append(name))
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HTTPS_PROXY", "https_proxy",
                 "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as probe:  # a loopback port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(DataError) as info:
        load_dataset("conll2003-typo", data_dir=str(tmp_path))
    assert calls == []  # no retries against a hub that cannot answer
    message = str(info.value)
    assert "'conll2003-typo' is neither a folder nor under the data dir" in message
    assert f"the Hugging Face hub cannot be reached: 127.0.0.1:{port} (" in message


def test_missing_dataset_name_under_env_data_dir_goes_to_hub(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    make_dataset(tmp_path / "datasets" / "present")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "datasets"))
    # `make test` runs offline; this test is about the online branch.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    asked = []

    def hub_without_it(name, *args, **kwargs):
        asked.append(name)
        raise OSError(f"the hub has no {name}\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", hub_without_it)
    monkeypatch.setattr(datasets_module, "hub_unreachable", lambda: None)  # it answers
    with pytest.raises(DataError) as info:
        load_dataset("absent")
    assert asked == ["absent"]
    message = str(info.value)
    assert "'absent'" in message and str(tmp_path / "datasets") in message
    assert message.endswith("could not provide it: the hub has no absent")  # first line only


def test_a_leading_byte_order_mark_is_not_part_of_the_first_token(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffEU B-ORG\nrejects O\n\n\ufeffodd O\n".encode())
    sentences = read_conll(path)
    assert sentences[0].words == ["EU", "rejects"]
    assert sentences[1].words == ["\ufeffodd"]  # only the file's first bytes are a BOM
