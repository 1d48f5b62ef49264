import numpy as np
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


def test_corpus_stops_at_a_bad_record_or_lists_it(tmp_path):
    from memaudit.io.corpus import load_corpus

    p = tmp_path / "c.jsonl"
    p.write_text('{"text": "kept one"}\n{oops\n[1, 2]\n7\n{"text": ""}\n{"text": "kept two"}\n')
    with pytest.raises(InputError, match="malformed JSON") as e:
        load_corpus(str(p))
    assert e.value.line == 2
    corpus = load_corpus(str(p), skip_invalid=True)
    assert corpus.docs == ["kept one", "kept two"]
    assert [(s.line, s.reason.split(" (")[0]) for s in corpus.skipped] == [
        (2, "malformed JSON"),
        (3, "expected a JSON object with a 'text' field"),
        (4, "expected a JSON object with a 'text' field"),
        (5, "empty text"),
    ]


def test_corpus_budget_cuts_the_last_document_and_the_digest_follows_content(tmp_path):
    import hashlib

    from memaudit.io.corpus import load_corpus

    p = tmp_path / "c.txt"
    p.write_text("a" * 50 + "\n" + "b" * 50 + "\n")
    assert load_corpus(str(p), max_chars=30).docs == ["a" * 30]  # one document, longer than 30
    assert [len(d) for d in load_corpus(str(p), max_chars=70).docs] == [50, 20]
    whole = load_corpus(str(p))
    renamed = tmp_path / "other.txt"
    renamed.write_text(p.read_text())
    assert load_corpus(str(renamed)).digest() == whole.digest()  # a path is no part of it
    expected = hashlib.sha256()
    for doc in whole.docs:
        expected.update(len(doc).to_bytes(8, "little") + doc.encode())
    assert whole.digest() == expected.hexdigest()
    p.write_text("a" * 50 + "\n" + "b" * 49 + "c\n")
    assert load_corpus(str(p)).digest() != whole.digest()
    with pytest.raises(InputError, match="budget must be >= 1"):
        load_corpus(str(p), max_chars=0)


def test_corpus_chunks_keep_every_character_but_the_newlines_they_cut_at():
    from memaudit.io.corpus import corpus_chunks

    rng = np.random.default_rng(0)
    words = ["alpha", "be", "c", "delta epsilon", "", "zeta_eta_theta_iota"]
    docs = ["\n".join(rng.choice(words, 40)) for _ in range(3)] + ["x" * 50]  # last: no newline
    for chars in (7, 16, 40):
        pieces = corpus_chunks(docs, 10**6, chars)
        assert "".join(pieces).replace("\n", "") == "".join(docs).replace("\n", "")
        assert all(len(p) <= chars for p in pieces)
