"""The advisor: size rule, similarity to ImageNet, layer scores, the decision, and `--strategy auto`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from headstart.auto.advice import Advice, advise, fine_tune_options, suggested_image_size
from headstart.auto.measure import measure_similarity, subsample
from headstart.auto.plan import MARGIN, keep_fine_tuned, plan_auto
from headstart.cli import main
from headstart.codes.backbones import candidate_layers
from headstart.codes.create import create_backbone
from headstart.codes.extract import FeatureExtractor
from headstart.data.folders import read_class_folders
from headstart.data.splits import find_splits
from headstart.defaults import AUTO_MODELS, DEFAULT_MODEL
from tests.conftest import SHARED, needs_shared


def test_candidates_and_image_size():
    lite0 = create_backbone()
    assert candidate_layers(lite0) == ["penultimate", "blocks.6", "blocks.5", "blocks.4", "blocks.3",
                                       "blocks.5+penultimate", "blocks.4+blocks.5+penultimate",
                                       "blocks.3+blocks.4+blocks.5+blocks.6+penultimate"]
    assert suggested_image_size(lite0, 28) == 96 and suggested_image_size(lite0, 256) is None
    assert suggested_image_size(lite0, 48) == 160


def test_fine_tune_epochs_shrink_with_more_images():
    assert fine_tune_options(4708, similar=False, image_size=96)["epochs"] == 10  # pneumoniamnist
    assert fine_tune_options(40000, similar=False, image_size=96)["epochs"] == 3  # cifar10
    assert fine_tune_options(40000, similar=True, image_size=None)["backbone_lr_mult"] == 0.1


def test_fine_tuning_is_kept_unless_clearly_below_the_probe_on_held_out_training_images():
    evidence = {"decision": "fine-tune", "probe": {"layer": "blocks.5", "cv_accuracy": 0.95}}
    assert keep_fine_tuned(evidence, 0.97, 400) and evidence["check"]["kept"]
    assert keep_fine_tuned(evidence, 0.945, 400)  # 2 images of 400 below: within one standard error (0.011), a tie
    assert evidence["check"]["standard_error"] == pytest.approx(0.0114, abs=1e-4)
    assert not keep_fine_tuned(evidence, 0.93, 400) and "blocks.5 was trained instead" in evidence["decision"]
    assert not keep_fine_tuned(evidence, 0.945, 40000)  # the same gap on many images is no tie
    perfect = {"decision": "fine-tune", "probe": {"layer": "blocks.5", "cv_accuracy": 1.0}}
    assert keep_fine_tuned(perfect, 1.0, 20) and not keep_fine_tuned(perfect, 0.8, 20)
    assert perfect["check"]["standard_error"] == pytest.approx(0.0894, abs=1e-4)  # at 0.8: a perfect probe has noise


def test_advise_on_generated_data_and_json(colors_data, capsys):
    advice = advise(create_backbone(), read_class_folders(colors_data / "train"))
    assert advice.size["images"] == 24 and not advice.size["large"] and advice.strategy == "feature-extractor"
    assert set(advice.layers) == set(candidate_layers(create_backbone()))
    assert all(0 <= v <= 1 for v in advice.layers.values())
    assert main(["advise", str(colors_data), "--json", "-q"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("size", "similarity", "layer_scores", "cell", "strategy", "layer", "reason"):
        assert key in out
    assert out["model"] == ",".join(AUTO_MODELS) and set(out["network"]["scores"]) == {"joint", *AUTO_MODELS}
    assert out["ranking"][0] == out["network"]["chosen"]  # as fit decides: both networks, their probes averaged
    assert main(["advise", str(colors_data), "--model", DEFAULT_MODEL, "-q"]) == 0
    assert "size: 24 images, 2 classes, per class min 12," in capsys.readouterr().out


def test_advise_weighs_several_networks_as_fit_does(colors_data, capsys):
    import headstart

    names = "tf_efficientnet_lite0,tf_efficientnet_lite1"
    assert main(["advise", str(colors_data), "--model", names, "--json", "-q"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(out["ranking"]) == sorted(["joint", *names.split(",")]) and out["ranking"][0] == \
        out["network"]["chosen"]
    assert out["network"]["rule"].startswith("the networks' probes averaged (mean logits), unless one network")
    clf = headstart.TransferClassifier(model=names, strategy="auto").fit(colors_data / "train")
    assert clf.auto_["advice"]["layer_choice"]["joint"] == out["network"]
    chosen = out["network"]["chosen"]
    assert clf.backbone_.name == (names if chosen == "joint" else chosen)
    assert main(["advise", str(colors_data), "--model", names, "-q"]) == 0
    assert "<- chosen" in capsys.readouterr().out


@needs_shared
def test_similarity_orders_the_shared_datasets():
    lite0 = create_backbone()

    def ratio(folder):
        sample = subsample(find_splits(folder).train, 200)
        return measure_similarity(lite0, FeatureExtractor(lite0, ["penultimate"]).transform(sample.paths).codes)

    cats, xrays = ratio(SHARED / "cats_vs_dogs"), ratio(SHARED / "pneumoniamnist")
    images = sorted((SHARED / "imagenet_samples" / "images").iterdir())[:200]
    imagenet = measure_similarity(lite0, FeatureExtractor(lite0, ["penultimate"]).transform(images).codes)
    print(f"similarity ratio: imagenet_samples {imagenet['ratio']}, cats {cats['ratio']}, xrays {xrays['ratio']}")
    assert imagenet["similar"] and cats["similar"] and not xrays["similar"]
    assert imagenet["ratio"] > cats["ratio"] > xrays["ratio"]


@pytest.mark.parametrize("budget, strategy, unfreeze, epochs", [(1000, "fine-tune", "all", 5),
                                                               (380, "fine-tune", "all", 3),
                                                               (250, "fine-tune", "3", 5),
                                                               (60, "feature-extractor", None, None)])
def test_auto_fits_fine_tuning_into_the_budget_then_fewer_blocks_then_the_probe(colors_data, monkeypatch, budget,
                                                                                strategy, unfreeze, epochs):
    import time

    import headstart.training.cost
    from headstart.training.cost import TrainingCost

    def cost(name, weights, train, image_size, config):  # every block: 100 s an epoch; the top 3 cached: 30 s
        step = 1.0 if config.unfreeze == "all" else 0.3
        return TrainingCost(step_s=step, head_step_s=step, eval_s=0.0, augment_s=0.0, decode_s=0.0, n_fit=3200,
                            n_monitor=0, batch_size=32, loader=config.loader, workers=2)

    monkeypatch.setattr(headstart.training.cost, "fine_tune_cost", cost)
    advice = Advice(size={"large": True}, similarity={"similar": False}, layers={"penultimate": 0.9, "blocks.5": 0.95},
                    strategy="fine-tune", layer="blocks.5",
                    options={"unfreeze": "all", "epochs": 5, "image_size": 32}, reason="test")
    chosen, options, evidence = plan_auto(advice, ["test_efficientnet"], "none",
                                          read_class_folders(colors_data / "train"), budget=budget,
                                          started=time.perf_counter())
    assert chosen == strategy
    if epochs:  # 15 s of setup, the epochs, 15 s after: 1.15 x (30 s + 100 s an epoch) within the budget
        assert (options["unfreeze"], options["epochs"]) == (unfreeze, epochs) and options["max_seconds"] <= budget
        assert options["loader"] == ("memory" if unfreeze == "all" else "activations")
        assert (options["head_init"], options["probe_epochs"]) == ("probe", 0)  # LP-FT: no epoch of the head alone
        assert evidence["fine_tune_epoch_s"] == (100.0 if unfreeze == "all" else 30.0)
        timed = evidence["plans_tried"][-1]  # 15% slower than timed, training and what follows still fit
        assert MARGIN * (timed["predicted_s"] + timed["after_s"]) <= budget
    else:  # one epoch of the top 3 blocks takes 45 s, and 15 s after it: 1.15 x 60 s = 69 s
        assert options["layer"] == "blocks.5" and "instead (--budget 100 or more" in evidence["decision"]
    assert [p["unfreeze"] for p in evidence["plans_tried"]] == (["all"] if unfreeze == "all" else ["all", "3"])
    assert evidence["plan"]["chosen"] == next(a["name"] for a in evidence["plan"]["alternatives"] if a["fits"])
    given = plan_auto(advice, ["test_efficientnet"], "none", read_class_folders(colors_data / "train"), budget=250,
                      started=time.perf_counter(), given={"unfreeze": "all"})
    assert given[0] == "feature-extractor"  # the user's --unfreeze all is kept: no fewer blocks instead


@pytest.mark.parametrize("budget, network, unfreeze, epochs", [(400, "cheap", "all", 3), (200, "cheap", "3", 4),
                                                               (1000, "cheap", "all", 5), (1300, "strong", "all", 5)])
def test_the_plan_takes_the_strongest_network_that_fits_never_the_probe_instead(colors_data, monkeypatch, budget,
                                                                                network, unfreeze, epochs):
    """The strongest network's fine-tuning does not fit; the cheaper one's does, and is chosen (not the probe). The
    stronger is taken when it trains as many of the 5 advised epochs (1300 s), not when it trains fewer (1000 s: 4).
    A network costlier than one that does not fit is not timed."""
    import time

    import headstart.training.cost
    from headstart.training.cost import TrainingCost

    timed = []

    def cost(name, weights, train, image_size, config):  # the strong network: 200 s an epoch; the cheap one: 100 s
        timed.append((name, config.unfreeze))
        step = {"strong": 2.0, "cheap": 1.0}[name] * (1.0 if config.unfreeze == "all" else 0.3)
        return TrainingCost(step_s=step, head_step_s=step, eval_s=0.0, augment_s=0.0, decode_s=0.0, n_fit=3200,
                            n_monitor=0, batch_size=32, loader=config.loader, workers=2)

    monkeypatch.setattr(headstart.training.cost, "fine_tune_cost", cost)
    advice = Advice(size={"large": True}, similarity={"similar": False}, layers={"blocks.5": 0.95},
                    strategy="fine-tune", layer="blocks.5", network="cheap,strong",
                    options={"unfreeze": "all", "epochs": 5, "image_size": 32}, reason="test")
    chosen, options, evidence = plan_auto(advice, ["cheap", "strong"], "none",
                                          read_class_folders(colors_data / "train"), budget=budget,
                                          started=time.perf_counter())
    assert chosen == "fine-tune" and (options["network"], options["unfreeze"], options["epochs"]) == (
        network, unfreeze, epochs)
    alternatives = {a["name"]: a for a in evidence["plan"]["alternatives"]}
    assert evidence["plan"]["chosen"] == f"fine-tune {network} (" + (
        "every block)" if unfreeze == "all" else "the top 3 blocks)")
    assert alternatives["probe cheap,strong"]["fits"]
    assert alternatives["fine-tune strong (every block)"]["fits"] == (budget >= 1000)
    if budget == 400:  # the cheap network trains 3 of 5 epochs: the strong one, costlier, is not timed
        assert "trains 3 of 5 epochs" in alternatives["fine-tune strong (every block)"]["why"]
    if unfreeze == "3":  # the cheap network's every block does not fit: the strong one's is not even timed
        assert "not timed" in alternatives["fine-tune strong (every block)"]["why"]
        assert "trains 4 of 5 epochs" in alternatives["fine-tune strong (the top 3 blocks)"]["why"]
        assert timed == [("cheap", "all"), ("cheap", "3")]


def test_fit_auto_records_its_decision(tmp_path, colors_data, capsys):
    assert main(["fit", str(colors_data), "--out", str(tmp_path / "auto"), "--json", "-q"]) == 0
    fit = json.loads(capsys.readouterr().out)
    assert fit["auto"]["strategy"] == fit["strategy"] == "feature-extractor"
    assert fit["layers"] == fit["auto"]["options"]["layer"].split("+")
    config = json.loads((tmp_path / "auto" / "config.json").read_text())
    assert config["auto"]["advice"]["layer_scores"] and np.isfinite(fit["validation"]["accuracy"])


def test_fit_auto_fine_tunes_large_data_then_checks_it_against_the_probe(tmp_path, colors_data, capsys, monkeypatch):
    import headstart.auto.measure
    import headstart.auto.plan
    import headstart.training.cost

    monkeypatch.setattr(headstart.auto.measure, "LARGE_PER_CLASS", 10)  # 12 images per class count as large
    monkeypatch.setattr(headstart.auto.advice, "FINE_TUNE_STEPS", 1)  # the minimum number of epochs
    assert main(["fit", str(colors_data), "--out", str(tmp_path / "auto"), "--json", "-q", "--budget", "900",
                 "--image-size", "64"]) == 0  # a size the user gives stays: a quicker test
    fit = json.loads(capsys.readouterr().out)
    auto = fit["auto"]
    assert auto["advice"]["strategy"] == "fine-tune" and auto["options"]["epochs"] == 3
    assert auto["options"]["image_size"] == 64 and auto["advice"]["options"]["image_size"] == 160
    assert 0 < auto["fine_tune_epoch_s"] < 60  # measured on this machine
    assert auto["check"]["kept"] == (fit["strategy"] == "fine-tune")
    assert fit["strategy"] == "fine-tune" or fit["layers"] == auto["probe"]["layer"].split("+")
    assert json.loads((tmp_path / "auto" / "config.json").read_text())["auto"]["check"] == auto["check"]
    assert not (tmp_path / ".auto.training").exists()


def test_a_cached_sample_does_not_make_the_other_images_look_free(colors_data, monkeypatch, tmp_path):
    """With the sample's codes all in the cache, a slice of the other images is timed before deciding on them."""
    import headstart.auto.measure
    import headstart.auto.plan
    import headstart.training.cost
    from headstart.auto.measure import measure_codes

    monkeypatch.setattr(headstart.auto.measure, "PROBE_SAMPLE", 8)
    monkeypatch.setattr(headstart.auto.measure, "RATE_SLICE", 4)
    monkeypatch.setattr(headstart.auto.measure, "FULL_PASS_SHARE", 1e-9)  # no full pass fits if it costs anything
    extractor = FeatureExtractor(create_backbone("test_efficientnet", "none", image_size=32), ["penultimate"],
                                 tmp_path)
    train = read_class_folders(colors_data / "train")
    first = measure_codes(extractor, train, large=True, budget=600)
    again = measure_codes(extractor, train, large=True, budget=600)
    assert (first.complete, len(first.images), first.computed) == (False, 8, 8)
    assert (again.complete, len(again.images), again.computed) == (False, 12, 4)
    assert measure_codes(extractor, train, large=True, budget=None).complete  # no budget: every image
