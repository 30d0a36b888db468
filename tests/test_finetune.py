"""Fine-tuning on Lightning with timm's tiny test network: frozen BatchNorm, resume after kill -9, DDP on CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import headstart
from headstart.cli import main
from headstart.codes.create import create_backbone
from headstart.data.folders import read_class_folders
from headstart.training.module import _matches, trainable_prefixes
from headstart.training.options import FineTuneConfig
from headstart.training.run import fine_tune
from tests.conftest import make_image

TINY = ["--model", "test_efficientnet", "--weights", "none", "--image-size", "32", "--workers", "0", "-q"]


def test_frozen_part_is_bit_identical_after_training(tmp_path, colors_data):
    backbone = create_backbone("test_efficientnet", "none", image_size=32)
    before = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    # no head-only epoch: whichever epoch is restored as best, the unfrozen block has trained
    config = FineTuneConfig(unfreeze="1", epochs=2, probe_epochs=0, batch_size=8, workers=0, lr=1e-2)
    info = fine_tune(backbone, read_class_folders(colors_data / "train"), config, tmp_path, progress=False)
    after = backbone.model.state_dict()
    trained = trainable_prefixes(backbone.model, 1)
    assert info["trainable_prefixes"] == trained and "blocks.0" not in trained
    frozen = [k for k in before if not _matches(k, trained) and not k.startswith("classifier")]
    assert any("running_mean" in k for k in frozen)
    for key in frozen:
        assert torch.equal(before[key], after[key]), key
    changed = [k for k in before if _matches(k, trained) and k in after and not torch.equal(before[k], after[k])]
    assert any("running_var" in k for k in changed) and any("weight" in k for k in changed)


def test_fine_tuned_model_saves_evaluates_and_summarises(tmp_path, colors_data, capsys):
    out = tmp_path / "run"
    assert main(["fit", str(colors_data), "--strategy", "fine-tune", "--unfreeze", "all", "--epochs", "2",
                 "--out", str(out), "--json", *TINY]) == 0
    fit = json.loads(capsys.readouterr().out)
    assert fit["strategy"] == "fine-tune" and fit["training"]["epochs_run"] == 2
    assert (out / "logs" / "metrics.csv").exists() and not (tmp_path / ".run.training").exists()
    clf = headstart.load(out)
    assert clf.config_["preprocess"]["input_size"] == [32, 32]
    assert clf.evaluate(colors_data / "val")["n_images"] == 8
    assert main(["summary", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["trainable_params"] == summary["total_params"]


def test_training_from_cached_activations_keeps_the_frozen_part_bit_identical(tmp_path, colors_data):
    """The cache holds exactly what the whole network computes in its frozen part for the same augmented batch, and
    after training the frozen part computes bit-identical outputs to the streaming run's."""
    from headstart.codes.backbones import block_names
    from headstart.data.imagecache import augment_batch
    from headstart.training.activations import lower_forward
    from headstart.training.datamodule import ImageDataModule
    from headstart.training.module import ClassifierNet

    images = read_class_folders(colors_data / "train")
    first = len(block_names(create_backbone("test_efficientnet", "none").model)) - 1
    frozen_outputs = []
    for loader in ("stream", "activations"):
        torch.manual_seed(0)  # the same random weights in both runs
        backbone = create_backbone("test_efficientnet", "none", image_size=32)
        before = {k: v.clone() for k, v in backbone.model.state_dict().items()}
        config = FineTuneConfig(unfreeze="1", epochs=2, probe_epochs=0, batch_size=8, workers=0, lr=1e-2,
                                loader=loader)
        data = ImageDataModule(images, backbone.preprocess, config, folder=tmp_path / loader)
        info = fine_tune(backbone, data, config, tmp_path / loader, progress=False)
        trained = info["trainable_prefixes"]
        for key, value in backbone.model.state_dict().items():
            if not _matches(key, trained) and not key.startswith("classifier"):
                assert torch.equal(before[key], value), key
        assert any(not torch.equal(before[k], v) for k, v in backbone.model.state_dict().items()
                   if _matches(k, trained) and k in before)
        net = ClassifierNet(backbone.model, backbone.preprocess).eval().to(memory_format=torch.channels_last)
        probe = torch.randint(0, 256, (5, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
        with torch.inference_mode():
            frozen_outputs.append(lower_forward(backbone.model, net.normalize(probe).contiguous(
                memory_format=torch.channels_last), first))
    assert info["image_cache"]["from_block"] == first and info["image_cache"]["activation_views"] == 2
    assert torch.equal(*frozen_outputs)

    # the cached view 0 is the frozen part's output, as the whole network computes it, for that augmented batch
    seen = {}
    hook = net.model.blocks[first].register_forward_pre_hook(lambda module, args: seen.update(x=args[0].clone()))
    stored = torch.from_numpy(data.stored[data.fit_idx])
    with torch.inference_mode():
        net(augment_batch(stored, 32, torch.Generator().manual_seed(config.seed * 1009)))
    hook.remove()
    assert torch.equal(torch.from_numpy(data.activations[0]), seen["x"])


@pytest.mark.parametrize("loader", ["memory", "activations"])
def test_resume_after_kill_9(tmp_path, loader):
    data = tmp_path / "data"
    for name, color in (("a", (220, 30, 30)), ("b", (30, 30, 220))):
        for i in range(60):
            make_image(data / name / f"{i}.png", color, size=32, seed=i)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "headstart.cli", "fit", str(data), "--strategy", "fine-tune", "--epochs", "12",
               "--patience", "100", "--batch-size", "4", "--out", str(out), "--json", *TINY[:-1], "-q",
               "--loader", loader, "--unfreeze", "2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    last = tmp_path / ".run.training" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # well inside a later epoch
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert last.exists() and not out.exists()

    resumed = subprocess.run([sys.executable, "-m", "headstart.cli", "fit", "--resume", str(out), "--json", "-q"],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    training = json.loads(resumed.stdout)["training"]
    assert training["resumed_from_epoch"] >= 1 and training["epochs_run"] == 12
    assert training["config"]["batch_size"] == 4 and (out / "config.json").exists()
    import csv

    with (out / "logs" / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("monitor_acc")]
    epochs, steps = [int(float(r["epoch"])) for r in rows], [int(r["step"]) for r in rows]
    assert epochs == list(range(12))  # the epochs before the kill are kept, and none is run twice
    assert len(set(np.diff(steps))) == 1  # the resumed run continued after the last checkpointed epoch


def test_an_auto_run_killed_while_fine_tuning_resumes_its_decision_and_its_epochs(tmp_path):
    """The whole default path, killed with SIGKILL during the fine-tuning auto decided on, then `fit --resume`: the
    decision comes from the workdir (the tiny set counts as large only in the first process, where LARGE_PER_CLASS
    is lowered; deciding afresh would choose the probe), and training continues from its last epoch."""
    data = tmp_path / "data"
    for name, color in (("a", (220, 30, 30)), ("b", (30, 30, 220))):
        for i in range(60):
            make_image(data / name / f"{i}.png", color, size=32, seed=i)
    out = tmp_path / "run"
    large = ("import sys; import headstart.auto.measure as m; m.LARGE_PER_CLASS = 1; from headstart.cli import main; "
             "sys.exit(main(sys.argv[1:]))")
    process = subprocess.Popen([sys.executable, "-c", large, "fit", str(data), "--epochs", "12", "--patience", "100",
                                "--batch-size", "4", "--out", str(out), "--json", *TINY],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    workdir = tmp_path / ".run.training"
    last = workdir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert last.exists() and not out.exists(), process.stderr.read().decode()[-2000:]
    decided = json.loads((workdir / "auto.json").read_text())
    assert decided["strategy"] == "fine-tune"

    # What is tested is resuming, not the check against the probe (which tiny random-weight runs may fail either way).
    kept = ("import sys; import headstart.auto.run as r; r.keep_fine_tuned = lambda *a: True; "
            "from headstart.cli import main; sys.exit(main(sys.argv[1:]))")
    resumed = subprocess.run([sys.executable, "-c", kept, "fit", "--resume", str(out), "--json"],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    fit = json.loads(resumed.stdout)
    assert fit["auto"]["decision"] == decided["decision"] and fit["auto"]["strategy"] == "fine-tune"
    assert fit["training"]["resumed_from_epoch"] >= 1 and fit["training"]["epochs_run"] == 12
    assert "resuming the earlier decision" in resumed.stderr and "measuring" not in resumed.stderr


def test_two_process_ddp_on_cpu(tmp_path, colors_data):
    out = tmp_path / "ddp"
    result = subprocess.run([sys.executable, "-m", "headstart.cli", "fit", str(colors_data), "--strategy",
                             "fine-tune", "--epochs", "2", "--devices", "2", "--accelerator", "cpu", "--distributed",
                             "ddp", "--out", str(out), "--json", *TINY], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    fit = json.loads(result.stdout)
    assert fit["training"]["world_size"] == 2 and (out / "config.json").exists()


def test_non_finite_loss_stops_with_one_line(tmp_path, colors_data, capsys):
    code = main(["fit", str(colors_data), "--strategy", "scratch", "--epochs", "3", "--lr", "1e30",
                 "--out", str(tmp_path / "nan"), *TINY])
    err = capsys.readouterr().err
    assert code == 2 and "training stopped" in err and err.count("\n") == 1
    assert not (tmp_path / "nan").exists()


def test_max_seconds_stops_training_early(tmp_path, colors_data):
    backbone = create_backbone("test_efficientnet", "none", image_size=32)
    config = FineTuneConfig(unfreeze="all", epochs=500, probe_epochs=0, batch_size=8, workers=0,
                            patience=1000, max_seconds=2.0)  # no early stop: only the time limit ends it
    started = time.perf_counter()
    info = fine_tune(backbone, read_class_folders(colors_data / "train"), config, tmp_path, progress=False)
    assert info["epochs_run"] < 500 and time.perf_counter() - started < 30


def test_a_checkpoint_restores_with_load_from_checkpoint(tmp_path, colors_data):
    from headstart.training.module import ClassifierNet, FineTuner

    backbone = create_backbone("test_efficientnet", "none", image_size=32)
    config = FineTuneConfig(unfreeze="all", epochs=2, batch_size=8, workers=0)
    fine_tune(backbone, read_class_folders(colors_data / "train"), config, tmp_path, progress=False)
    restored = FineTuner.load_from_checkpoint(tmp_path / "checkpoints" / "best.ckpt").eval()
    assert restored.hparams.model == "test_efficientnet" and restored.hparams.n_classes == 2
    images = torch.randint(0, 255, (3, 32, 32, 3), dtype=torch.uint8)
    with torch.inference_mode():
        expected = ClassifierNet(backbone.model, backbone.preprocess).eval()(images)
        torch.testing.assert_close(restored(images), expected)
