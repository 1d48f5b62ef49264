import json

from typer.testing import CliRunner

from memaudit.cli import app


def test_quick_demo_trains_audits_and_reports(tmp_path):
    r = CliRunner().invoke(app, ["demo", "--quick", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    results = json.loads((tmp_path / "mia" / "results.json").read_text())
    assert results["metrics"]["loss"]["auc"]["value"] > 0.8  # members were trained on for many epochs
    assert (tmp_path / "mia" / "report.html").is_file() and (tmp_path / "model" / "model.safetensors").is_file()
    assert str(tmp_path / "mia" / "report.html") in r.stdout.replace("\n", "")
