"""auto as a library call in one pass, the fast linear heads, and the layer choice."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest

import headstart
from headstart.auto.layers import choose_layer
from headstart.cli import main
from headstart.defaults import DEFAULT_MODEL
from headstart.heads.linear import Search, fit_linear, search_C, stratified_folds
from tests.conftest import SHARED, needs_shared


def blobs(n_per_class: int = 60, classes: int = 3, dims: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping Gaussian classes: a problem where C matters."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.0, (classes, dims))
    labels = np.repeat(np.arange(classes), n_per_class)
    return centres[labels] + rng.normal(0, 2.0, (len(labels), dims)), labels


def test_the_batched_solver_finds_scikit_learns_solution():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x, y = blobs()
    scaler = StandardScaler().fit(x)
    reference = LogisticRegression(C=0.05, max_iter=10_000, tol=1e-10).fit(scaler.transform(x), y)
    head = fit_linear(x, y, 3, C=0.05)
    np.testing.assert_allclose(head.predict_proba(x), reference.predict_proba(scaler.transform(x)), atol=2e-3)


def test_stratified_folds_partition_every_class():
    labels = np.array([0] * 7 + [1] * 12 + [2] * 5)
    folds = stratified_folds(labels, seed=0)
    assert len(folds) == 5
    tests = np.concatenate([test for _, test in folds])
    assert sorted(tests.tolist()) == list(range(len(labels)))  # each image held out exactly once
    for train, test in folds:
        assert set(train).isdisjoint(test) and set(np.unique(labels[test])) == {0, 1, 2}
    assert stratified_folds(np.array([0, 0, 0, 1]), seed=0) is None  # a class of one image: no CV


@pytest.mark.parametrize("classifier", ["logistic", "svm"])
def test_the_C_search_brackets_its_optimum(classifier):
    x, y = blobs()
    search = search_C(x, y, 3, classifier)
    assert 0 < search.best < len(search.grid) - 1, search.grid
    assert search.cv_accuracy > 0.5 and len(search.sample_losses) == len(y)


@pytest.mark.parametrize("classifier", ["logistic", "svm"])
def test_many_classes_walk_up_the_C_grid_to_the_batched_searchs_choice(classifier, monkeypatch):
    import headstart.heads.linear as linear

    k = linear.PATH_CLASSES + 5
    x, y = blobs(n_per_class=12, classes=k, dims=30, seed=3)
    walked = search_C(x, y, k, classifier)
    monkeypatch.setattr(linear, "PATH_CLASSES", 10**9)  # every C solved at once, as below PATH_CLASSES
    batched = search_C(x, y, k, classifier)
    assert abs(np.log10(walked.C / batched.C)) <= 0.51  # the same C, or its neighbour on the grid
    at_walked = batched.log_loss[int(np.argmin(np.abs(np.log(np.asarray(batched.grid) / walked.C))))]
    assert at_walked <= batched.cv_log_loss + 0.02 and len(walked.sample_losses) == len(y)  # as good, in full
    assert walked.cv_log_loss <= batched.cv_log_loss + 0.05  # its own loss is measured in the leading axes
    assert 0 < walked.best < len(walked.grid) - 1
    assert len(walked.grid) == walked.best + 1 + linear.PATIENCE  # it stopped PATIENCE values past the best
    assert min(walked.grid) == pytest.approx(linear.C_GRIDS[classifier][linear.WALK_FROM])  # where it started


def test_a_walks_first_C_solved_from_zero_gets_more_steps_than_the_warm_started_ones(monkeypatch):
    import headstart.heads.linear as linear

    k = linear.PATH_CLASSES + 5
    x, y = blobs(n_per_class=12, classes=k, dims=30, seed=3)
    solves = []
    fold_logits = linear.fold_logits
    monkeypatch.setattr(linear, "fold_logits", lambda *args: solves.append((args[-2], args[-1] is None)) or
                        fold_logits(*args))
    for near in (None, 0.1):  # the first walk, and one started near another layer's C
        solves.clear()
        search_C(x, y, k, near=near)
        assert solves[0] == (linear.FIRST_ITERATIONS, True) and len(solves) >= 3
        assert all(step == (linear.WARM_ITERATIONS, False) for step in solves[1:])
    assert linear.FIRST_ITERATIONS > linear.WARM_ITERATIONS


def test_the_walk_runs_in_the_fewest_leading_axes_that_hold_the_share_of_variance():
    from headstart.heads.basis import Standardised

    x, _ = blobs(n_per_class=40, classes=4, dims=30, seed=1)
    full = Standardised(x)
    lead = full.leading(0.95)
    variance = np.sort(full.variance.numpy())[::-1]
    rank = lead.z.shape[1]
    assert 0 < rank < x.shape[1] and lead.axes.shape == (x.shape[1], rank)
    assert variance[:rank].sum() >= 0.95 * variance.sum() > variance[:rank - 1].sum()  # the fewest that hold it
    assert np.allclose(np.sort(lead.variance.numpy())[::-1], variance[:rank])  # the strongest axes, not others
    assert full.z.shape[1] == len(full.variance) == x.shape[1]  # the full basis is left as it was


@pytest.mark.parametrize("near", ["the best C", "far above it"])
def test_a_walk_started_near_a_known_C_finds_the_same_C_with_fewer_solves(near):
    import headstart.heads.linear as linear

    k = linear.PATH_CLASSES + 5
    x, y = blobs(n_per_class=12, classes=k, dims=30, seed=3)
    walked = search_C(x, y, k)
    start = walked.C if near == "the best C" else walked.C * 100  # too high: it walks down to the lowest loss
    nearby = search_C(x, y, k, near=start)
    assert abs(np.log10(nearby.C / walked.C)) <= 0.51 and nearby.cv_log_loss <= walked.cv_log_loss + 0.02
    assert min(nearby.grid) >= min(walked.grid) * 0.999
    if near == "the best C":
        assert len(nearby.grid) < len(walked.grid) and min(nearby.grid) == pytest.approx(walked.C / np.sqrt(10))

def test_measured_joins_of_side_by_side_parts_are_views_of_the_one_block_not_copies():
    from headstart.auto.measure import Measured

    block = np.arange(6 * 10, dtype=np.float32).reshape(6, 10)
    columns = {"blocks.4": (0, 3), "blocks.5": (3, 5), "penultimate": (5, 10)}
    parts = {name: block[:, a:b] for name, (a, b) in columns.items()}
    measured = Measured(parts, None, [], 6, True, 0.0, columns, block)
    for layer in ("blocks.5+penultimate", "blocks.4+blocks.5+penultimate", "penultimate"):
        joined = measured.codes(layer)
        assert np.shares_memory(joined, block)
        assert np.array_equal(joined, np.concatenate([parts[p] for p in layer.split("+")], 1))
    apart = measured.codes("blocks.4+penultimate")  # not side by side: joined as before
    assert not np.shares_memory(apart, block) and np.array_equal(apart, np.concatenate([block[:, :3], block[:, 5:]], 1))
    assert np.array_equal(Measured(parts, None, [], 6, True, 0.0).codes("blocks.5+penultimate"), block[:, 3:])


def _search(losses: list[float], accuracy: float = 0.9) -> Search:
    losses = np.asarray(losses)
    return Search("logistic", [1.0], [float(losses.mean())], [accuracy], 0, 5, len(losses), losses)


def test_layer_choice_takes_the_widest_join_among_candidates_tied_within_the_noise():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.1, 1.0, 400)
    searches = {"penultimate": _search(base + 0.05),  # clearly worse
                "blocks.5": _search(base),  # lowest
                "blocks.5+penultimate": _search(base + rng.normal(0.002, 0.05, 400))}  # within the noise
    chosen, evidence = choose_layer(searches)
    assert chosen == "blocks.5+penultimate" and evidence["lowest_log_loss"] == "blocks.5"
    assert not evidence["candidates"]["penultimate"]["tied"]
    searches["blocks.5+penultimate"] = _search(base + 0.05)  # clearly worse now
    assert choose_layer(searches)[0] == "blocks.5"


def test_auto_in_the_library_in_one_pass(tmp_path, colors_data):
    cache = tmp_path / "cache"
    clf = headstart.TransferClassifier(strategy="auto", cache_dir=cache).fit(colors_data / "train")
    assert clf.strategy == "auto" and clf.strategy_ == "feature-extractor"  # parameters are never changed by fit
    assert "+".join(clf.layers_) == clf.auto_["options"]["layer"] == clf.auto_["advice"]["layer"]
    scores = clf.auto_["advice"]["layer_scores"]  # each network's 8 candidates, and their probes averaged
    assert len(scores) == 16 + (clf.auto_["advice"]["layer_choice"]["joint"]["chosen"] == "joint")
    assert "decide" in clf.fit_info_["seconds"]
    assert clf.fit_info_["n_codes_computed"] == 24  # every training image once through both networks, run as one
    joint = clf.auto_["advice"]["layer_choice"]["joint"]
    assert set(joint["scores"]) == {"joint", "tf_efficientnet_lite0", "tf_efficientnet_lite2"}
    assert clf.backbone_.name == ("tf_efficientnet_lite0,tf_efficientnet_lite2" if joint["chosen"] == "joint" else
                                  joint["chosen"]) and clf.get_params()["model"] is None
    assert clf.evaluate(colors_data / "val")["accuracy"] == 1.0
    assert len(list((cache / "onnx").glob("*.onnx"))) == 1  # both networks in one file: validation reused it
    clf.save(tmp_path / "model")
    loaded = headstart.load(tmp_path / "model")
    assert loaded.layers_ == clf.layers_ and loaded.strategy_ == "feature-extractor"
    val = sorted((colors_data / "val").rglob("*.png"))
    np.testing.assert_allclose(loaded.predict_proba(val), clf.predict_proba(val), atol=1e-6)
    again = headstart.TransferClassifier(strategy="auto", cache_dir=cache, classifier="svm").fit(colors_data / "train")
    assert again.fit_info_["n_codes_computed"] == 0 and again.layers_ == clf.layers_  # scores came from the cache
    assert again.head_.info["classifier"] == "svm"


def test_advise_and_fit_share_one_pass(tmp_path, colors_data, capsys):
    cache = str(tmp_path / "cache")
    advice = headstart.advise("tf_efficientnet_lite0", colors_data / "train", cache_dir=cache)
    assert advice.measured.computed == 24 and advice.measured.complete
    assert main(["fit", str(colors_data), "--out", str(tmp_path / "run"), "--cache-dir", cache, "--json", "-q",
                 "--model", DEFAULT_MODEL]) == 0  # by default auto would also rank Lite2: a pass advise did not make
    fit = json.loads(capsys.readouterr().out)
    assert fit["n_codes_computed"] == 0 and fit["layers"] == advice.layer.split("+")
    assert fit["seconds"]["decide"] <= fit["seconds"]["total"]


def test_a_layer_given_with_auto_means_the_feature_extractor(colors_data):
    clf = headstart.TransferClassifier(strategy="auto", layer="blocks.4").fit(colors_data / "train")
    assert clf.strategy_ == "feature-extractor" and clf.layers_ == ["blocks.4"] and not hasattr(clf, "auto_")
    assert clf.backbone_.name == DEFAULT_MODEL  # no network to choose: the default network alone


def test_a_default_network_whose_weights_are_not_installed_is_left_out(colors_data, monkeypatch):
    from headstart.codes import joint as networks

    installed = networks.embedded_weights_path
    assert networks.named_networks(None, True) == ["tf_efficientnet_lite0", "tf_efficientnet_lite2"]
    monkeypatch.setattr(networks, "embedded_weights_path", lambda name: None if "lite2" in name else installed(name))
    assert networks.named_networks(None, True) == [DEFAULT_MODEL] == networks.named_networks(None, False)
    assert networks.named_networks("tf_efficientnet_lite2", True) == ["tf_efficientnet_lite2"]  # named: asked for
    clf = headstart.TransferClassifier(strategy="auto").fit(colors_data / "train")
    assert clf.backbone_.name == DEFAULT_MODEL and "network" not in clf.auto_


def test_a_resumed_auto_run_takes_the_network_it_had_chosen(tmp_path, colors_data):
    """--resume reads the decision from the workdir's auto.json, the chosen network included, instead of deciding
    again (here a probe decision, so that nothing trains; a fine-tuning one resumes its training the same way)."""
    from headstart.auto.run import AUTO_JSON

    work = tmp_path / "work"
    work.mkdir()
    (work / AUTO_JSON).write_text(json.dumps({
        "decision": "linear classifier on penultimate", "strategy": "feature-extractor",
        "options": {"layer": "penultimate"}, "network": {"chosen": "tf_efficientnet_lite2"}}))
    clf = headstart.TransferClassifier(strategy="auto", workdir=work, resume=True).fit(colors_data / "train")
    assert clf.backbone_.name == "tf_efficientnet_lite2" and clf.layers_ == ["penultimate"]
    assert clf.auto_["network"]["chosen"] == "tf_efficientnet_lite2" and clf.score(colors_data / "val") == 1.0
    both, layer = "tf_efficientnet_lite0,tf_efficientnet_lite2", "penultimate"  # this release's: the joint probe
    (work / AUTO_JSON).write_text(json.dumps({
        "decision": "linear classifier", "strategy": "feature-extractor", "advice": {"network": both},
        "options": {"layer": f"tf_efficientnet_lite0:{layer}+tf_efficientnet_lite2:{layer}"}}))
    clf = headstart.TransferClassifier(strategy="auto", workdir=work, resume=True).fit(colors_data / "train")
    assert clf.backbone_.name == both and clf.head_.info["combined"] and clf.score(colors_data / "val") == 1.0


def test_refit_after_changing_the_layer_uses_the_new_layer(colors_data):
    clf = headstart.TransferClassifier(layer="blocks.4").fit(colors_data / "train")
    clf.layer = "blocks.5"
    clf.fit(colors_data / "train")
    codes = clf.codes(sorted((colors_data / "val").rglob("*.png")))
    assert clf.layers_ == ["blocks.5"] and codes.codes.shape[1] == clf.head_.weight.shape[1] == 192


@needs_shared
def test_svm_search_on_dtd10_is_inside_its_grid_and_close_to_logistic():
    from headstart.codes.create import create_backbone
    from headstart.codes.extract import FeatureExtractor
    from headstart.data.splits import find_splits

    splits = find_splits(SHARED / "dtd10")
    extractor = FeatureExtractor(create_backbone(), ["penultimate"])
    train, val = extractor.transform(splits.train.paths), extractor.transform(splits.val.paths)
    accuracy = {}
    for classifier in ("logistic", "svm"):
        head = fit_linear(train.codes, splits.train.labels[train.kept], 10, classifier)
        assert not head.info["C_at_grid_edge"], head.info
        accuracy[classifier] = float((head.predict_proba(val.codes).argmax(1) == splits.val.labels[val.kept]).mean())
    print(f"dtd10 penultimate: {accuracy}")
    assert accuracy["svm"] >= accuracy["logistic"] - 0.01


def _ranked(losses: np.ndarray, layer: str = "penultimate"):
    from headstart.auto.networks import Ranked

    return Ranked(layer, _search(list(losses)), 1.0)


def test_the_network_with_the_lowest_loss_wins_unless_the_first_named_is_within_the_noise():
    from headstart.auto.networks import choose_network
    from headstart.codes.joint import model_names

    assert model_names(" a, b ,,c ") == ["a", "b", "c"]
    rng = np.random.default_rng(0)
    base = rng.uniform(0.1, 1.0, 400)
    noisy = base + rng.normal(0, 0.05, 400)
    chosen, evidence = choose_network({"a": _ranked(base + 0.002), "b": _ranked(noisy), "c": _ranked(base + 0.3)})
    assert chosen == "a" and evidence["lowest_log_loss"] == "b"  # a is tied with b: the first named wins the tie
    assert evidence["networks"]["a"]["tied"] and not evidence["networks"]["c"]["tied"]
    chosen, evidence = choose_network({"a": _ranked(base + 0.2), "b": _ranked(base)})
    assert chosen == "b" and not evidence["networks"]["a"]["tied"]  # clearly better: chosen though named second
    # large data (fine-tuning planned): the tie goes to the last named, never to a network outside the noise
    chosen, evidence = choose_network({"a": _ranked(noisy), "b": _ranked(base + 0.002), "c": _ranked(base + 0.3)},
                                      tie_to_last=True)
    assert chosen == "b" and evidence["lowest_log_loss"] == "a" and "goes to the last named" in evidence["rule"]


def test_a_tie_between_networks_goes_to_the_last_named_on_large_data(monkeypatch, tmp_path, colors_data):
    """rank_networks applies the size rule: on small data a tie goes to the first named, on large data (here
    LARGE_PER_CLASS lowered to 1) to the last named; a network outside the noise never wins."""
    import headstart.auto.measure as measure
    from headstart.auto.networks import rank_networks
    from headstart.codes.create import create_backbone
    from headstart.data.folders import read_class_folders

    images = read_class_folders(colors_data / "train")
    backbones = {name: functools.partial(create_backbone, name)
                 for name in ("tf_efficientnet_lite0", "tf_efficientnet_lite1")}
    rules = []
    for per_class in (10 ** 6, 1):
        monkeypatch.setattr(measure, "LARGE_PER_CLASS", per_class)
        chosen, evidence = rank_networks(backbones, images, tmp_path)
        rules.append(evidence["rule"])
        tied = [name for name, row in evidence["networks"].items() if row["tied"]]
        assert chosen.name == (tied[0] if per_class > 1 else tied[-1])
    assert "goes to the first named" in rules[0] and "goes to the last named" in rules[1]


def test_auto_weighs_named_networks_and_the_model_holds_what_it_chose(tmp_path, colors_data, capsys):
    names = "tf_efficientnet_lite0,tf_efficientnet_lite1"
    clf = headstart.TransferClassifier(model=names, strategy="auto").fit(colors_data / "train")
    joint = clf.auto_["advice"]["layer_choice"]["joint"]
    assert set(joint["scores"]) == {"joint", *names.split(",")} and joint["images"] == 24
    assert all(row["standard_error"] is not None for name, row in joint["scores"].items() if name != "joint")
    assert clf.backbone_.name == (names if joint["chosen"] == "joint" else joint["chosen"])
    assert clf.score(colors_data / "val") == 1.0 and clf.get_params()["model"] == names
    clf.save(tmp_path / "model")
    loaded = headstart.load(tmp_path / "model")
    assert loaded.backbone_.name == clf.backbone_.name and loaded.layers_ == clf.layers_
    val = sorted((colors_data / "val").rglob("*.png"))
    np.testing.assert_allclose(loaded.predict_proba(val), clf.predict_proba(val), atol=1e-5)
    # several networks as the feature extractor: each network's penultimate probe, their logits averaged
    assert main(["fit", str(colors_data), "--model", names, "--strategy", "feature-extractor", "-q", "--json",
                 "--out", str(tmp_path / "fe")]) == 0
    fit = json.loads(capsys.readouterr().out)
    assert fit["model"] == names and fit["layers"] == [f"{n}:penultimate" for n in names.split(",")]
    assert [m["network"] for m in fit["classifier_search"]["members"]] == names.split(",")
    for strategy in ("fine-tune", "scratch"):  # one network trains
        assert main(["fit", str(colors_data), "--model", names, "--strategy", strategy, "-q"]) == 2
    (tmp_path / "w.pt").touch()  # a file that exists: the refusal is for naming weights with several networks
    assert main(["fit", str(colors_data), "--model", names, "--weights", str(tmp_path / "w.pt"), "-q"]) == 2


@needs_shared
def test_multilabel_networks_are_ranked_on_a_sample_and_only_the_chosen_one_measures_every_image(tmp_path,
                                                                                              monkeypatch):
    from headstart.auto import networks
    from headstart.data.folders import read_class_folders

    data = _textures(tmp_path / "textures")
    monkeypatch.setattr(networks, "RANK_IMAGES", 30)
    images = read_class_folders(data)
    chosen, network = networks.rank_networks(
        networks.builders(["tf_efficientnet_lite0", "tf_efficientnet_lite1"]), images, tmp_path / "cache")
    assert network["sample"]["images"] == 30 and network["sample"]["of"] == 48
    assert all(row["images"] == 30 and row["standard_error"] is not None for row in network["networks"].values())
    assert {row["layer"] for row in network["networks"].values()} == {"blocks.3+blocks.4+blocks.5+blocks.6+penultimate"}
    assert chosen.name == network["chosen"]
    from headstart.report.html import auto_section

    assert "ranked on a stratified 30 of the 48 training images" in auto_section({"network": network})


def _textures(folder, per_class: int = 16):
    from headstart.data.folders import files_under

    for name in ("banded", "bumpy", "cracked"):  # real images of three classes
        (folder / name).mkdir(parents=True)
        for path in files_under(SHARED / "dtd10" / "train" / name)[:per_class]:
            (folder / name / path.name).symlink_to(path)
    return folder


@needs_shared
def test_auto_chooses_int8_codes_for_a_large_collection_it_measured_on_a_sample(tmp_path, monkeypatch):
    """Made "large" by lowering the thresholds: 48 images, 30 measured, the rest not (the budget is tiny), the
    probe chosen; int8 is then checked on the 30 (with the accuracy and saving bars set aside: only the plumbing and
    the evidence are tested here; bench/int8.py measures the speed). Each fit has a cache of its own: measured from
    a cache, the rest is timed on a slice, here all of it."""
    from headstart.auto import measure, precision

    data = _textures(tmp_path / "textures")
    monkeypatch.setattr(measure, "LARGE_PER_CLASS", 10)
    monkeypatch.setattr(measure, "PROBE_SAMPLE", 30)
    monkeypatch.setattr(precision, "INT8_MIN_SAVING", 1e9)  # never worth it: fp32, and why
    clf = headstart.TransferClassifier(DEFAULT_MODEL, strategy="auto", budget=0.01, cache_dir=tmp_path / "c1").fit(data)
    said = clf.auto_["precision"]
    assert "measuring took" in clf.auto_["decision"] and not clf.auto_.get("plans_tried")  # not timed: no time left
    assert clf.precision_ == "fp32" and said["chosen"] == "fp32" and said["images_to_compute"] == 18
    assert "int8 could not save" in said["why"]

    monkeypatch.setattr(precision, "INT8_MIN_SAVING", -1e9)
    monkeypatch.setattr(precision, "TIE_SE", 1e9)
    clf = headstart.TransferClassifier(DEFAULT_MODEL, strategy="auto", budget=0.01, cache_dir=tmp_path / "c2").fit(data)
    said = clf.auto_["precision"]
    assert clf.precision_ == said["chosen"] == "int8" and clf.get_params()["precision"] is None
    assert said["cv_log_loss"]["int8"] > 0 and said["int8_img_s"] > 0 and said["predicted_s"]["int8"] > 0
    clf.save(tmp_path / "model")
    loaded = headstart.load(tmp_path / "model")
    assert loaded.precision_ == "int8" and (tmp_path / "model" / "codes-int8.onnx").is_file()
    paths = sorted(data.rglob("*.jpg"))[:6]
    np.testing.assert_allclose(loaded.predict_proba(paths), clf.predict_proba(paths), atol=1e-5)

    clf = headstart.TransferClassifier(DEFAULT_MODEL, strategy="auto", budget=0.01, precision="fp32",
                                       cache_dir=tmp_path / "c3")
    clf.fit(data)  # the user's word
    assert clf.precision_ == "fp32" and clf.auto_["precision"]["why"] == "--precision fp32 was given"


def test_the_networks_probes_are_averaged_unless_one_alone_is_better_by_three_paired_standard_errors():
    """heads.joint.joint_evidence on out-of-fold logits: two comparable networks give the joint; a network whose
    logits are far better on every image is taken alone, with the noise of each difference stated."""
    from headstart.heads.joint import SINGLE_SE, joint_evidence
    from headstart.heads.linear import Search

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    truth = np.eye(3)[labels]

    def search(logits):
        return Search("logistic", [1.0], [0.0], [0.0], 0, 5, len(labels), np.zeros(len(labels)), oof_logits=logits)

    a, b = (2 * truth + rng.normal(0, 1.2, truth.shape) for _ in range(2))
    tie = joint_evidence({"a": search(a), "b": search(b)}, labels)
    assert tie["chosen"] == "joint" and tie["scores"]["joint"]["cv_log_loss"] < tie["scores"]["a"]["cv_log_loss"]
    sharp = 6 * truth + rng.normal(0, 0.3, truth.shape)
    one = joint_evidence({"a": search(a), "sharp": search(sharp)}, labels)
    row = one["scores"]["sharp"]
    assert one["chosen"] == "sharp" and row["log_loss_above_joint"] < -SINGLE_SE * row["standard_error"] < 0
    assert joint_evidence({"a": search(a), "b": None}, labels)["chosen"] == "joint"  # a member's logits missing
