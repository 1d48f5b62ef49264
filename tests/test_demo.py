"""`memaudit demo --quick` end to end: it must show memorization growing with repetitions."""

import json

import pyarrow.parquet as pq
import pytest


@pytest.fixture(scope="module")
def demo_run(quick_demo):
    return quick_demo


def test_memorization_grows_with_repetitions(demo_run):
    out, _ = demo_run
    levels = json.loads((out / "results.json").read_text())["summary"]["by_level"]
    low, high = levels[min(levels, key=int)], levels[max(levels, key=int)]
    assert high["exact"] > low["exact"]
    assert high["auc"]["loss"] > low["auc"]["loss"] and high["auc"]["loss"] >= 0.9
    assert high["recognition"] > low["recognition"]
    assert high["exposure"] > high["twins_exposure"] + 10  # bits


def test_demo_writes_report_ledger_and_scores(demo_run):
    out, r = demo_run
    assert str(out / "report.html") in r.stdout.replace("\n", "")
    html = (out / "report.html").read_text()
    assert (
        "Memorization grows with repetitions" in html and "<mark><b>" in html
    )  # an extracted secret, highlighted
    table = pq.read_table(out / "scores.parquet").to_pydict()
    assert set(table["member"]) == {True, False} and "exposure" in table and "min_k_pp" in table
    ledger = [
        json.loads(line) for line in (out / "model" / "ledger.jsonl").read_text().splitlines()
    ]
    assert all(len(c["insertions"]) == c["repetitions"] for c in ledger)
    assert not any(c["insertions"] for c in ledger if not c["member"])


def test_the_callout_names_each_measure_as_the_table_does(demo_run):
    import re

    out, r = demo_run
    levels = json.loads((out / "results.json").read_text())["summary"]["by_level"]
    html = (out / "report.html").read_text()
    for level in (min(levels, key=int), max(levels, key=int)):
        seen = "once" if level == "1" else f"{level} times"
        found = re.search(
            rf"Seen {seen}: (\d+)% extracted verbatim \((\d+)% with the secret in the output\)",
            html,
        )
        assert found, f"no callout for {seen}"
        exact, secret = (int(x) for x in found.groups())
        assert exact == round(100 * levels[level]["exact"])
        assert secret == round(100 * levels[level]["secret_found"])
    header = r.stdout.split("┃")  # rich may wrap a column's name over two lines
    assert any("verbatim" in h for h in header) and any("secret in" in h for h in header)
