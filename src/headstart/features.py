"""CNN codes for lists of image files: decoding overlapped with inference, the fastest runtime, and the cache."""

from __future__ import annotations

import collections
import os
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .backbones import Backbone, CodesNet
from .cache import CodeStore, default_cache_dir, file_identity, key_of, write_atomic
from .defaults import ENGINES
from .errors import ModelError
from .images import ImageSkipped, Preprocess

SHARD_SIZE = 1024  # images per cache shard: a killed run loses at most this much work


@dataclass
class Codes:
    """CNN codes of the usable images; ``kept`` indexes the input paths; ``skipped`` holds (path, reason)."""

    codes: np.ndarray
    kept: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)
    extracted: int = 0  # images run through the network (the rest came from the cache)
    widths: list[int] = field(default_factory=list)  # columns of each layer in ``codes``, in order


def decoded_batches(paths: list[Path], preprocess: Preprocess, batch_size: int, workers: int
                    ) -> Iterator[tuple[list[int], np.ndarray | None, list[tuple[int, str]]]]:
    """Yield (indices, uint8 NHWC batch, [(index, reason)] skipped), decoding ``workers`` images at a time.

    Memory stays bounded: at most a few batches are decoded ahead of the consumer.
    """

    def load(i: int) -> tuple[int, np.ndarray | str]:
        try:
            return i, preprocess.load(paths[i])
        except ImageSkipped as exc:
            return i, str(exc)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="headstart-decode") as pool:
        pending: collections.deque = collections.deque()
        todo = iter(range(len(paths)))
        ahead = max(2 * batch_size, 4 * workers)
        for i in todo:
            pending.append(pool.submit(load, i))
            if len(pending) >= ahead:
                break
        index, arrays, skipped = [], [], []
        while pending:
            i, result = pending.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(load, nxt))
            if isinstance(result, str):
                skipped.append((i, result))
            else:
                index.append(i)
                arrays.append(result)
            if len(arrays) == batch_size or (not pending and (arrays or skipped)):
                yield index, (np.stack(arrays) if arrays else None), skipped
                index, arrays, skipped = [], [], []


class OnnxRunner:
    """The frozen CodesNet exported once to ONNX (cached on disk) and run by ONNX Runtime on the CPU."""

    def __init__(self, backbone: Backbone, layers: list[str], cache_dir: Path, threads: int | None = None):
        import onnxruntime as ort

        key = key_of({"model": backbone.name, "weights": backbone.digest, "layers": layers,
                      "preprocess": backbone.preprocess.to_dict(), "torch": torch.__version__, "v": 1})
        path = cache_dir / "onnx" / f"{backbone.name}-{key}.onnx"
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        for attempt in range(2):  # a damaged export is removed and built again once
            if not path.exists():
                write_atomic(path, export_onnx(CodesNet(backbone, layers), backbone.preprocess, len(layers)))
            try:
                self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                break
            except Exception:
                if attempt:
                    raise
                path.unlink(missing_ok=True)

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {"images": batch})


def export_onnx(net: torch.nn.Module, preprocess: Preprocess, n_outputs: int) -> bytes:
    """Serialise ``net`` (uint8 NHWC in, float codes out) to ONNX bytes with a dynamic batch dimension."""
    import io

    height, width = preprocess.input_size
    example = torch.zeros(2, height, width, 3, dtype=torch.uint8)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            net.eval(), (example,), dynamo=True, input_names=["images"],
            output_names=[f"codes_{i}" for i in range(n_outputs)],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},),
            opset_version=18, external_data=False, verbose=False,
        )
        program.save(buffer, external_data=False)
    return buffer.getvalue()


class TorchRunner:
    """CodesNet in eager PyTorch: channels-last and mixed precision on CUDA."""

    def __init__(self, backbone: Backbone, layers: list[str], device: str):
        self.device = torch.device(device)
        self.net = CodesNet(backbone, layers).to(self.device).eval()
        if self.device.type == "cuda":
            self.net = self.net.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        x = torch.from_numpy(batch)
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            outputs = self.net(x)
        return [o.float().cpu().numpy() for o in outputs]


class FeatureExtractor:
    """Compute (or fetch from the cache) CNN codes of ``layers`` for image files.

    ``engine``: "onnx" (ONNX Runtime, the CPU default), "torch" (the default with CUDA), or "auto".
    ``cache_dir``: None for the default location, False to disable caching.
    ``also``: more layers computed and cached whenever the network runs, so that one pass over the images serves
    several layer choices (auto's candidates); ``transform`` returns ``layers`` only.
    """

    def __init__(self, backbone: Backbone, layers: list[str], cache_dir: str | Path | None | bool = None,
                 engine: str = "auto", batch_size: int | None = None, workers: int | None = None,
                 progress: bool = False, also: list[str] | None = None):
        if engine not in ENGINES:
            raise ModelError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
        self.backbone = backbone
        self.layers = list(layers)
        # what one forward pass yields: one canonical order, so every extractor of the same set shares one export
        self.computed = sorted(set(self.layers) | set(also)) if also else self.layers
        self._wanted = [self.computed.index(layer) for layer in self.layers]
        self.cache_dir = None if cache_dir is False else Path(cache_dir or default_cache_dir()).expanduser()
        self.engine = ("torch" if torch.cuda.is_available() else "onnx") if engine == "auto" else engine
        cuda = self.engine == "torch" and torch.cuda.is_available()
        self.batch_size = batch_size or (128 if cuda else 8)
        self.workers = workers or (os.cpu_count() or 1)
        self.progress = progress
        self._runner = None

    def _stores(self) -> list[CodeStore] | None:
        if self.cache_dir is None:
            return None
        stores = []
        for layer in self.computed:
            fields = {"model": self.backbone.name, "weights": self.backbone.digest, "layer": layer,
                      "preprocess": self.backbone.preprocess.to_dict(), "v": 1}
            stores.append(CodeStore(self.cache_dir / "codes" / f"{self.backbone.name}-{key_of(fields)}",
                                    {**fields, "weights_source": self.backbone.weights}))
        return stores

    def runner(self):
        """The inference runtime, created on first use (the ONNX export is cached on disk)."""
        if self._runner is None:
            if self.engine == "onnx":
                if self.cache_dir is None:
                    import tempfile

                    self._tmp = tempfile.TemporaryDirectory(prefix="headstart-onnx-")
                    self._runner = OnnxRunner(self.backbone, self.computed, Path(self._tmp.name))
                else:
                    self._runner = OnnxRunner(self.backbone, self.computed, self.cache_dir)
            else:
                self._runner = TorchRunner(self.backbone, self.computed,
                                           "cuda" if torch.cuda.is_available() else "cpu")
        return self._runner

    def transform(self, paths: list[Path]) -> Codes:
        """Codes (the tapped layers concatenated) for every usable file in ``paths``, in order."""
        ids = [file_identity(Path(p)) for p in paths]
        stores = self._stores()
        per_layer: list[dict[str, np.ndarray]] = [{} for _ in self.computed]
        if stores:
            present = [i for i in ids if i is not None]
            for j in self._wanted:  # the extra layers are written when the network runs, never read here
                per_layer[j] = stores[j].lookup(present)
        wanted = [per_layer[j] for j in self._wanted]
        todo = [i for i, ident in enumerate(ids)
                if ident is not None and not all(ident in found for found in wanted)]
        skipped = [(str(paths[i]), "file not found") for i, ident in enumerate(ids) if ident is None]
        bad: set[int] = set()
        if todo:
            self._extract([Path(paths[i]) for i in todo], [ids[i] for i in todo], per_layer, stores, skipped, bad,
                          todo)
        kept = [i for i, ident in enumerate(ids) if ident is not None and i not in bad]
        if not kept:
            return Codes(np.zeros((0, 0), np.float32), np.zeros(0, np.int64), skipped, len(todo))
        blocks = [np.stack([found[ids[i]] for i in kept]) for found in wanted]
        return Codes(np.concatenate(blocks, axis=1).astype(np.float32, copy=False), np.asarray(kept, np.int64),
                     skipped, len(todo), [b.shape[1] for b in blocks])

    def transform_arrays(self, batch: np.ndarray) -> Codes:
        """Codes of images already decoded and preprocessed (uint8 N x H x W x 3, in memory: never cached)."""
        runner, rows, widths = self.runner(), [], []
        for start in range(0, len(batch), self.batch_size):
            outputs = runner(np.ascontiguousarray(batch[start:start + self.batch_size]))
            rows.append(np.concatenate([outputs[j] for j in self._wanted], axis=1))
            widths = [outputs[j].shape[1] for j in self._wanted]
        return Codes(np.concatenate(rows).astype(np.float32, copy=False), np.arange(len(batch)), [], len(batch),
                     widths)

    def _extract(self, paths: list[Path], ids: list[str], per_layer: list[dict[str, np.ndarray]],
                 stores: list[CodeStore] | None, skipped: list[tuple[str, str]], bad: set[int],
                 original_index: list[int]) -> None:
        from tqdm.auto import tqdm

        runner = self.runner()
        pending_ids: list[str] = []
        pending: list[list[np.ndarray]] = [[] for _ in self.computed]

        def flush() -> None:
            if stores and pending_ids:
                for store, rows in zip(stores, pending):
                    store.add(pending_ids, np.concatenate(rows))
            pending_ids.clear()
            for rows in pending:
                rows.clear()

        with tqdm(total=len(paths), desc="CNN codes", unit="img", disable=not self.progress, leave=False) as bar:
            for index, batch, failed in decoded_batches(paths, self.backbone.preprocess, self.batch_size,
                                                        self.workers):
                for i, reason in failed:
                    skipped.append((str(paths[i]), reason))
                    bad.add(original_index[i])
                if batch is not None:
                    outputs = runner(batch)
                    batch_ids = [ids[i] for i in index]
                    for found, rows, out in zip(per_layer, pending, outputs):
                        found.update(zip(batch_ids, out))
                        rows.append(out)
                    pending_ids.extend(batch_ids)
                    if len(pending_ids) >= SHARD_SIZE:
                        flush()
                bar.update(len(index) + len(failed))
        flush()


def extract_distributed(backbone: Backbone, layers: list[str], paths: list[Path], cache_dir: str | Path | None,
                        devices: int | str = "auto", num_nodes: int = 1, accelerator: str = "auto",
                        strategy: str = "auto", batch_size: int | None = None, progress: bool = False) -> dict:
    """Fill one cache with the codes of ``paths``, split across processes, GPUs and nodes by Lightning Fabric.

    Every process takes every world_size-th file; shards are content-addressed and written atomically, so all
    processes write into the same cache safely. Returns counts for this process (rank 0 also checks the total).
    """
    import lightning as L

    fabric = L.Fabric(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy)
    fabric.launch()
    cuda = fabric.device.type == "cuda"
    threads = max(1, (os.cpu_count() or 1) // max(1, fabric.world_size // max(1, num_nodes)))
    extractor = FeatureExtractor(backbone, layers, cache_dir, "torch" if cuda else "onnx", batch_size,
                                 workers=threads, progress=progress and fabric.is_global_zero)
    if extractor.engine == "onnx":
        if fabric.is_global_zero:
            extractor.runner()  # export once; the others load it after the barrier
        fabric.barrier()
        extractor._runner = OnnxRunner(backbone, layers, extractor.cache_dir, threads)
    elif cuda:
        extractor._runner = TorchRunner(backbone, layers, str(fabric.device))
    mine = extractor.transform([Path(p) for p in paths[fabric.global_rank::fabric.world_size]])
    fabric.barrier()
    result = {"rank": fabric.global_rank, "world_size": fabric.world_size, "computed": mine.extracted,
              "skipped": len(mine.skipped), "is_global_zero": fabric.is_global_zero}
    if fabric.is_global_zero:
        everything = FeatureExtractor(backbone, layers, cache_dir, extractor.engine).transform(paths)
        result.update(total_images=len(everything.kept), computed_after_merge=everything.extracted,
                      skipped_total=[{"path": p, "reason": r} for p, r in everything.skipped])
    return result
