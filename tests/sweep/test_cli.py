"""The installed `lossweep` command."""

from __future__ import annotations

import json
import subprocess

from lossweep.sweep.cli import main


def test_losses_lists_the_catalogue_as_json(capsys):
    assert main(["losses", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 29
    mnrl = next(r for r in rows if r["name"] == "MultipleNegativesRankingLoss")
    assert mnrl["in_batch"] is True and mnrl["params"]["scale"]["default"] == 20.0


def test_losses_with_data_says_what_fits_and_why_not(data_dir):
    result = subprocess.run(
        ["lossweep", "losses", "--data", str(data_dir / "stsbenchmark"), "--split", "dev"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "3 losses fit" in result.stdout and "CoSENTLoss" in result.stdout
    rows = json.loads(
        subprocess.run(
            ["lossweep", "losses", "--json", "--data", str(data_dir / "stsbenchmark")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    mnrl = next(r for r in rows if r["name"] == "MultipleNegativesRankingLoss")
    assert mnrl["fits"] is False
    assert mnrl["reason"] == "it takes no label, but the dataset has label column 'score' (float64 score)"


def test_losses_with_missing_data_fails_with_the_path(tmp_path):
    result = subprocess.run(["lossweep", "losses", "--data", str(tmp_path / "none")], capture_output=True, text=True)
    assert result.returncode == 2
    assert f"{tmp_path / 'none'}: no such file or folder" in result.stderr
