"""The command line: the user's commands, JSON output, and one-line errors with a non-zero exit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from headstart.cli import main
from tests.conftest import SHARED, make_image, needs_shared


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "headstart.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


@pytest.mark.parametrize("args, message", [
    (["fit", "no/such/folder"], "does not exist"),
    (["fit", "{data}", "--model", "resnet_nonexistent"], "unknown model"),
    (["fit", "{data}", "--model", "resnet18"], "pass --weights FILE"),
    (["fit", "{data}", "--strategy", "fine-tune", "--unfreeze", "0", "--model", "vgg16.tv_in1k"],
     "pass --weights FILE"),
    (["fit", "{data}", "--strategy", "bogus"], "invalid choice"),
    (["fit", "{data}", "--layer", "blocks.99"], "has no layer"),
    (["fit", "{data}", "--image-size", "0"], "--image-size must be"),
    (["fit", "{data}", "--strategy", "fine-tune", "--epochs", "0"], "--epochs must be at least 1"),
    (["fit", "{data}", "--budget", "0"], "--budget is in seconds and must be positive"),
    (["evaluate", "{data}", "{data}"], "not a saved headstart model"),
])
def test_user_mistakes_are_one_line_errors(tmp_path, colors_data, cache_dir, args, message):
    args = [a.replace("{data}", str(colors_data)) for a in args]
    result = run(*args, "--out", str(tmp_path / "out")) if args[0] == "fit" else run(*args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_fit_evaluate_predict_with_bad_files(tmp_path, colors_data, cache_dir, capsys):
    data = tmp_path / "data"
    shutil.copytree(colors_data, data)
    (data / "train" / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    (data / "val" / "blue" / "empty.png").write_bytes(b"")
    assert main(["fit", str(data), "--out", str(tmp_path / "run"), "--json", "-q"]) == 0
    fit = json.loads(capsys.readouterr().out)
    assert fit["n_skipped"] == 1 and "broken.jpg" in fit["skipped"][0]["path"]
    assert fit["validation"]["accuracy"] == 1.0 and fit["validation"]["n_skipped"] == 1
    seconds = fit["seconds"]
    assert set(seconds) >= {"codes", "classifier", "validation", "leak_check", "save", "report", "startup", "command"}
    parts = ("startup", "total", "validation", "leak_check", "save", "report")
    measured = sum(seconds[k] for k in parts)  # each rounded to the millisecond
    assert measured - 0.01 <= seconds["command"] <= measured + 0.5
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["class_names"] == ["blue", "red"] and config["weights"].startswith("embedded:")
    assert not list((tmp_path / "run").glob("*.pkl")) and not list(tmp_path.glob(".run.partial-*"))

    assert main(["evaluate", str(tmp_path / "run"), str(data), "--json", "-q"]) == 0
    ev = json.loads(capsys.readouterr().out)
    for key in ("accuracy", "balanced_accuracy", "n_images", "n_skipped", "per_class", "confusion_matrix"):
        assert key in ev
    assert ev["confusion_matrix"]["labels"] == ["blue", "red"] and ev["n_skipped"] == 1

    photo = make_image(tmp_path / "photo.png", (210, 30, 30))
    assert main(["predict", str(tmp_path / "run"), str(photo), str(data / "val" / "blue"), "--json", "-q"]) == 0
    pred = json.loads(capsys.readouterr().out)
    assert pred["predictions"][0]["path"] == str(photo) and pred["predictions"][0]["label"] == "red"
    assert set(pred["predictions"][0]["probabilities"]) == {"blue", "red"}
    assert len(pred["predictions"]) == 5 and pred["n_skipped"] == 1

    assert main(["fit", str(data), "--out", str(tmp_path / "run"), "-q"]) == 2  # never replaced silently


def test_summary_and_models(capsys):
    assert main(["summary", "--model", "tf_efficientnet_lite0", "--num-classes", "3", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["trainable_params"] == 1280 * 3 + 3
    assert summary["non_trainable_params"] == summary["total_params"] - summary["trainable_params"] > 3_000_000
    assert "blocks.5" in summary["layers"]
    assert main(["models"]) == 0
    listed = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("tf_")}
    assert [name for name, line in listed.items() if "auto compares it by default" in line] == [
        "tf_efficientnet_lite0", "tf_efficientnet_lite2"]


@needs_shared
def test_cats_vs_dogs_with_defaults(tmp_path, cache_dir):
    """The default on real photos: 200 training and 200 validation images a class (linked, the folder untouched)."""
    data = tmp_path / "cats_vs_dogs"
    for split in ("train", "val"):
        for label in ("cat", "dog"):
            (data / split / label).mkdir(parents=True)
            for path in sorted((SHARED / "cats_vs_dogs" / split / label).iterdir())[:200]:
                (data / split / label / path.name).symlink_to(path)
    result = run("fit", str(data), "--out", str(tmp_path / "cats"), "--json", "-q")
    assert result.returncode == 0, result.stderr
    accuracy = json.loads(result.stdout)["validation"]["accuracy"]
    print(f"cats_vs_dogs validation accuracy: {accuracy:.4f}")
    assert accuracy >= 0.985


def test_overwrite_never_deletes_a_users_own_folder(tmp_path, colors_data):
    own = tmp_path / "photos"
    own.mkdir()
    (own / "holiday.jpg").write_bytes(b"mine")
    result = run("fit", str(colors_data), "--out", str(own), "--overwrite", "--strategy", "feature-extractor")
    assert result.returncode == 2 and "not a headstart model folder" in result.stderr
    assert result.stderr.count("\n") == 1 and (own / "holiday.jpg").read_bytes() == b"mine"
