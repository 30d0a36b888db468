"""The saved model: a folder of safetensors weights and a JSON config, written atomically, loaded exactly."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from .disk import apply_umask, cannot_write, is_write_fault, reason_of, space_for
from .errors import ArtifactError

FORMAT = "headstart-model/1"

CONFIG = "config.json"
BACKBONE = "backbone.safetensors"
HEAD = "head.safetensors"
FAMILIARITY = "familiarity.safetensors"  # the training images' normalised penultimate codes (float16)
INT8_NETWORK = "codes-int8.onnx"  # with precision int8: the quantised network the head was trained on
ONNX = "model.onnx"  # the whole classifier as `headstart export` writes it: predict and serve run it torch-free


def versions() -> dict[str, str]:
    """Versions of the libraries that shape a model's numbers."""
    found = {"python": platform.python_version()}
    for package in ("headstart", "torch", "timm", "scikit-learn", "numpy", "pillow", "onnxruntime"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    return found


def check_replaceable(target: Path, overwrite: bool) -> None:
    """A one-line error unless ``target`` is free, or ``overwrite`` is set and it is provably ours to replace: an
    empty folder or a saved headstart model. A user's own files are never deleted."""
    if not target.exists():
        return
    if not overwrite:
        raise ArtifactError(f"{str(target)!r} already exists; pass --overwrite or choose another --out")
    if not target.is_dir() or (any(target.iterdir()) and not _is_model(target)):
        raise ArtifactError(f"{str(target)!r} is not a headstart model folder, so --overwrite will not replace it; "
                            "choose another --out")


def check_writable(target: Path, what: str = "--out") -> None:
    """A one-line error unless ``target`` can be created: its nearest existing ancestor must be a folder this user can
    write into (tried by creating and removing an empty folder there, which also catches read-only and virtual file
    systems). Called before any work, so that a long run never fails at its last step."""
    target = Path(target).expanduser().absolute()
    ancestor = target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ArtifactError(f"cannot write {what} {str(target)!r}: {str(ancestor)!r} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(dir=ancestor, prefix=".headstart-write-check-"))
    except OSError as exc:
        raise ArtifactError(f"cannot write {what} {str(target)!r}: {str(ancestor)!r} is not writable "
                            f"({exc.strerror or exc}); choose another {what}") from None


def _is_model(path: Path) -> bool:
    try:
        read_config(path)
        return True
    except ArtifactError:
        return False


def replace_dir(staged: Path, target: Path, overwrite: bool) -> None:
    """Move the finished folder ``staged`` to ``target``; an existing target is replaced only with ``overwrite``,
    and only when it is an empty folder or a headstart model."""
    if target.exists():
        try:
            check_replaceable(target, overwrite)
        except ArtifactError:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(staged, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, target)


def save(clf: Any, path: Path, overwrite: bool = False, extra: dict[str, Any] | None = None,
         files: dict[str, Path] | None = None) -> Path:
    """Write ``clf`` (a fitted TransferClassifier) to the folder ``path``; ``files`` are copied in (name: source)."""
    path = Path(path).expanduser()
    check_replaceable(path, overwrite)
    exported, onnx_entry = _exported(clf)
    needed = model_bytes(clf) + len(exported)
    space_for(path.parent, needed, "the model folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.partial-"))
    except OSError as exc:
        raise cannot_write(path, reason_of(exc), needed) from None
    try:
        _write_tensors(clf, staged)
        if exported:
            (staged / ONNX).write_bytes(exported)
        config = {**model_config(clf), "onnx": onnx_entry, **(extra or {})}
        (staged / CONFIG).write_text(json.dumps(config, indent=2, default=_json_default))
        for name, source in (files or {}).items():
            if Path(source).exists():
                (staged / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, staged / name)
        apply_umask(staged)  # safetensors writes 0600 files: a model saved by one account must serve another
        replace_dir(staged, path, overwrite)
        clf.config_, clf.path_ = config, path
    except BaseException as exc:
        shutil.rmtree(staged, ignore_errors=True)
        if is_write_fault(exc) and not isinstance(exc, ArtifactError):
            raise cannot_write(path, reason_of(exc), needed, "the previous model, if any, is unchanged; free some "
                                                             "space or choose another --out") from None
        raise
    return path


def _write_tensors(clf: Any, folder: Path) -> None:
    """The network's weights, the head, the familiarity bank and the int8 network, into ``folder``."""
    import torch
    from safetensors.torch import save_file

    backbone = clf.backbone_
    cached = None if backbone.built or backbone.card is None else backbone.card.state_file()
    if getattr(backbone, "members", None):  # several networks: each under its members.i. prefix
        save_file(backbone.state_tensors(), str(folder / BACKBONE))
    elif cached is not None:  # the network was never built: its weights are copied from its card
        shutil.copyfile(cached, folder / BACKBONE)
    else:
        save_file({k: v.detach().contiguous() for k, v in backbone.model.state_dict().items()}, str(folder / BACKBONE))
    save_file({"weight": torch.from_numpy(np.ascontiguousarray(clf.head_.weight)),
               "bias": torch.from_numpy(np.ascontiguousarray(clf.head_.bias))}, str(folder / HEAD))
    network = clf.quantized_network()
    if network is not None:
        shutil.copyfile(network, folder / INT8_NETWORK)
    familiarity = getattr(clf, "familiarity_", None)
    if familiarity is not None:
        save_file({"bank": torch.from_numpy(np.ascontiguousarray(familiarity.bank))}, str(folder / FAMILIARITY))


def _exported(clf: Any) -> tuple[bytes, dict[str, Any]]:
    """The whole classifier as one ONNX file (what ``headstart export`` writes, at the model's precision) and
    config.json's record of it; a network that ONNX cannot express gets no file, and the reason is recorded."""
    import hashlib

    from .deploy.export import onnx_bytes

    try:
        data = onnx_bytes(clf, clf.precision_)
    except Exception as exc:  # the folder is still complete: predict and serve then load torch
        if is_write_fault(exc):
            raise
        return b"", {"file": None, "reason": f"{type(exc).__name__}: {str(exc)[:200]}"}
    return data, {"file": ONNX, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def deployed_file(path: str | os.PathLike) -> Path | None:
    """The model folder's own ONNX file when it is there and is the one saved with this config (same size and
    SHA-256), else None: predict, evaluate and serve then run it without importing torch."""
    import hashlib

    path = Path(path).expanduser()
    entry = read_config(path).get("onnx") or {}
    onnx = path / ONNX
    if not entry.get("file") or not onnx.is_file() or onnx.stat().st_size != entry.get("bytes"):
        return None
    digest = hashlib.sha256()
    with open(onnx, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return onnx if digest.hexdigest() == entry.get("sha256") else None


def model_config(clf: Any) -> dict[str, Any]:
    """What ``config.json`` says of a fitted TransferClassifier: everything :func:`read_model` checks and rebuilds."""
    backbone, familiarity = clf.backbone_, getattr(clf, "familiarity_", None)
    return {
        "format": FORMAT,
        "model": backbone.name,
        "weights": backbone.weights,
        "weights_digest": backbone.digest,
        "strategy": clf.strategy_,
        "layers": clf.layers_,
        "precision": clf.precision_,
        "calibration": [str(p) for p in getattr(clf, "_calibration", None) or []],  # for a later int8 export
        "preprocess": backbone.preprocess.to_dict(),
        "class_names": clf.classes_,
        "multilabel": clf.multilabel_,  # a set of labels per image: sigmoid outputs, thresholds in "classifier"
        "classifier": clf.head_.info,
        "familiarity": familiarity.info() if familiarity is not None else None,
        "params": _json_params(clf.get_params()),  # every constructor parameter, restored by load
        "versions": versions(),
    }


def model_bytes(clf: Any) -> int:
    """About how large ``clf``'s model folder will be: the network's weights, the head, the familiarity bank and
    the int8 network, plus a margin for the config."""
    backbone = clf.backbone_
    if getattr(backbone, "members", None):
        weights = 4 * backbone.parameters
    else:
        weights = (4 * backbone.card.parameters if not backbone.built else
                   sum(t.numel() * t.element_size() for t in backbone.model.state_dict().values()))
    head = clf.head_.weight.nbytes + clf.head_.bias.nbytes if hasattr(clf, "head_") else 0
    familiarity = getattr(clf, "familiarity_", None)
    bank = familiarity.bank.nbytes if familiarity is not None else 0
    network = getattr(clf, "_network", None)
    int8 = Path(network).stat().st_size if network is not None and Path(network).exists() else 0
    return int(weights + head + bank + int8 + 1_000_000)


def estimated_model_bytes(model: str, cache_dir: Path | None = None) -> int:
    """Before any work: a model folder for the network ``model`` (its parameters in float32, from a card in
    ``cache_dir`` or else from timm without loading weights), with the largest familiarity bank, and a margin."""
    from .heads.familiarity import BANK_MAX

    if "," in model:  # several networks: each one's weights, and a bank for the last
        return sum(estimated_model_bytes(part.strip(), cache_dir) for part in model.split(","))
    card = next(iter(sorted((cache_dir / "backbones").glob(f"{model}-*/card.json"))), None) if cache_dir else None
    try:
        about = json.loads(card.read_text()) if card else None
        params, features = int(about["parameters"]), int(about["features"])
    except (OSError, ValueError, KeyError, TypeError):
        import timm

        net = timm.create_model(model, pretrained=False, num_classes=0)
        params = sum(p.numel() for p in net.parameters()) + sum(b.numel() for b in net.buffers())
        features = net.num_features
    # the weights twice (safetensors and model.onnx), the bank in float16 and (in the ONNX file) float32
    return int(8 * params + 6 * BANK_MAX * features + 1_000_000)


def _json_params(params: dict[str, Any]) -> dict[str, Any]:
    from dataclasses import asdict, is_dataclass

    return {k: asdict(v) if is_dataclass(v) else (str(v) if isinstance(v, Path) else v) for k, v in params.items()}


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The config of a saved model folder, with a one-line error when it is not one."""
    path = Path(path).expanduser()
    if not (path / CONFIG).is_file():
        raise ArtifactError(f"{str(path)!r} is not a saved headstart model (no {CONFIG}); give the folder `fit` wrote")
    try:
        config = json.loads((path / CONFIG).read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{str(path / CONFIG)!r} is damaged ({exc}); fit the model again") from None
    if config.get("format") != FORMAT:
        raise ArtifactError(f"{str(path)!r} has format {config.get('format')!r}; this headstart reads {FORMAT}")
    return config


def _head(tensors: dict[str, Any], info: dict[str, Any], path: Path) -> Any:
    """The saved linear head: softmax, or (multi-label) sigmoid with a threshold per label."""
    from .heads.linear import LinearHead
    from .heads.multilabel import SigmoidHead

    weight, bias = tensors["weight"].numpy(), tensors["bias"].numpy()
    if not info.get("multilabel"):
        return LinearHead(weight, bias, info)
    thresholds = np.asarray(info.get("thresholds", []), np.float32)
    if len(thresholds) != len(weight):
        raise ArtifactError(f"{str(path / CONFIG)!r} has {len(thresholds)} thresholds for {len(weight)} labels; the "
                            "folder was edited or damaged, fit again")
    return SigmoidHead(weight, bias, info, thresholds, bool(info.get("fill_empty")))


@dataclass
class SavedModel:
    """A model folder, read and checked: what :func:`headstart.load` rebuilds the estimator from."""

    path: Path
    config: dict[str, Any]
    backbone: Any  # Backbone
    head: Any  # LinearHead
    familiarity: Any = None  # Familiarity, when the model has one
    int8_network: Path | None = None  # with precision int8: the quantised network the head was trained on


def read_model(path: str | os.PathLike) -> SavedModel:
    """The weights, head, familiarity and config of the model folder ``path``, each checked against the others."""
    from safetensors.torch import load_file

    from .codes.create import restore_backbone
    from .data.decode import Preprocess

    path = Path(path).expanduser()
    config = read_config(path)
    try:
        state = load_file(str(path / BACKBONE))
        head = load_file(str(path / HEAD))
    except Exception as exc:
        raise ArtifactError(f"weights in {str(path)!r} are missing or damaged ({exc}); fit the model again") from None
    backbone = restore_backbone(config["model"], state, Preprocess.from_dict(config["preprocess"]), config["weights"])
    if backbone.digest != config["weights_digest"]:
        raise ArtifactError(f"weights in {str(path)!r} do not match their recorded digest; fit the model again")
    names = config.get("class_names")
    if not isinstance(names, list) or len(names) != head["weight"].shape[0]:
        raise ArtifactError(f"{str(path / CONFIG)!r} names {len(names) if isinstance(names, list) else 'no'} classes "
                            f"but the head has {head['weight'].shape[0]}; the folder was edited or damaged, fit again")
    saved = SavedModel(path, config, backbone, _head(head, config.get("classifier", {}), path))
    if config.get("precision") == "int8":
        if not (path / INT8_NETWORK).is_file():
            raise ArtifactError(f"{str(path)!r} is an int8 model without its {INT8_NETWORK}; fit the model again")
        saved.int8_network = path / INT8_NETWORK
    if config.get("familiarity") and (path / FAMILIARITY).is_file():
        from .heads.familiarity import Familiarity

        about = config["familiarity"]
        saved.familiarity = Familiarity(load_file(str(path / FAMILIARITY))["bank"].numpy(),
                                        float(about["threshold"]), int(about["k"]), float(about["flag_rate"]))
    return saved
