"""CNN codes for lists of image files: decoding overlapped with inference, the fastest runtime, and the cache."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ..data.decode import decoded_batches
from ..data.imagestats import STATS
from ..defaults import ENGINES, PRECISIONS
from ..disk import cache_folder, file_identities, file_sha256, key_of
from ..errors import ModelError
from .backbones import Backbone
from .quantize import calibration_sample
from .runners import OnnxRunner, fp32_network, int8_network
from .store import SHARD_SIZE, CodeStore, stats_store


@dataclass
class Codes:
    """CNN codes of the usable images; ``kept`` indexes the input paths; ``skipped`` holds (path, reason)."""

    codes: np.ndarray
    kept: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)
    extracted: int = 0  # images run through the network (the rest came from the cache)
    widths: list[int] = field(default_factory=list)  # columns of each layer in ``codes``, in order


#: Device files a GPU driver makes (NVIDIA, Jetson, AMD ROCm, WSL's): on Linux without any of them CUDA cannot be there.
GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia", "/dev/nvhost-ctrl", "/dev/nvmap",
                    "/dev/kfd", "/dev/dxg")


def cuda_available() -> bool:
    """``torch.cuda.is_available()``, without importing torch (1.1 s) on a Linux machine with no GPU driver, where it
    would say False: extraction on the CPU runs ONNX Runtime and needs no torch."""
    if sys.platform.startswith("linux") and "torch" not in sys.modules and not any(
            os.path.exists(path) for path in GPU_DEVICE_FILES):
        return False
    import torch

    return torch.cuda.is_available()


def release_free_memory() -> None:
    """Hand memory that was freed but kept by the C allocator back to the system (glibc's ``malloc_trim``; nothing
    elsewhere). Extraction frees many decoded batches in several threads: on cifar10 (40000 images) this lowered the
    resident memory after extraction by about 0.1-0.5 GB."""
    import contextlib
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


class FeatureExtractor:
    """Compute (or fetch from the cache) CNN codes of ``layers`` for image files.

    ``engine``: "onnx" (ONNX Runtime, the CPU default), "torch" (the default with CUDA), or "auto".
    ``cache_dir``: None for the default location, False to disable caching.
    ``also``: more layers computed and cached whenever the network runs, so that one pass over the images serves
    several layer choices (auto's candidates); ``transform`` returns ``layers`` only.
    ``precision``: "fp32", or "int8" (ONNX Runtime only): the network quantised with ranges measured on
    ``calibration`` (training images; a reproducible sample of them is used), or the already quantised
    ``network`` (an ONNX file, as a saved model holds). int8 codes are cached apart from fp32 ones.
    The pseudo-layer :data:`headstart.data.imagestats.STATS` (in ``layers`` or ``also``) is each image's figures,
    measured while it is decoded and cached for every model alike; asked for alone, or when only it is missing, images
    are decoded without running the network.
    """

    def __init__(self, backbone: Backbone, layers: list[str], cache_dir: str | Path | None | bool = None,
                 engine: str = "auto", batch_size: int | None = None, workers: int | None = None,
                 progress: bool = False, also: list[str] | None = None, precision: str = "fp32",
                 calibration: Sequence[str | Path] | None = None, network: str | Path | None = None):
        if engine not in ENGINES:
            raise ModelError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
        if precision not in PRECISIONS:
            raise ModelError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
        if precision == "int8" and engine == "torch":
            raise ModelError("int8 runs on ONNX Runtime; use engine 'onnx' (or 'auto'), or precision 'fp32'")
        if precision == "int8" and calibration is None and network is None:
            raise ModelError("int8 needs training images to calibrate on (calibration=...) or a quantised network")
        self.backbone = backbone
        self.layers = list(layers)
        # what one forward pass yields: one canonical order, so every extractor of the same set shares one export
        self.computed = sorted(set(self.layers) | set(also)) if also else self.layers
        self._wanted = [self.computed.index(layer) for layer in self.layers]
        self._net_layers = [layer for layer in self.computed if layer != STATS]
        self.cache_dir = cache_folder(cache_dir)
        self.precision = precision
        self.calibration = calibration_sample(calibration) if precision == "int8" and calibration else None
        self._network = None if network is None else Path(network)
        if precision == "int8":
            engine = "onnx"
        self.engine = ("torch" if cuda_available() else "onnx") if engine == "auto" else engine
        cuda = self.engine == "torch" and cuda_available()
        self.batch_size = batch_size or (128 if cuda else 8)
        self.workers = workers or (os.cpu_count() or 1)
        self.progress = progress
        self._runner = None

    def network(self) -> Path:
        """The ONNX file that computes the codes (exported, and quantised for int8, on first use; cached)."""
        if self._network is None:
            if self.cache_dir is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="headstart-onnx-")
            folder = Path(self._tmp.name) if self.cache_dir is None else self.cache_dir
            network = fp32_network(self.backbone, self._net_layers, folder)
            if self.precision == "int8":
                network = int8_network(network, self.calibration, self.backbone.preprocess, self.workers)
            self._network = network
        return self._network

    def precision_key(self) -> dict[str, str]:
        """What sets int8 codes apart in cache keys (nothing for fp32): the quantised network itself, since its
        calibration shapes the codes."""
        if self.precision == "fp32":
            return {}
        return {"precision": self.precision, "network": key_of({"sha256": file_sha256(self.network())})}

    def _stores(self) -> list[CodeStore] | None:
        if self.cache_dir is None:
            return None
        stores = []
        precision = self.precision_key()
        for layer in self.computed:
            if layer == STATS:  # the decoded image's figures: the same for every model
                stores.append(stats_store(self.cache_dir))
                continue
            network, own, preprocess = self._owner(layer)
            fields = {"model": network.name, "weights": network.digest, "layer": own, "preprocess": preprocess,
                      "v": 1, **precision}
            stores.append(CodeStore(self.cache_dir / "codes" / f"{network.name}-{key_of(fields)}",
                                    {**fields, "weights_source": network.weights}))
        return stores

    def _owner(self, layer: str) -> tuple[Backbone, str, dict]:
        """The network that computes ``layer``, its own name for it and the preprocessing its input had: a joint
        backbone's member is cached as that network's (at the joint input, resized in the graph to the member's own
        size where it differs: a member at its own input shares the codes of that network alone), else the
        backbone itself."""
        preprocess = self.backbone.preprocess.to_dict()
        if getattr(self.backbone, "members", None):
            i, own = self.backbone.locate(layer)
            member = self.backbone.members[i]
            size = tuple(member.preprocess.input_size)
            resized = size != tuple(preprocess["input_size"])
            return member, own, {**preprocess, "resized_to": list(size)} if resized else preprocess
        return self.backbone, layer, preprocess

    def release(self) -> None:
        """Let go of the network's runtime (ONNX Runtime keeps a memory arena of about 0.3 GB for Lite0); the next
        transform that needs the network opens it again (a fraction of a second)."""
        self._runner = None
        release_free_memory()

    def runner(self):
        """The inference runtime, created on first use."""
        if self._runner is None:
            if self.engine == "onnx":
                self._runner = OnnxRunner(self.network(), self._net_layers)
            else:
                from .codesnet import TorchRunner

                self._runner = TorchRunner(self.backbone, self._net_layers, "cuda" if cuda_available() else "cpu")
        return self._runner

    def transform(self, paths: list[Path]) -> Codes:
        """Codes (the tapped layers concatenated) for every usable file in ``paths``, in order."""
        ids = file_identities(paths)
        stores = self._stores()
        per_layer: list[dict[str, np.ndarray]] = [{} for _ in self.computed]
        if stores:
            present = [i for i in ids if i is not None]
            for j in self._wanted:  # the extra layers are written when the network runs, never read here
                per_layer[j] = stores[j].lookup(present)
        wanted = [per_layer[j] for j in self._wanted]
        net_wanted = [per_layer[j] for j in self._wanted if self.computed[j] != STATS]
        todo = [i for i, ident in enumerate(ids)
                if ident is not None and not all(ident in found for found in wanted)]
        decode_only = [i for i in todo if net_wanted and all(ids[i] in found for found in net_wanted)]
        run = sorted(set(todo) - set(decode_only))
        skipped = [(str(paths[i]), "file not found") for i, ident in enumerate(ids) if ident is None]
        bad: set[int] = set()
        for part, network in ((run, bool(self._net_layers)), (decode_only, False)):
            if part:
                self._extract([Path(paths[i]) for i in part], [ids[i] for i in part], per_layer, stores, skipped,
                              bad, part, network)
        kept = [i for i, ident in enumerate(ids) if ident is not None and i not in bad]
        if not kept:
            return Codes(np.zeros((0, 0), np.float32), np.zeros(0, np.int64), skipped, len(todo))
        widths = [int(np.size(found[ids[kept[0]]])) for found in wanted]
        codes = np.empty((len(kept), sum(widths)), np.float32)  # filled in place: no stacked copy per layer
        for found, start, width in zip(wanted, np.cumsum([0, *widths]), widths):
            for row, i in enumerate(kept):
                codes[row, start:start + width] = found[ids[i]]
        if run:
            release_free_memory()  # the decoding threads' freed buffers go back to the system
        return Codes(codes, np.asarray(kept, np.int64), skipped, len(run), widths)

    def transform_arrays(self, batch: np.ndarray) -> Codes:
        """Codes of images already decoded and preprocessed (uint8 N x H x W x 3, in memory: never cached)."""
        if STATS in self.layers:
            raise ModelError(f"{STATS} are measured while decoding files; in-memory images have none")
        runner, rows, widths = self.runner(), [], []
        for start in range(0, len(batch), self.batch_size):
            outputs = self._in_order(runner(np.ascontiguousarray(batch[start:start + self.batch_size])), None)
            rows.append(np.concatenate([outputs[j] for j in self._wanted], axis=1))
            widths = [outputs[j].shape[1] for j in self._wanted]
        return Codes(np.concatenate(rows).astype(np.float32, copy=False), np.arange(len(batch)), [], len(batch),
                     widths)

    def _in_order(self, network_outputs: list[np.ndarray], stats: np.ndarray | None) -> list[np.ndarray | None]:
        """One output per computed layer, in ``computed`` order (None where a part was not computed)."""
        outputs = iter(network_outputs)
        return [stats if layer == STATS else next(outputs, None) for layer in self.computed]

    def _extract(self, paths: list[Path], ids: list[str], per_layer: list[dict[str, np.ndarray]],
                 stores: list[CodeStore] | None, skipped: list[tuple[str, str]], bad: set[int],
                 original_index: list[int], network: bool = True) -> None:
        from tqdm.auto import tqdm

        runner = self.runner() if network else None
        with_stats = STATS in self.computed
        pending_ids: list[str] = []
        pending: list[list[np.ndarray]] = [[] for _ in self.computed]

        def flush() -> None:
            if stores and pending_ids:
                for store, rows in zip(stores, pending):
                    if rows:
                        store.add(pending_ids, np.concatenate(rows))
            pending_ids.clear()
            for rows in pending:
                rows.clear()

        with tqdm(total=len(paths), desc="CNN codes", unit="img", disable=not self.progress, leave=False) as bar:
            for index, batch, failed, *stats in decoded_batches(paths, self.backbone.preprocess, self.batch_size,
                                                                self.workers, with_stats):
                for i, reason in failed:
                    skipped.append((str(paths[i]), reason))
                    bad.add(original_index[i])
                if batch is not None:
                    outputs = self._in_order(runner(batch) if runner else [], stats[0] if stats else None)
                    batch_ids = [ids[i] for i in index]
                    for found, rows, out in zip(per_layer, pending, outputs):
                        if out is not None:
                            found.update(zip(batch_ids, out))
                            rows.append(out)
                    pending_ids.extend(batch_ids)
                    if len(pending_ids) >= SHARD_SIZE:
                        flush()
                bar.update(len(index) + len(failed))
        flush()


class _OneProcess:
    """What extraction needs of Lightning Fabric, for the common single-process CPU run (no launch, no import)."""

    global_rank, world_size, is_global_zero = 0, 1, True
    device = SimpleNamespace(type="cpu")  # as torch.device("cpu") reads, without importing torch

    def barrier(self) -> None:
        pass


def extract_distributed(backbone: Backbone, layers: list[str], paths: list[Path], cache_dir: str | Path | None,
                        devices: int | str = "auto", num_nodes: int = 1, accelerator: str = "auto",
                        strategy: str = "auto", batch_size: int | None = None, progress: bool = False,
                        precision: str = "fp32", calibration: Sequence[str | Path] | None = None) -> dict:
    """Fill one cache with the codes of ``paths``, split across processes, GPUs and nodes by Lightning Fabric.

    Every process takes every world_size-th file; shards are content-addressed and written atomically, so all
    processes write into the same cache safely. Returns counts for this process (rank 0 also checks the total).
    ``precision="int8"`` quantises the network first, calibrated on ``calibration`` (training images).
    """
    one = num_nodes == 1 and str(devices) in ("auto", "1") and accelerator in ("auto", "cpu") and strategy == "auto"
    if one and not cuda_available():
        fabric = _OneProcess()
    else:
        import lightning as L

        fabric = L.Fabric(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy)
        fabric.launch()
    cuda = fabric.device.type == "cuda" and precision == "fp32"
    threads = max(1, (os.cpu_count() or 1) // max(1, fabric.world_size // max(1, num_nodes)))

    def extractor(**kwargs) -> FeatureExtractor:
        return FeatureExtractor(backbone, layers, cache_dir, "torch" if cuda else "onnx", batch_size,
                                workers=threads, precision=precision, calibration=calibration, **kwargs)

    mine = extractor(progress=progress and fabric.is_global_zero)
    if mine.engine == "onnx":
        if fabric.is_global_zero:
            mine.network()  # export (and calibrate) once; the others load it after the barrier
        fabric.barrier()
        mine._runner = OnnxRunner(mine.network(), mine._net_layers, threads)
    else:
        from .codesnet import TorchRunner

        mine._runner = TorchRunner(backbone, layers, str(fabric.device))
    codes = mine.transform([Path(p) for p in paths[fabric.global_rank::fabric.world_size]])
    fabric.barrier()
    result = {"rank": fabric.global_rank, "world_size": fabric.world_size, "computed": codes.extracted,
              "skipped": len(codes.skipped), "is_global_zero": fabric.is_global_zero, "precision": precision}
    if fabric.is_global_zero:
        everything, merged = codes, 0  # one process: its codes are all of them
        if fabric.world_size > 1:
            everything = extractor(network=mine.network() if mine.engine == "onnx" else None).transform(paths)
            merged = everything.extracted
        result.update(total_images=len(everything.kept), computed_after_merge=merged,
                      skipped_total=[{"path": p, "reason": r} for p, r in everything.skipped])
    return result
