"""A Keras-style summary: blocks with output shapes and parameters, trainable vs non-trainable totals."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..codes.backbones import Backbone, block_container, block_names


def _rows_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's top-level modules, its blocks one by one."""
    container, modules, rows = block_container(model), dict(model.named_modules()), []
    for name, child in model.named_children():
        if name == container:
            rows.extend((block, modules[block]) for block in block_names(model))
        elif not isinstance(child, nn.Identity):
            rows.append((name, child))
    return rows


def summarize(backbone: Backbone, strategy: str = "feature-extractor", codes_dim: int | None = None,
              n_classes: int | None = None, trainable: list[str] | None = None) -> dict[str, Any]:
    """Rows (name, type, output shape, parameters, trainable) for the backbone and the new head.

    ``trainable``: module-name prefixes trained by fine-tuning (None with the feature extractor: all frozen).
    """
    members = getattr(backbone, "members", None) or [backbone]  # a joint backbone: each network's rows
    rows_modules = [(f"{m.name}:{name}" if len(members) > 1 else name, module)
                    for m in members for name, module in _rows_modules(m.model)]
    shapes: dict[str, list[int]] = {}
    handles = []
    for name, module in rows_modules:
        def hook(mod: nn.Module, args: object, output: Any, name: str = name) -> None:
            if isinstance(output, torch.Tensor):
                shapes[name] = [None, *output.shape[1:]]
        handles.append(module.register_forward_hook(hook))
    height, width = backbone.preprocess.input_size
    with torch.inference_mode():
        pooled = torch.cat([m.model(torch.zeros(1, 3, *m.preprocess.input_size)) for m in members], 1)
    for handle in handles:
        handle.remove()
    prefixes = trainable or []
    rows = []
    for name, module in rows_modules:
        params = sum(p.numel() for p in module.parameters())
        trained = any(name == p or name.startswith(p + ".") for p in prefixes)
        rows.append({"name": name, "type": type(module).__name__, "output_shape": shapes.get(name),
                     "params": params, "trainable": params if trained else 0})
    codes_dim = codes_dim or int(pooled.shape[1])
    if n_classes:
        params = codes_dim * n_classes + n_classes
        rows.append({"name": "head", "type": f"Linear({codes_dim}->{n_classes}) on CNN codes",
                     "output_shape": [None, n_classes], "params": params, "trainable": params})
    total = sum(r["params"] for r in rows)
    trainable = sum(r["trainable"] for r in rows)
    return {"model": backbone.name, "weights": backbone.weights, "strategy": strategy,
            "input_size": [3, height, width], "rows": rows, "total_params": total,
            "trainable_params": trainable, "non_trainable_params": total - trainable,
            "layers": backbone.layers()}


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a fixed-width table, like Keras's ``model.summary()``."""
    lines = [f"Model: {summary['model']} ({summary['weights']}), strategy {summary['strategy']}, "
             f"input {'x'.join(map(str, summary['input_size']))}"]
    header = f"{'Layer (type)':<44}{'Output shape':<24}{'Param #':>12}{'Trainable':>12}"
    rule = "=" * len(header)
    lines += [rule, header, rule]
    for row in summary["rows"]:
        shape = "(" + ", ".join("None" if d is None else str(d) for d in row["output_shape"] or []) + ")"
        label = f"{row['name']} ({row['type']})"
        lines.append(f"{label[:43]:<44}{shape:<24}{row['params']:>12,}{row['trainable']:>12,}")
    lines += [rule,
              f"Total params: {summary['total_params']:,}",
              f"Trainable params: {summary['trainable_params']:,}",
              f"Non-trainable params: {summary['non_trainable_params']:,}",
              "",
              "Layers for --layer (join several with +): " + ", ".join(summary["layers"])]
    return "\n".join(lines)
