"""Commands on data before a model exists: advise, extract, models."""

from __future__ import annotations

import argparse

from ..errors import HeadstartError
from . import checks
from .fit import check_numbers, find_data, label_arguments, precision_option
from .output import print_json


def cmd_advise(args: argparse.Namespace) -> None:
    """``headstart advise``: measure the data and recommend a strategy, as ``fit`` would decide."""
    from ..data.folders import existing_dir

    existing_dir(args.data, "data folder")
    checks.label_options(args)
    if not args.labels:
        checks.val_options(args.data, args.val, args.val_fraction)
    checks.weights(args.weights)
    checks.precision(args.precision, args.engine)
    train = find_data(args).train
    from ..codes.joint import named_networks

    models = named_networks(args.model, not args.weights)
    if len(models) > 1 and train.multilabel:  # as `fit` does: the networks ranked, the chosen one advised
        _advise_ranked(args, train, models)
        return
    from ..auto.advice import advise, format_advice
    from ..codes.create import create_backbone
    from ..disk import cache_folder

    backbone = create_backbone(",".join(models), args.weights, cache_dir=cache_folder(args.cache_dir))
    advice = advise(backbone, train, args.cache_dir, args.seed, progress=not args.quiet and not args.json,
                    engine=args.engine, precision=args.precision)
    joint = advice.choice.get("joint", {})
    result = {"model": backbone.name, **advice.to_dict(), "best_layer_score": advice.layers.get(advice.layer, 0.0)}
    if joint:  # several networks: each one's layer and probe, and their average, on the same folds
        scores = joint.get("scores", {})
        result["network"] = joint
        result["ranking"] = sorted(scores, key=lambda name: (name != joint["chosen"], scores[name]["cv_log_loss"]))
    if args.json:
        print_json(result)
        return
    print(format_advice(advice, backbone.name))
    if joint:
        print(f"\nnetworks ({joint['rule']}):")
        for name in result.get("ranking", []):
            row = scores[name]
            noise = (f", {row['log_loss_above_joint']:+.4f} +- {row['standard_error']:.4f} against the average"
                     if "standard_error" in row else "")
            print(f"  {'averaged' if name == 'joint' else name:<32}log loss {row['cv_log_loss']:.4f}, accuracy "
                  f"{row['cv_accuracy']:.4f}{noise}" + ("  <- chosen" if name == joint["chosen"] else ""))


def cmd_extract(args: argparse.Namespace) -> None:
    """``headstart extract``: CNN codes of a folder into the cache (or a file)."""
    import time

    from ..data.folders import existing_dir
    from ..data.splits import find_splits
    from ..training.options import check_distributed, parse_layers

    existing_dir(args.data, "data folder")
    checks.weights(args.weights)
    check_numbers(args)  # --image-size, --batch-size, --num-nodes, --devices
    devices = checks.devices(args.devices)
    checks.precision(args.precision, args.engine)
    check_distributed(args.distributed)
    layers = parse_layers(args.layer)
    splits = find_splits(args.data, val_fraction=0.0)
    from ..codes.create import create_backbone
    from ..codes.extract import extract_distributed
    from ..disk import cache_folder

    paths = list(splits.train.paths) + (list(splits.val.paths) if splits.val else [])
    backbone = create_backbone(args.model, args.weights, image_size=args.image_size,
                               cache_dir=cache_folder(args.cache_dir))
    started = time.perf_counter()
    result = extract_distributed(backbone, layers, paths, args.cache_dir, devices, args.num_nodes,
                                 args.accelerator, args.distributed, args.batch_size, progress=not args.quiet,
                                 precision=args.precision, calibration=splits.train.paths)
    if not result["is_global_zero"]:
        return
    result["seconds"] = round(time.perf_counter() - started, 3)
    if args.json:
        print_json(result)
    else:
        print(f"{result['total_images']} images' codes cached by {result['world_size']} process(es) in "
              f"{result['seconds']:.1f} s; {len(result['skipped_total'])} skipped")


def cmd_datasets(args: argparse.Namespace) -> None:
    """``headstart datasets [NAME]``: the embedded collections, or one's folder (for ``fit "$(...)"``)."""
    from ..datasets import DATASETS, path

    if args.name:
        print(path(args.name))
        return
    rows = [{"name": name, "what": what, "path": str(path(name))} for name, what in DATASETS.items()]
    if args.json:
        print_json(rows)
        return
    for row in rows:
        print(f"{row['name']:<12}{row['what']}\n{'':<12}{row['path']}")


def cmd_models(args: argparse.Namespace) -> None:
    """``headstart models``: known models and where their weights are."""
    from ..codes.zoo import list_models

    rows = list_models(args.pattern)
    if not rows:
        wider = f"*{args.pattern.strip('*')}*"
        raise HeadstartError(f"no model matches {args.pattern!r}; try a wider pattern such as {wider!r}, or "
                             "`headstart models` for the list")
    if args.json:
        print_json(rows)
        return
    from ..defaults import AUTO_MODELS

    for row in rows:
        print(f"{row['name']:<48}{row['weights']}" + ("; auto compares it by default"
                                                       if row["name"] in AUTO_MODELS else ""))
    if not args.pattern:
        print("\n(pass a pattern such as 'resnet*' to list timm's pretrained models)")


def _advise_ranked(args: argparse.Namespace, train, names: list[str]) -> None:
    """``advise`` of multi-label data with several networks: ranked by `fit`'s rule, the chosen one advised."""
    from ..auto.advice import advise, format_advice
    from ..auto.networks import builders, network_line, rank_networks
    from ..disk import cache_folder

    progress = not args.quiet and not args.json
    backbone, network = rank_networks(builders(names, cache_dir=cache_folder(args.cache_dir)), train,
                                      args.cache_dir, args.seed, args.engine, precision=args.precision,
                                      progress=progress)
    advice = advise(backbone, train, args.cache_dir, args.seed, progress=progress, engine=args.engine,
                    precision=args.precision)
    advice.options = {"model": backbone.name, **advice.options}  # the recommendation names the chosen network
    if args.json:
        print_json({"model": backbone.name, **advice.to_dict(),
                    "best_layer_score": advice.layers.get(advice.layer, 0.0), "network": network})
        return
    print(format_advice(advice, backbone.name))
    print(f"\n{network_line(network)}; {network.get('rule', '')}")


def add_data_commands(sub, common: argparse.ArgumentParser) -> None:
    """The commands that measure data or list models: advise, extract, audit, models."""
    from ..defaults import AUTO_MODELS, DEFAULT_MODEL

    ad = sub.add_parser("advise", parents=[common], help="measure size, similarity and layer transferability; "
                                                         "recommend a strategy")
    ad.add_argument("data")
    ad.add_argument("--model", help="one model, or several joined by commas, cheapest first: each measured on the "
                                     "same images, each network's layer chosen, and their probes' average weighed "
                                     f"against each alone, as fit does (default: {' and '.join(AUTO_MODELS)}; with "
                                     f"--weights, {DEFAULT_MODEL})")
    ad.add_argument("--weights")
    ad.add_argument("--val")
    label_arguments(ad)
    ad.add_argument("--val-fraction", type=float, help="held out when there is no val/ folder (default 0.2)")
    ad.add_argument("--seed", type=int, default=0)
    precision_option(ad)
    ad.set_defaults(run=cmd_advise)

    xt = sub.add_parser("extract", parents=[common], help="fill the CNN-code cache for DATA, across processes, "
                                                          "GPUs or nodes")
    xt.add_argument("data")
    xt.add_argument("--model", default=DEFAULT_MODEL)
    xt.add_argument("--weights")
    xt.add_argument("--layer", default="penultimate")
    xt.add_argument("--image-size", type=int)
    xt.add_argument("--batch-size", type=int)
    xt.add_argument("--devices", default="1", help="Lightning devices: a count, ids, or auto")
    xt.add_argument("--num-nodes", type=int, default=1)
    xt.add_argument("--accelerator", default="auto")
    xt.add_argument("--distributed", default="auto", help="Lightning strategy, e.g. ddp")
    precision_option(xt)
    xt.set_defaults(run=cmd_extract)

    from .audit import add_parser as add_audit

    add_audit(sub, common)

    ds = sub.add_parser("datasets", help="the image collections that ship with headstart (the demo: flowers)")
    ds.add_argument("name", nargs="?", help="print this collection's folder, e.g. headstart fit \"$(headstart "
                                            "datasets flowers)\"")
    ds.add_argument("--json", action="store_true")
    ds.set_defaults(run=cmd_datasets)

    md = sub.add_parser("models", help="known models and whether their weights are available now")
    md.add_argument("pattern", nargs="?", help="a timm name pattern, e.g. 'resnet*'")
    md.add_argument("--json", action="store_true")
    md.set_defaults(run=cmd_models)
