"""The embedded demo (200 flower photos): the core path on real images, with nothing beside the clone.

fit (the default, auto), predict, evaluate, report, export, serve and audit, each through the command line as the
Getting-started page shows them; the photos travel with their credits.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from headstart.cli import main
from headstart.datasets import DATASETS, flowers, path
from headstart.errors import DataError
from tests.conftest import snapshot


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory) -> tuple[Path, dict]:
    """The README's first command on the demo: a model folder and what `fit --json` said."""
    out = tmp_path_factory.mktemp("demo") / "flowers"
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["fit", str(flowers()), "--out", str(out), "--json", "-q"]) == 0
    return out, json.loads(printed.getvalue())


def test_the_demo_photos_travel_with_a_credit_each():
    folder = flowers()
    photos = sorted(folder.glob("*/*.jpg"))
    credits = (folder / "LICENSE.txt").read_text()
    assert len(photos) == 200 and sorted(p.name for p in folder.iterdir() if p.is_dir()) == [
        "daisy", "dandelion", "roses", "sunflowers", "tulips"]
    assert "creativecommons.org/licenses/by/2.0" in credits
    missing = [f"{p.parent.name}/{p.name}" for p in photos if f"{p.parent.name}/{p.name} " not in credits]
    assert not missing, missing[:3]
    assert path("flowers") == folder and "flowers" in DATASETS
    with pytest.raises(DataError, match="no embedded dataset 'nope'"):
        path("nope")


def test_fit_on_the_demo_scores_its_held_out_photos_and_leaves_them_untouched(demo_model):
    out, fit = demo_model
    assert fit["validation"]["n_images"] == 40 and fit["validation"]["accuracy"] >= 0.8
    assert fit["strategy"] == "feature-extractor" and fit["auto"]["plan"]["chosen"].startswith("probe")
    assert (out / "config.json").is_file() and (out / "model.onnx").is_file() and (out / "report.html").is_file()
    before = snapshot(flowers())
    assert main(["datasets", "flowers"]) == 0
    assert snapshot(flowers()) == before


def test_predict_evaluate_report_export_and_summary_on_the_demo(demo_model, tmp_path, capsys):
    out, _ = demo_model
    photos = sorted(flowers().glob("roses/*.jpg"))[:3]
    assert main(["predict", str(out), *map(str, photos), "--json", "-q"]) == 0
    predictions = json.loads(capsys.readouterr().out)["predictions"]
    assert len(predictions) == 3 and all(p["label"] in p["probabilities"] for p in predictions)
    assert main(["evaluate", str(out), str(flowers()), "--json", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] >= 0.9  # mostly training photos: a sanity check
    assert main(["report", str(out), str(flowers()), "--out", str(tmp_path / "report.html"), "-q"]) == 0
    assert "How the strategy was chosen" in (tmp_path / "report.html").read_text()
    assert main(["export", str(out), "--out", str(tmp_path / "flowers.onnx"), "-q"]) == 0
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "flowers.onnx"), str(photos[0]), "--json", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["predictions"][0]["label"] == predictions[0]["label"]
    assert main(["summary", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total_params"] > 0


def test_serve_answers_for_the_demo_model(demo_model):
    from tests.test_serve import files_form, server

    out, _ = demo_model
    photo = sorted(flowers().glob("daisy/*.jpg"))[0]
    with server(out) as (url, _):
        reply = httpx.post(f"{url}/predict", files=files_form([photo]), timeout=30)
    assert reply.status_code == 200 and reply.json()["predictions"][0]["label"] in DATASETS["flowers"]


def test_audit_of_the_demo(tmp_path, capsys):
    assert main(["audit", str(flowers()), "--csv", str(tmp_path / "audit.csv"), "--json", "-q"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["data"]["train_images"] == 200 and set(result["counts"]) and (tmp_path / "audit.csv").is_file()
