import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import write_jsonl
from memaudit.errors import InputError
from memaudit.io.texts import read_texts


def test_jsonl_keeps_ids_and_metadata(tmp_path):
    p = write_jsonl(
        tmp_path / "a.jsonl", [{"id": 7, "text": "alpha", "repetitions": 4}, {"text": "beta"}, ""]
    )
    r = read_texts(p, label=1)
    assert [x.id for x in r.records] == ["7", "a:2"]
    assert r.records[0].meta == {"repetitions": 4}
    assert r.records[1].where == f"{p}:2"
    assert all(x.label == 1 for x in r.records)


def test_txt_folder_and_parquet(tmp_path):
    (tmp_path / "t.txt").write_text("one doc\n\nsecond doc\n")
    assert [x.text for x in read_texts(tmp_path / "t.txt").records] == ["one doc", "second doc"]
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.py").write_text("print(1)\n")
    (folder / "sub" / "b.md").write_text("# title\n")
    (folder / ".hidden").write_text("skip me")
    assert [x.id for x in read_texts(folder).records] == ["a.py", "sub/b.md"]
    pq.write_table(pa.table({"text": ["x y", "z"], "kind": ["a", "b"]}), tmp_path / "d.parquet")
    recs = read_texts(tmp_path / "d.parquet").records
    assert [(x.text, x.meta["kind"]) for x in recs] == [("x y", "a"), ("z", "b")]


@pytest.mark.parametrize(
    "lines, message, line",
    [
        (['{"text": "ok"}', '{"text": "bad"'], "malformed JSON", 2),
        (['{"body": "no text"}'], "missing 'text' field", 1),
        (['{"text": "ok"}', '{"text": "   "}'], "empty text", 2),
        (['{"text": 5}'], "'text' must be a string", 1),
        (['["a list"]'], "expected a JSON object", 1),
    ],
)
def test_bad_jsonl_names_file_and_line(tmp_path, lines, message, line):
    p = write_jsonl(tmp_path / "bad.jsonl", lines)
    with pytest.raises(InputError, match=message) as e:
        read_texts(p)
    assert e.value.line == line and e.value.path == str(p)
    assert str(e.value).startswith(f"{p}:{line}: ")


def test_skip_invalid_counts_with_file_and_line(tmp_path):
    p = write_jsonl(
        tmp_path / "m.jsonl", ['{"text": "good"}', "{oops", '{"text": ""}', '{"text": "also good"}']
    )
    r = read_texts(p, skip_invalid=True)
    assert [x.text for x in r.records] == ["good", "also good"]
    assert [(s.line, s.reason.split(" (")[0]) for s in r.skipped] == [
        (2, "malformed JSON"),
        (3, "empty text"),
    ]


def test_missing_file_unknown_format_and_nothing_valid(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_texts(tmp_path / "nope.jsonl")
    (tmp_path / "x.csv").write_text("text\nhi\n")
    with pytest.raises(InputError, match="unknown input format"):
        read_texts(tmp_path / "x.csv")
    p = write_jsonl(tmp_path / "e.jsonl", ['{"text": ""}'])
    with pytest.raises(InputError, match="no valid texts"):
        read_texts(p, skip_invalid=True)
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "n.parquet")
    with pytest.raises(InputError, match="no 'text' column"):
        read_texts(tmp_path / "n.parquet")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(InputError, match="not UTF-8"):
        read_texts(tmp_path / "bin.txt")


def test_corpus_snippets_command_gives_disjoint_slices(tmp_path):
    from typer.testing import CliRunner

    from memaudit.cli.app import app

    runner = CliRunner()
    for offset in (0, 30):
        r = runner.invoke(
            app,
            [
                "corpus",
                "snippets",
                "--n",
                "30",
                "--offset",
                str(offset),
                "--out",
                str(tmp_path / f"{offset}.jsonl"),
            ],
        )
        assert r.exit_code == 0, r.output
    a, b = (read_texts(tmp_path / f"{o}.jsonl").records for o in (0, 30))
    assert len(a) == len(b) == 30 and not {x.text for x in a} & {x.text for x in b}
    r = runner.invoke(app, ["corpus", "snippets", "--n", "0", "--out", str(tmp_path / "x.jsonl")])
    assert r.exit_code == 2 and "--n must be >= 1" in r.stderr
