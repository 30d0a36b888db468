"""CNN codes for lists of image files: decoding overlapped with inference, the fastest runtime, and the cache."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .backbones import Backbone, CodesNet
from .cache import CodeStore, cache_folder, file_identity, file_sha256, key_of, write_atomic, write_cache
from .defaults import ENGINES, PRECISIONS
from .errors import ModelError
from .images import Preprocess, decoded_batches
from .imagestats import STATS, STATS_VERSION
from .quantize import calibration_sample
from .runtime import onnx_session

SHARD_SIZE = 1024  # images per cache shard: a killed run loses at most this much work


@dataclass
class Codes:
    """CNN codes of the usable images; ``kept`` indexes the input paths; ``skipped`` holds (path, reason)."""

    codes: np.ndarray
    kept: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)
    extracted: int = 0  # images run through the network (the rest came from the cache)
    widths: list[int] = field(default_factory=list)  # columns of each layer in ``codes``, in order


class OnnxRunner:
    """An exported CodesNet (fp32 or int8) run by ONNX Runtime on the CPU; outputs in the order of ``layers``."""

    def __init__(self, path: Path, layers: list[str], threads: int | None = None):
        self.path = path
        self.session = onnx_session(path, threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        computed = json.loads(meta["layers"]) if "layers" in meta else layers
        missing = [layer for layer in layers if layer not in computed]
        if missing:
            raise ModelError(f"{str(path)!r} computes no {', '.join(missing)}; it has {', '.join(computed)}")
        self.outputs = [f"codes_{computed.index(layer)}" for layer in layers]

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.outputs, {"images": batch})


#: ONNX files (path, size, modification time) that ONNX Runtime has opened in this process: not checked again
_OPENED: set[str] = set()


#: Where networks go when the cache cannot hold them (full, read-only): removed when the process ends.
_SPILL: list[tempfile.TemporaryDirectory] = []


def _write_network(path: Path, data: bytes) -> Path:
    """``data`` written to ``path``, or, when the cache refuses it, to a folder of this process's own (said once)."""
    if write_cache(path, data):
        return path
    if not _SPILL:
        _SPILL.append(tempfile.TemporaryDirectory(prefix="headstart-networks-"))
    spilled = Path(_SPILL[0].name) / path.name
    write_atomic(spilled, data)  # a second refusal is the run's end: one line, naming the folder and sizes
    return spilled


def _cached(path: Path, build: Callable[[], bytes]) -> Path:
    """``path``, built first when missing, or when ONNX Runtime cannot open it (a damaged file, rebuilt once)."""
    for attempt in range(2):
        spilled = Path(_SPILL[0].name) / path.name if _SPILL else None
        if not path.exists() and spilled is not None and spilled.exists():
            path = spilled
        if not path.exists():
            path = _write_network(path, build())
        identity = file_identity(path)
        if identity in _OPENED:
            return path
        try:
            onnx_session(path, 1)
        except Exception:
            if attempt:
                raise
            path.unlink(missing_ok=True)
            continue
        _OPENED.add(identity)
        return path
    return path


def fp32_network(backbone: Backbone, layers: list[str], cache_dir: Path) -> Path:
    """The ONNX export of CodesNet(backbone, layers), cached on disk by everything that shapes it."""
    key = key_of({"model": backbone.name, "weights": backbone.digest, "layers": layers,
                  "preprocess": backbone.preprocess.to_dict(), "torch": torch.__version__, "v": 2})
    return _cached(cache_dir / "onnx" / f"{backbone.name}-{key}.onnx",
                   lambda: export_onnx(CodesNet(backbone, layers), backbone.preprocess, len(layers),
                                       {"layers": json.dumps(layers)}))


def int8_network(fp32: Path, calibration: list[Path], preprocess: Preprocess, workers: int) -> Path:
    """``fp32`` quantised to int8 with ranges from the ``calibration`` images, cached beside it."""
    import onnxruntime

    from .quantize import RECIPE, quantize

    key = key_of({"network": fp32.stem, "calibration": [file_identity(p) for p in calibration], "recipe": RECIPE,
                  "onnxruntime": onnxruntime.__version__})

    def build() -> bytes:
        batches = [batch for _, batch, _ in decoded_batches(calibration, preprocess, 16, workers)
                   if batch is not None]
        return quantize(fp32, batches)

    return _cached(fp32.with_name(f"{fp32.stem}-int8-{key}.onnx"), build)


def export_onnx(net: torch.nn.Module, preprocess: Preprocess | None, n_outputs: int,
                metadata: dict[str, str] | None = None, examples: tuple[torch.Tensor, ...] | None = None,
                input_names: list[str] | None = None, output_names: list[str] | None = None) -> bytes:
    """Serialise ``net`` to ONNX bytes with a dynamic batch dimension on every input tensor.

    By default the input is "images" (uint8 NHWC at ``preprocess``'s size) and the outputs "codes_0".. .
    """
    from torch.utils._pytree import tree_map

    if examples is None:
        height, width = preprocess.input_size
        examples = (torch.zeros(2, height, width, 3, dtype=torch.uint8),)
    batch = torch.export.Dim("batch", min=1, max=65536)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            net.eval(), examples, dynamo=True, input_names=input_names or ["images"],
            output_names=output_names or [f"codes_{i}" for i in range(n_outputs)],
            dynamic_shapes=tree_map(lambda _: {0: batch}, examples), opset_version=18, external_data=False,
            verbose=False,
        )
        model = program.model_proto
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    return model.SerializeToString()


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


def stats_store(cache_dir: Path) -> CodeStore:
    """Where each image's figures (:data:`headstart.imagestats.STATS`) are cached, for every model alike. A JPEG
    twice the model's input or more is decoded at reduced size, so its figures (its pixel digest too) can differ a
    little with the model that measured them; duplicates across such a difference are still near duplicates."""
    fields = {"layer": STATS, "v": STATS_VERSION}
    return CodeStore(cache_dir / "codes" / f"{STATS}-{key_of(fields)}", fields)


class StatsWriter:
    """Figures measured elsewhere (the fine-tuning image check) added to the cache in shards of SHARD_SIZE."""

    def __init__(self, cache_dir: str | Path | None | bool, paths: list[Path]):
        folder = cache_folder(cache_dir)
        self.store = stats_store(folder) if folder is not None else None
        self.paths, self.ids, self.rows = paths, [], []

    def __call__(self, index: list[int], values: np.ndarray) -> None:
        if self.store is None:
            return
        for i, row in zip(index, values):
            identity = file_identity(self.paths[i])
            if identity is not None:
                self.ids.append(identity)
                self.rows.append(row)
        if len(self.ids) >= SHARD_SIZE:
            self.flush()

    def flush(self) -> None:
        if self.store is not None and self.ids:
            self.store.add(self.ids, np.stack(self.rows))
        self.ids, self.rows = [], []


class FeatureExtractor:
    """Compute (or fetch from the cache) CNN codes of ``layers`` for image files.

    ``engine``: "onnx" (ONNX Runtime, the CPU default), "torch" (the default with CUDA), or "auto".
    ``cache_dir``: None for the default location, False to disable caching.
    ``also``: more layers computed and cached whenever the network runs, so that one pass over the images serves
    several layer choices (auto's candidates); ``transform`` returns ``layers`` only.
    ``precision``: "fp32", or "int8" (ONNX Runtime only): the network quantised with ranges measured on
    ``calibration`` (training images; a reproducible sample of them is used), or the already quantised
    ``network`` (an ONNX file, as a saved model holds). int8 codes are cached apart from fp32 ones.
    The pseudo-layer :data:`headstart.imagestats.STATS` (in ``layers`` or ``also``) is each image's figures, measured
    while it is decoded and cached for every model alike; asked for alone, or when only it is missing, images are
    decoded without running the network.
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
        self.engine = ("torch" if torch.cuda.is_available() else "onnx") if engine == "auto" else engine
        cuda = self.engine == "torch" and torch.cuda.is_available()
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
            fields = {"model": self.backbone.name, "weights": self.backbone.digest, "layer": layer,
                      "preprocess": self.backbone.preprocess.to_dict(), "v": 1, **precision}
            stores.append(CodeStore(self.cache_dir / "codes" / f"{self.backbone.name}-{key_of(fields)}",
                                    {**fields, "weights_source": self.backbone.weights}))
        return stores

    def runner(self):
        """The inference runtime, created on first use."""
        if self._runner is None:
            if self.engine == "onnx":
                self._runner = OnnxRunner(self.network(), self._net_layers)
            else:
                self._runner = TorchRunner(self.backbone, self._net_layers,
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
        blocks = [np.stack([found[ids[i]] for i in kept]) for found in wanted]
        return Codes(np.concatenate(blocks, axis=1).astype(np.float32, copy=False), np.asarray(kept, np.int64),
                     skipped, len(run), [b.shape[1] for b in blocks])

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
    device = torch.device("cpu")

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
    if one and not torch.cuda.is_available():
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
