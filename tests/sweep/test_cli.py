"""The installed `lossweep` command."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from lossweep.sweep.cli import main


def test_losses_lists_the_catalogue_as_json(capsys):
    assert main(["losses", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 29
    mnrl = next(r for r in rows if r["name"] == "MultipleNegativesRankingLoss")
    assert mnrl["in_batch"] is True and mnrl["params"]["scale"]["default"] == 20.0


def test_losses_with_data_says_what_fits_and_why_not(data_dir, capfd, monkeypatch):
    # A relative path lies under the data folder, as in specs; the table gives each reason whole.
    monkeypatch.setenv("LOSSWEEP_DATA_DIR", str(data_dir))
    monkeypatch.setenv("COLUMNS", "250")
    assert main(["losses", "--data", "stsbenchmark", "--split", "dev"]) == 0
    out = capfd.readouterr().out
    assert "3 losses fit stsbenchmark" in out and "CoSENTLoss" in out
    cells = " ".join(line.strip("│ ") for line in out.splitlines())
    assert "no: it takes no label, but the dataset has label column" in " ".join(cells.split())
    assert main(["losses", "--json", "--data", str(data_dir / "stsbenchmark")]) == 0
    rows = json.loads(capfd.readouterr().out)
    mnrl = next(r for r in rows if r["name"] == "MultipleNegativesRankingLoss")
    assert mnrl["fits"] is False
    assert mnrl["reason"] == "it takes no label, but the dataset has label column 'score' (float64 score)"


def test_losses_with_missing_data_fails_with_the_path(tmp_path, capfd):
    assert main(["losses", "--data", str(tmp_path / "none")]) == 2
    assert f"{tmp_path / 'none'}: no such file or folder" in capfd.readouterr().err


def help_of(command: str, capsys) -> str:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_help_names_the_exit_statuses_and_ray_address(capsys):
    for command in ("train", "sweep"):
        text = help_of(command, capsys)
        assert "RAY_ADDRESS" in text and "2 a spec, file, id or argument was refused" in text
    for command in ("validate", "negatives", "report", "reproduce", "export", "train", "sweep"):
        assert "--tracking-uri" in help_of(command, capsys), command


def test_validate_prints_one_line_and_no_loading_noise(data_dir, tmp_path, tiny_model_path):
    rows = "".join(f"question {i},answer {i}\n" for i in range(40))
    (tmp_path / "pairs.csv").write_text("question,answer\n" + rows)
    spec = {
        "name": "quiet",
        "model": tiny_model_path,
        "train": {"path": str(tmp_path / "pairs.csv"), "columns": {"question": "anchor", "answer": "positive"}},
        "loss": {"name": "MultipleNegativesRankingLoss"},
        "training": {"batch_size": 2, "steps": 1},
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    done = subprocess.run(["lossweep", "validate", str(tmp_path / "spec.yaml")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == [
        f"{tmp_path / 'spec.yaml'}: valid (MultipleNegativesRankingLoss, 40 training rows); trains every weight; "
        "prompts: none (the model declares none)"
    ]
    (tmp_path / "lora.yaml").write_text(yaml.safe_dump(spec | {"adapter": {"r": 4, "target_modules": ["query"]}}))
    done = subprocess.run(["lossweep", "validate", str(tmp_path / "lora.yaml")], capture_output=True, text=True)
    assert "; trains a LoRA adapter (r=4, alpha=16) on query; " in done.stdout, done.stderr
    assert done.stderr == ""  # no "Generating train split", no progress bars


def test_validate_names_each_training_set_and_each_base_model_s_prompts(
    data_dir, tmp_path, tiny_model_path, tiny_prompted_model_path, capsys
):
    spec = {
        "name": "mixed",
        "data_dir": str(data_dir),
        "model": tiny_model_path,
        "train": [
            {"path": "cranfield", "split": "train"},
            {"path": "stsbenchmark", "split": "dev", "limit": 100, "name": "sts", "loss": {"name": "CoSENTLoss"}},
        ],
        "eval": [{"type": "retrieval", "path": "cranfield", "split": "test", "name": "cranfield"}],
        "loss": {"name": "MultipleNegativesRankingLoss"},
        "training": {"batch_size": 8, "steps": 2},
        "sweep": {
            "scheduler": "none",
            "models": [{"model": tiny_model_path, "name": "plain"}, {"model": tiny_prompted_model_path, "name": "e5"}],
        },
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["validate", str(tmp_path / "spec.yaml")]) == 0
    said = capsys.readouterr().out
    assert "(MultipleNegativesRankingLoss, 1003 cranfield rows, 100 sts rows)" in said
    assert "base models: plain (prompts: none (the model declares none)); e5 (prompts: the model's own" in said
