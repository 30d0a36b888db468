"""CNN codes: ONNX Runtime equals eager PyTorch; the cache is reused, and rebuilt when damaged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import headstart
from headstart.codes.codesnet import CodesNet
from headstart.codes.create import create_backbone
from headstart.codes.extract import FeatureExtractor
from tests.conftest import SHARED, make_image, needs_shared


@pytest.fixture(scope="module")
def lite0():
    return create_backbone()


@needs_shared
@pytest.mark.parametrize("layers", [["penultimate"], ["blocks.3", "blocks.5"]])
def test_onnx_codes_equal_eager_pytorch(lite0, cache_dir, layers):
    paths = sorted((SHARED / "dtd10" / "val" / "banded").iterdir())[:12]
    codes = FeatureExtractor(lite0, layers, cache_dir=False, engine="onnx").transform(paths)
    batch = np.stack([lite0.preprocess.load(p) for p in paths])
    with torch.inference_mode():
        reference = torch.cat(CodesNet(lite0, layers)(torch.from_numpy(batch)), 1).numpy()
    assert codes.codes.shape == reference.shape
    assert np.abs(codes.codes - reference).max() < 1e-4


def test_the_export_is_traced_with_constant_padding_and_checked_else_dynamo_exports_it(lite0, monkeypatch):
    import onnx
    import onnxruntime

    from headstart.codes import onnx_export

    traced = onnx.load_from_string(onnx_export.export_onnx(CodesNet(lite0, ["penultimate"]), lite0.preprocess, 1))
    ops = {node.op_type for node in traced.graph.node}
    assert "Conv" in ops and not ops & {"Shape", "Ceil", "Constant", "ConstantOfShape", "BatchNormalization"}
    # timm's "same" padding as constants (folded into the convolutions), no shape arithmetic, nothing left unfolded:
    # what int8 quantisation needs to fuse

    class Doubled(torch.nn.Module):
        def forward(self, x):
            return (x.float().mean((1, 2, 3)) * 2,)

    class Tripled(torch.nn.Module):
        def forward(self, x):
            return (x.float().mean((1, 2, 3)) * 3,)

    trace = onnx_export._traced
    monkeypatch.setattr(onnx_export, "_traced", lambda net, *args: trace(Tripled(), *args))  # a trace gone wrong
    data = onnx_export.export_onnx(Doubled(), None, 1, examples=(torch.zeros(2, 8, 8, 3, dtype=torch.uint8),))
    images = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    got = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"images": images})[0]
    assert np.allclose(got, images.astype(np.float32).mean((1, 2, 3)) * 2, rtol=1e-5)  # caught: dynamo's export


def test_cache_reuse_and_damage(tmp_path, lite0):
    paths = [make_image(tmp_path / "img" / f"{i}.png", (i * 40, 100, 50), seed=i) for i in range(5)]
    cache = tmp_path / "cache"
    extractor = FeatureExtractor(lite0, ["blocks.4"], cache_dir=cache, engine="torch")
    first = extractor.transform(paths)
    assert first.extracted == 5
    second = extractor.transform(paths)
    assert second.extracted == 0 and np.array_equal(first.codes, second.codes)

    shard = next((cache / "codes").rglob("*.npz"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte, as a bad disk or a killed writer would leave
    shard.write_bytes(bytes(data))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        third = extractor.transform(paths)
    assert any("damaged cache shard" in str(w.message) for w in caught)
    assert third.extracted == 5 and np.allclose(third.codes, first.codes, atol=1e-5)

    make_image(paths[0], (255, 255, 255), seed=99)  # an edited file gets new codes
    assert extractor.transform(paths).extracted == 1


def test_file_identities_in_bulk_equal_one_by_one_through_links_and_relative_paths(tmp_path, monkeypatch):
    from headstart.disk import file_identities, file_identity

    real = [make_image(tmp_path / "real" / f"{i}.png", (i * 40, 100, 50), seed=i) for i in range(3)]
    (tmp_path / "linked").symlink_to(tmp_path / "real")  # a linked folder
    (tmp_path / "alias.png").symlink_to(real[1])  # a linked file: its target's identity, not its folder's
    monkeypatch.chdir(tmp_path / "real")
    paths = [*real, tmp_path / "linked" / "0.png", tmp_path / "alias.png", Path("2.png"),
             tmp_path / "real" / ".." / "real" / "1.png", tmp_path / "gone.png"]
    assert file_identities(paths) == [file_identity(Path(p)) for p in paths]
    assert file_identities(paths)[3] == file_identity(real[0]) and file_identities(paths)[-1] is None


def test_unusable_files_are_reported_not_fatal(tmp_path, lite0):
    good = make_image(tmp_path / "good.png", (10, 200, 10))
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello")
    paths = [tmp_path / "empty.jpg", good, tmp_path / "text.png", tmp_path / "gone.jpg"]
    codes = FeatureExtractor(lite0, ["penultimate"], cache_dir=False, engine="torch").transform(paths)
    assert codes.kept.tolist() == [1] and codes.codes.shape == (1, 1280)
    reasons = dict(codes.skipped)
    assert set(reasons) == {str(p) for p in paths if p != good}
    assert "empty file" in reasons[str(tmp_path / "empty.jpg")]
    assert "not found" in reasons[str(tmp_path / "gone.jpg")]


def test_two_processes_fill_one_cache(tmp_path, colors_data):
    import json
    import subprocess
    import sys

    cache = tmp_path / "cache"
    result = subprocess.run([sys.executable, "-m", "headstart.cli", "extract", str(colors_data), "--devices", "2",
                             "--accelerator", "cpu", "--distributed", "ddp", "--cache-dir", str(cache), "--json",
                             "-q"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout)
    assert out["world_size"] == 2 and out["total_images"] == 32 and out["computed_after_merge"] == 0
    assert 0 < out["computed"] < 32  # rank 0 did only its share
    from headstart.data.folders import files_under

    again = FeatureExtractor(create_backbone(), ["penultimate"], cache_dir=cache).transform(files_under(colors_data))
    assert again.extracted == 0 and len(again.kept) == 32


def test_codes_nets_leave_no_hooks_behind():
    import gc

    backbone = create_backbone("test_efficientnet", "none", image_size=32)
    block = dict(backbone.model.named_modules())["blocks.1"]
    nets = [CodesNet(backbone, ["blocks.1", "penultimate"]) for _ in range(3)]
    assert len(block._forward_hooks) == 3
    del nets[:2]
    gc.collect()
    assert len(block._forward_hooks) == 1  # the dropped nets took their hooks with them
    codes = nets[0](torch.zeros(2, 32, 32, 3, dtype=torch.uint8))
    assert codes[0].shape[0] == 2 and not nets[0]._taps  # taps are consumed, not kept


def _two_nodes(args: list[str]) -> list[subprocess.CompletedProcess]:
    """Run ``headstart ARGS`` as node 0 and node 1 of a two-node job on this machine (Lightning's variables)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "headstart.cli", *args, "--num-nodes", "2", "--devices", "1", "--accelerator",
               "cpu", "--distributed", "ddp", "--json", "-q"]
    nodes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                                   "NODE_RANK": str(rank)}) for rank in (0, 1)]
    done = []
    for node in nodes:
        out, err = node.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(node.args, node.returncode, out, err))
    return done


def test_extraction_and_fine_tuning_run_across_two_nodes(tmp_path, colors_data):
    cache = tmp_path / "cache"
    first, second = _two_nodes(["extract", str(colors_data / "train"), "--cache-dir", str(cache)])
    assert first.returncode == second.returncode == 0, first.stderr[-2000:] + second.stderr[-2000:]
    out = json.loads(first.stdout)
    assert out["world_size"] == 2 and out["total_images"] == 24 and out["computed_after_merge"] == 0
    assert 0 < out["computed"] < 24  # node 0 did only its share; node 1 the rest

    first, second = _two_nodes(["fit", str(colors_data), "--strategy", "fine-tune", "--model", "test_efficientnet",
                                "--weights", "none", "--image-size", "32", "--epochs", "1", "--batch-size", "4",
                                "--workers", "0", "--out", str(tmp_path / "model"), "--cache-dir", str(cache)])
    assert first.returncode == second.returncode == 0, first.stderr[-2000:] + second.stderr[-2000:]
    fit = json.loads(first.stdout)  # node 0 saves and reports; node 1 says nothing
    assert fit["training"]["world_size"] == 2 and not second.stdout.strip()
    assert headstart.load(tmp_path / "model").predict(sorted((colors_data / "val").rglob("*.png"))).tolist()
