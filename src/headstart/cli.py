"""The command line: parse, call the API, print human text or --json. User mistakes exit non-zero in one line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from . import checks
from .errors import HeadstartError


def _print_json(value: Any) -> None:
    from .artifact import _json_default

    print(json.dumps(value, indent=2, default=_json_default))


def _skipped_lines(skipped: list[dict[str, str]], limit: int = 10) -> list[str]:
    lines = [f"skipped {len(skipped)} file(s):"] if skipped else []
    lines += [f"  {s['path']}: {s['reason']}" for s in skipped[:limit]]
    if len(skipped) > limit:
        lines.append(f"  ... and {len(skipped) - limit} more (see --json)")
    return lines


def _default_out(data: Path) -> Path:
    base = Path("runs") / (data.resolve().name or "model")
    out, n = base, 2
    while out.exists():
        out, n = base.with_name(f"{base.name}-{n}"), n + 1
    return out


#: fit's options that do not shape the run; every other one is saved for --resume
NOT_RESUMED = ("command", "run", "resume", "resume_hint", "out", "overwrite", "report", "json", "quiet", "verbose",
               "cache_dir", "engine", "exclude_paths")


def _fraction(value: float | None) -> float:
    return 0.2 if value is None else value


def _check_numbers(args: argparse.Namespace) -> None:
    """Counts that must be at least 1 (or 0), for the options a command has."""
    for option, low in (("batch_size", 1), ("num_nodes", 1), ("workers", 0), ("seed", 0)):
        if hasattr(args, option):
            checks.at_least(f"--{option.replace('_', '-')}", getattr(args, option), low)
    if hasattr(args, "devices"):
        checks.devices(args.devices)
    if hasattr(args, "image_size"):
        from .options import check_image_size

        check_image_size(args.image_size)


def _training_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.training"


def _finetune_config(args: argparse.Namespace):
    from .options import FineTuneConfig

    return FineTuneConfig(
        strategy="scratch" if getattr(args, "strategy", None) == "scratch" else "fine-tune",
        unfreeze=str(args.unfreeze), epochs=args.epochs, probe_epochs=args.probe_epochs, lr=args.lr,
        backbone_lr_mult=args.backbone_lr_mult, batch_size=args.batch_size or 32, augment=args.augment,
        class_weight=args.class_weight, patience=args.patience, workers=args.workers, loader=args.loader,
        num_nodes=args.num_nodes, accelerator=args.accelerator, distributed=args.distributed,
        devices=checks.devices(args.devices),
        logger=args.logger or [], seed=args.seed, verbose=getattr(args, "verbose", False),
    )


def _classifier(args: argparse.Namespace, workdir: Path | None):
    """The TransferClassifier the fit options describe (``workdir``: where a network trains)."""
    from .classifier import TransferClassifier

    return TransferClassifier(model=args.model, weights=args.weights, strategy=args.strategy, layer=args.layer,
                              classifier=args.classifier, C=args.C, cache_dir=args.cache_dir, engine=args.engine,
                              batch_size=args.batch_size, seed=args.seed, progress=not args.quiet,
                              image_size=args.image_size, finetune=_finetune_config(args) if workdir else None,
                              workdir=workdir, resume=bool(args.resume), budget=args.budget,
                              precision=args.precision)


def _check_fit(args: argparse.Namespace) -> Path:
    """Every fit option checked (after loading a resumed run's own), before any data is read; returns --out."""
    if not args.data and not args.resume:
        raise HeadstartError("give the DATA folder to fit (or --resume RUN)")
    if args.resume:
        out = Path(args.resume)
        saved = _training_dir(out) / "run.json"
        if not saved.is_file():
            raise HeadstartError(f"nothing to resume at {str(out)!r}: no interrupted training found there")
        for key, value in json.loads(saved.read_text()).items():
            setattr(args, key, value)
    from .artifact import check_replaceable, check_writable
    from .data import existing_dir

    _check_numbers(args)
    _finetune_config(args).check()
    checks.precision(args.precision, args.engine)
    if not args.budget > 0:
        raise HeadstartError(f"--budget is in seconds and must be positive, got {args.budget:g}")
    checks.positive("--C", args.C, "a positive number (the inverse regularisation strength)")
    existing_dir(args.data, "data folder")
    checks.val_options(args.data, args.val, args.val_fraction)
    checks.weights(args.weights)
    if args.layer is not None:
        from .options import parse_layers

        parse_layers(args.layer)
    if args.exclude:
        args.exclude_paths = checks.exclusions(args.exclude)
    out = Path(args.out or args.resume) if (args.out or args.resume) else _default_out(Path(args.data))
    check_replaceable(out, args.overwrite or bool(args.resume))  # a user's own folder is never replaced
    check_writable(out)
    from .artifact import estimated_model_bytes
    from .backbones import check_model_name
    from .cache import space_for

    check_model_name(args.model)  # the last checks (they import timm), still before any data is read
    space_for(out.parent, estimated_model_bytes(args.model), "the model folder")
    return out


def cmd_fit(args: argparse.Namespace) -> None:
    from .data import find_splits
    from .workflow import fit_folder

    out = _check_fit(args)
    splits = find_splits(args.data, args.val, _fraction(args.val_fraction), args.seed)
    if args.exclude:
        splits = checks.without(splits, args.exclude_paths, args.exclude)
    args.resume_hint = f"headstart fit --resume {out}"
    may_train = args.strategy in ("auto", "fine-tune", "scratch")  # a network may train: keep what resumes it
    workdir = _training_dir(out) if may_train else None
    if workdir is not None and not args.resume:
        workdir.mkdir(parents=True, exist_ok=True)
        resumed = {k: v for k, v in vars(args).items() if k not in NOT_RESUMED}
        (workdir / "run.json").write_text(json.dumps(resumed, indent=2))
    clf = _classifier(args, workdir)
    result = fit_folder(clf, args.data, splits, out, args.overwrite, workdir, args.report)
    if result is None:
        return  # another process of a data-parallel run: rank 0 reports
    if args.json:
        _print_json(result)
    else:
        print(_fit_text(clf, result, splits.how, clf.strategy_ in ("fine-tune", "scratch")))


def _fit_text(clf, result: dict[str, Any], split: str, network: bool) -> str:
    """What `fit` prints for people: data, model, classifier or training, validation, time, skipped files."""
    val, data, info = result["validation"], result["data"], clf.head_.info
    n_val = val["n_images"] if val else 0
    lines = [
        f"data: {result['n_train_images']} train / {n_val} validation images, {len(clf.classes_)} classes "
        f"({split})",
        f"model: {clf.backbone_.name} ({clf.backbone_.weights}), layer {'+'.join(clf.layers_)}, "
        f"{result['codes_dim']}-d {'int8 ' if clf.precision == 'int8' else ''}codes",
    ]
    if data["imbalance_ratio"] >= 1.5:
        lines.append(f"note: classes are imbalanced (largest/smallest = {data['imbalance_ratio']}); "
                     "watch balanced accuracy, consider --class-weight balanced")
    if network:
        t = result["training"]
        lines.append(f"training: {clf.strategy_}, unfreeze {t['config']['unfreeze']}, {t['epochs_run']} epochs, best "
                     f"early-stopping accuracy {t['best_monitor_acc']:.4f} on {t['monitor_images']} held-out "
                     "training images")
    else:
        lines.append(f"classifier: {clf.classifier}, C={info['C']:g}"
                     + (f" ({info['cv_folds']}-fold CV on train, {info['cv_metric']})" if "cv_folds" in info else ""))
    if val:
        lines.append(f"validation: accuracy {val['accuracy']:.4f}, balanced accuracy {val['balanced_accuracy']:.4f}")
    s = result["seconds"]
    deciding = f"deciding {s['decide']:.1f} s, " if "decide" in s else ""
    if network:
        lines.append(f"time: {s['total']:.1f} s ({deciding}training {s['total'] - s.get('decide', 0):.1f} s)")
    else:
        lines.append(f"time: {s['total']:.1f} s ({deciding}codes {s['codes']:.1f} s, {result['n_codes_computed']} "
                     f"computed; classifier {s['classifier']:.1f} s)")
    if result.get("excluded"):
        lines.append("excluded (--exclude): " + ", ".join(f"{n} {k}" for k, n in result["excluded"].items()))
    if result.get("leaks"):
        from .auditing.leakcheck import leak_line

        lines.append(leak_line(result["leaks"], val["accuracy"] if val else None))
    lines += _skipped_lines(result["skipped"] + (val["skipped"] if val else []))
    lines.append(f"saved: {result['out']}" + (f" (report: {result['report']})" if result.get("report") else ""))
    return "\n".join(lines)


def _load(args: argparse.Namespace):
    from .classifier import load

    return load(args.model_dir, cache_dir=args.cache_dir, engine=args.engine, progress=not args.quiet)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .artifact import read_config
    from .data import evaluation_set, existing_dir

    read_config(args.model_dir)
    existing_dir(args.data, "data folder")
    clf = _load(args)
    result = clf.evaluate(evaluation_set(args.data, clf.classes_))
    if args.json:
        _print_json(result)
        return
    lines = [f"{result['n_images']} images: accuracy {result['accuracy']:.4f}, "
             f"balanced accuracy {result['balanced_accuracy'] or float('nan'):.4f}",
             f"{'class':<24}{'precision':>10}{'recall':>10}{'f1':>10}{'n':>8}"]
    for name, m in result["per_class"].items():
        lines.append(f"{name[:23]:<24}{m['precision']:>10.3f}{m['recall']:>10.3f}{m['f1']:>10.3f}{m['support']:>8}")
    if "n_unfamiliar" in result:
        lines.append(f"unfamiliar: {result['n_unfamiliar']} of {result['n_images']} images "
                     f"({100 * result['unfamiliar_rate']:.1f}%; about {100 * result['familiarity']['flag_rate']:.0f}% "
                     "of images like the training ones are flagged)")
    lines += _skipped_lines(result["skipped"])
    print("\n".join(lines))


def cmd_predict(args: argparse.Namespace) -> None:
    from .artifact import read_config
    from .data import prediction_inputs

    checks.at_least("--top", args.top, 1)
    paths = prediction_inputs(args.inputs)
    onnx = str(args.model_dir).endswith(".onnx")
    if onnx:  # an exported file: ONNX Runtime only, torch is never imported
        from .runtime import OnnxClassifier

        clf = OnnxClassifier(args.model_dir)
    else:
        read_config(args.model_dir)
        clf = _load(args)
    found = clf.predict_files(paths)
    threshold = clf.threshold if onnx else getattr(getattr(clf, "familiarity_", None), "threshold", None)
    predictions = []
    for n, (row, i) in enumerate(zip(found.proba, found.kept)):
        order = row.argsort()[::-1]
        entry = {"path": str(paths[i]), "label": clf.classes_[order[0]],
                 "probabilities": {clf.classes_[j]: round(float(row[j]), 6) for j in order}}
        if found.familiarity is not None:
            score = float(found.familiarity[n])
            entry.update(familiarity=round(score, 4), unfamiliar=score < threshold)
        predictions.append(entry)
    skipped_list = [{"path": p, "reason": r} for p, r in found.skipped]
    if args.json:
        _print_json({"predictions": predictions, "n_skipped": len(skipped_list), "skipped": skipped_list,
                     "familiarity_threshold": threshold})
        return
    for p in predictions:
        top = list(p["probabilities"].items())[: args.top]
        mark = (f"\tUNFAMILIAR (familiarity {p['familiarity']:.3f} < {threshold:.3f}: unlike the training images)"
                if p.get("unfamiliar") else "")
        print(f"{p['path']}\t" + "  ".join(f"{name} {prob:.3f}" for name, prob in top) + mark)
    for line in _skipped_lines(skipped_list):
        print(line, file=sys.stderr)


def cmd_advise(args: argparse.Namespace) -> None:
    from .data import existing_dir, find_splits

    existing_dir(args.data, "data folder")
    checks.val_options(args.data, args.val, args.val_fraction)
    checks.weights(args.weights)
    checks.precision(args.precision, args.engine)
    train = find_splits(args.data, args.val, _fraction(args.val_fraction), args.seed).train
    from .advisor import advise, format_advice
    from .backbones import create_backbone
    from .errors import ModelError

    models = [m.strip() for m in args.model.split(",") if m.strip()]
    results, texts = [], []
    for name in models:
        try:
            backbone = create_backbone(name, args.weights if len(models) == 1 else None)
        except ModelError as exc:
            if len(models) == 1:
                raise
            results.append({"model": name, "error": str(exc)})
            continue
        advice = advise(backbone, train, args.cache_dir, args.seed, progress=not args.quiet and not args.json,
                        engine=args.engine, precision=args.precision)
        results.append({"model": name, **advice.to_dict(), "best_layer_score": advice.layers.get(advice.layer, 0.0)})
        texts.append(format_advice(advice, name))
    ranked = sorted((r for r in results if "error" not in r), key=lambda r: -r["best_layer_score"])
    if args.json:
        _print_json(results[0] if len(models) == 1 else {"ranking": [r["model"] for r in ranked], "models": results})
        return
    print("\n\n".join(texts))
    if len(models) > 1:
        print("\nranking by best cross-validated linear accuracy on training images (no full training):")
        for i, r in enumerate(ranked, 1):
            print(f"  {i}. {r['model']:<32}{r['best_layer_score']:.4f} ({r['layer']})")
        for r in results:
            if "error" in r:
                print(f"  -  {r['model']}: {r['error']}")


def cmd_extract(args: argparse.Namespace) -> None:
    import time

    from .data import existing_dir, find_splits
    from .options import check_distributed, parse_layers

    existing_dir(args.data, "data folder")
    checks.weights(args.weights)
    _check_numbers(args)  # --image-size, --batch-size, --num-nodes, --devices
    devices = checks.devices(args.devices)
    checks.precision(args.precision, args.engine)
    check_distributed(args.distributed)
    layers = parse_layers(args.layer)
    splits = find_splits(args.data, val_fraction=0.0)
    from .backbones import create_backbone
    from .features import extract_distributed

    paths = list(splits.train.paths) + (list(splits.val.paths) if splits.val else [])
    backbone = create_backbone(args.model, args.weights, image_size=args.image_size)
    started = time.perf_counter()
    result = extract_distributed(backbone, layers, paths, args.cache_dir, devices, args.num_nodes,
                                 args.accelerator, args.distributed, args.batch_size, progress=not args.quiet,
                                 precision=args.precision, calibration=splits.train.paths)
    if not result["is_global_zero"]:
        return
    result["seconds"] = round(time.perf_counter() - started, 3)
    if args.json:
        _print_json(result)
    else:
        print(f"{result['total_images']} images' codes cached by {result['world_size']} process(es) in "
              f"{result['seconds']:.1f} s; {len(result['skipped_total'])} skipped")


def cmd_report(args: argparse.Namespace) -> None:
    from .artifact import read_config
    from .data import evaluation_set, existing_dir
    from .report import GENERATOR, write_report

    read_config(args.model_dir)
    existing_dir(args.data, "data folder")
    out = checks.output_file(args.out or Path(args.model_dir) / "report.html", args.overwrite, ours=GENERATOR)
    clf = _load(args)
    write_report(clf, evaluation_set(args.data, clf.classes_), out, f"headstart: {Path(args.model_dir).name}")
    if args.json:
        _print_json({"out": str(out)})
    else:
        print(f"report: {out}")


def cmd_export(args: argparse.Namespace) -> None:
    from .artifact import read_config
    from .data import existing_dir, files_under

    config = read_config(args.model_dir)
    precision = args.precision or config.get("precision", "fp32")
    checks.precision(precision, "torch" if args.format == "torchscript" else "onnx")
    if args.calibration is not None and precision != "int8":
        raise HeadstartError("--calibration is for --precision int8")
    calibration = None
    if args.calibration is not None:
        from .quantize import MIN_CALIBRATION_IMAGES

        calibration = files_under(existing_dir(args.calibration, "calibration folder"))
        if len(calibration) < MIN_CALIBRATION_IMAGES:
            raise HeadstartError(f"--calibration {args.calibration} holds {len(calibration)} file(s); give a folder of "
                                 f"at least {MIN_CALIBRATION_IMAGES} training images")
    out = checks.output_file(args.out or Path(args.model_dir) / f"model.{'onnx' if args.format == 'onnx' else 'pt'}",
                             args.overwrite)
    from .export import export

    clf = _load(args)
    export(clf, out, args.format, precision, calibration)
    size = out.stat().st_size / 2**20
    if args.json:
        _print_json({"out": str(out), "format": args.format, "precision": precision, "megabytes": round(size, 2)})
    else:
        print(f"exported {args.format} ({precision}): {out} ({size:.1f} MB)")


def cmd_summary(args: argparse.Namespace) -> None:
    from .artifact import read_config
    from .options import FineTuneConfig, parse_layers

    checks.at_least("--num-classes", args.num_classes, 2)
    blocks = FineTuneConfig(strategy=args.strategy, unfreeze=args.unfreeze).unfreeze_blocks()
    checks.weights(args.weights)
    parse_layers(args.layer)
    if args.model_dir:
        read_config(args.model_dir)
    from .backbones import create_backbone
    from .finetune import trainable_prefixes
    from .summary import format_summary, summarize

    if args.model_dir:
        clf = _load(args)
        backbone, layers, n_classes, strategy = clf.backbone_, clf.layers_, len(clf.classes_), clf.strategy_
        trainable = clf.head_.info.get("trainable_prefixes")
    else:
        backbone = create_backbone(args.model, args.weights)
        layers, n_classes, strategy = parse_layers(args.layer), args.num_classes, args.strategy
        trainable = None
        if strategy != "feature-extractor":
            trainable = trainable_prefixes(backbone.model, blocks)
    codes_dim = None
    if layers != ["penultimate"]:
        import torch

        from .backbones import CodesNet

        h, w = backbone.preprocess.input_size
        with torch.inference_mode():
            codes_dim = sum(o.shape[1] for o in CodesNet(backbone, layers)(torch.zeros(1, h, w, 3, dtype=torch.uint8)))
    summary = summarize(backbone, strategy, codes_dim, n_classes, trainable)
    summary["codes_layers"] = layers
    if args.json:
        _print_json(summary)
    else:
        print(format_summary(summary))


def cmd_models(args: argparse.Namespace) -> None:
    from .zoo import list_models

    rows = list_models(args.pattern)
    if not rows:
        wider = f"*{args.pattern.strip('*')}*"
        raise HeadstartError(f"no model matches {args.pattern!r}; try a wider pattern such as {wider!r}, or "
                             "`headstart models` for the list")
    if args.json:
        _print_json(rows)
        return
    for row in rows:
        print(f"{row['name']:<48}{row['weights']}")
    if not args.pattern:
        print("\n(pass a pattern such as 'resnet*' to list timm's pretrained models)")


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("headstart")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


class OneLineParser(argparse.ArgumentParser):
    """Usage mistakes in one line, with where to look, instead of argparse's usage block."""

    def error(self, message: str):
        self.exit(2, f"headstart: error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    from .defaults import ENGINES

    parser = OneLineParser(prog="headstart", description="Transfer learning on image folders.")
    parser.add_argument("--version", action="version", version=f"headstart {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cache-dir", help="where CNN codes are cached (default $HEADSTART_CACHE_DIR or "
                                            "~/.cache/headstart)")
    common.add_argument("--engine", default="auto", choices=ENGINES, help="runtime for the network (default auto: "
                                                                          "onnx on CPU, torch on CUDA)")
    common.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    common.add_argument("--verbose", action="store_true", help="also the training framework's own messages")
    common.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    _add_fit(sub, common)
    _add_model_commands(sub, common)
    _add_data_commands(sub, common)
    return parser


def _precision_option(parser: argparse.ArgumentParser, default: str | None = "fp32") -> None:
    from .defaults import PRECISIONS

    parser.add_argument("--precision", default=default, choices=PRECISIONS,
                        help="int8: the network quantised by ONNX Runtime, calibrated on training images (about "
                             "1.8x faster on CPUs with int8 instructions)"
                             + (f" (default {default})" if default else " (default: the model's own)"))


def _add_fit(sub, common: argparse.ArgumentParser) -> None:
    from .defaults import CLASSIFIERS, DEFAULT_BUDGET, DEFAULT_MODEL, FIT_STRATEGIES

    fit = sub.add_parser("fit", parents=[common], help="train a classifier on DATA (one subfolder per class)")
    fit.add_argument("data", nargs="?", help="folder of class folders, or with train/ and val/ inside")
    fit.add_argument("--val", help="a separate validation folder of class folders")
    fit.add_argument("--val-fraction", type=float, help="held out when there is no val/ folder (default 0.2)")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--model", default=DEFAULT_MODEL, help=f"any timm model name (default {DEFAULT_MODEL})")
    fit.add_argument("--weights", help="'embedded', 'hub', 'none', or a .safetensors / state-dict file")
    fit.add_argument("--strategy", default="auto", choices=FIT_STRATEGIES,
                     help="auto (default): measure the data and choose; feature-extractor: linear classifier on "
                          "frozen CNN codes; fine-tune: train a new head with the top blocks; scratch: random init")
    fit.add_argument("--budget", type=float, default=DEFAULT_BUDGET,
                     help=f"with --strategy auto: seconds for checking and training (default {DEFAULT_BUDGET:g})")
    fit.add_argument("--layer", help="layer for CNN codes (default penultimate; with auto, chosen); join several "
                                     "with + (names: `headstart summary --model M`)")
    fit.add_argument("--classifier", default="logistic", choices=CLASSIFIERS)
    fit.add_argument("--C", type=float, help="regularisation (default: chosen by cross-validation on train)")
    fit.add_argument("--batch-size", type=int)
    fit.add_argument("--image-size", type=int, help="input resolution (default: the model's pretrained size)")
    _precision_option(fit)
    _add_fine_tune_options(fit)
    fit.add_argument("--exclude", metavar="FILE", help="leave these images out: an audit CSV (its path column: "
                                                       "edit it to the rows you agree with) or one path per line")
    fit.add_argument("--out", help="model folder to write (default runs/<data name>)")
    fit.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    fit.add_argument("--no-report", dest="report", action="store_false", help="skip OUT/report.html")
    fit.set_defaults(run=cmd_fit)


def _add_fine_tune_options(fit: argparse.ArgumentParser) -> None:
    """The fine-tuning options, their defaults taken from FineTuneConfig (defined there once)."""
    from .options import LOADERS, FineTuneConfig

    default = FineTuneConfig()
    tune = fit.add_argument_group("fine-tune and scratch (Lightning)")
    tune.add_argument("--unfreeze", default=default.unfreeze,
                      help=f"top blocks trained with the head: a number or 'all' (default {default.unfreeze})")
    tune.add_argument("--epochs", type=int, default=default.epochs)
    tune.add_argument("--probe-epochs", type=int, default=default.probe_epochs,
                      help="epochs training only the new head first")
    tune.add_argument("--lr", type=float, default=default.lr, help="learning rate of the new head (AdamW)")
    tune.add_argument("--backbone-lr-mult", type=float, default=default.backbone_lr_mult,
                      help="pretrained layers learn at lr x this")
    tune.add_argument("--no-augment", dest="augment", action="store_false", help="no random crop and flip")
    tune.add_argument("--class-weight", choices=("balanced",), help="weight the loss against class imbalance")
    tune.add_argument("--patience", type=int, default=default.patience, help="early-stopping patience in epochs")
    tune.add_argument("--workers", type=int, default=default.workers,
                      help="decoding threads (memory loader) or data-loading processes (stream loader)")
    tune.add_argument("--loader", choices=LOADERS, default=default.loader,
                      help="memory: images decoded once, augmented per batch (default); stream: decoded and "
                           "augmented per image in every epoch, in --workers processes; activations (--unfreeze N): "
                           "the frozen blocks run once per augmented view, epochs train only the top")
    tune.add_argument("--devices", default=default.devices, help="Lightning devices: auto, a count, or ids")
    tune.add_argument("--num-nodes", type=int, default=default.num_nodes)
    tune.add_argument("--accelerator", default=default.accelerator, help="auto, cpu, gpu, ...")
    tune.add_argument("--distributed", default=default.distributed,
                      help="Lightning strategy: auto, ddp, fsdp, ... (ddp_spawn is refused: use ddp)")
    tune.add_argument("--logger", action="append", choices=("tensorboard", "mlflow"), help="extra loggers (CSV is "
                                                                                          "always written)")
    tune.add_argument("--resume", metavar="RUN", help="finish the interrupted run whose --out was RUN")


def _add_model_commands(sub, common: argparse.ArgumentParser) -> None:
    """The commands that use a saved model: evaluate, predict, report, export, summary."""
    from .defaults import DEFAULT_MODEL, EXPORT_FORMATS, STRATEGIES

    ev = sub.add_parser("evaluate", parents=[common], help="score a saved model on labelled images")
    ev.add_argument("model_dir")
    ev.add_argument("data", help="folder of class folders (or holding val/)")
    ev.set_defaults(run=cmd_evaluate)

    pr = sub.add_parser("predict", parents=[common], help="predict classes of image files or folders")
    pr.add_argument("model_dir", help="a saved model folder, or an exported .onnx file")
    pr.add_argument("inputs", nargs="+")
    pr.add_argument("--top", type=int, default=3, help="classes shown per image (text output)")
    pr.set_defaults(run=cmd_predict)

    rp = sub.add_parser("report", parents=[common], help="write a self-contained HTML report on labelled images")
    rp.add_argument("model_dir")
    rp.add_argument("data", help="folder of class folders (or holding val/)")
    rp.add_argument("--out", help="HTML file to write (default MODEL_DIR/report.html)")
    rp.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    rp.set_defaults(run=cmd_report)

    ex = sub.add_parser("export", parents=[common], help="write a saved model as one ONNX or TorchScript file")
    ex.add_argument("model_dir")
    ex.add_argument("--format", default="onnx", choices=EXPORT_FORMATS)
    ex.add_argument("--out", help="file to write (default MODEL_DIR/model.onnx or model.pt)")
    _precision_option(ex, None)
    ex.add_argument("--calibration", metavar="DIR", help="training images to calibrate int8 on, for a model fitted "
                                                         "in fp32 (default: its recorded training data)")
    ex.add_argument("--overwrite", action="store_true")
    ex.set_defaults(run=cmd_export)

    sm = sub.add_parser("summary", parents=[common], help="layers, shapes and (non-)trainable parameters")
    sm.add_argument("model_dir", nargs="?", help="a saved model folder (or use --model)")
    sm.add_argument("--model", default=DEFAULT_MODEL)
    sm.add_argument("--weights")
    sm.add_argument("--layer", default="penultimate")
    sm.add_argument("--strategy", default="feature-extractor", choices=STRATEGIES)
    sm.add_argument("--unfreeze", default="2", help="with --strategy fine-tune: top blocks trained, or 'all'")
    sm.add_argument("--num-classes", type=int, help="include the new head for this many classes")
    sm.set_defaults(run=cmd_summary)


def _add_data_commands(sub, common: argparse.ArgumentParser) -> None:
    """The commands that measure data or list models: advise, extract, audit, models."""
    from .defaults import DEFAULT_MODEL

    ad = sub.add_parser("advise", parents=[common], help="measure size, similarity and layer transferability; "
                                                         "recommend a strategy")
    ad.add_argument("data")
    ad.add_argument("--model", default=DEFAULT_MODEL, help="one model, or several joined by commas to rank them")
    ad.add_argument("--weights")
    ad.add_argument("--val")
    ad.add_argument("--val-fraction", type=float, help="held out when there is no val/ folder (default 0.2)")
    ad.add_argument("--seed", type=int, default=0)
    _precision_option(ad)
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
    _precision_option(xt)
    xt.set_defaults(run=cmd_extract)

    from .auditing.command import add_parser as add_audit

    add_audit(sub, common)

    md = sub.add_parser("models", help="known models and whether their weights are available now")
    md.add_argument("pattern", nargs="?", help="a timm name pattern, e.g. 'resnet*'")
    md.add_argument("--json", action="store_true")
    md.set_defaults(run=cmd_models)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"headstart: warning: {message}", file=sys.stderr)


#: Modules of the training stack; a deployment installed without them can still predict from an exported .onnx file.
TRAINING_STACK = ("torch", "torchvision", "timm", "lightning", "sklearn", "scipy", "safetensors", "onnx")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = _one_line_warning
    try:
        args.run(args)
    except HeadstartError as exc:
        print(f"headstart: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in TRAINING_STACK:
            raise
        print(f"headstart: error: `headstart {args.command}` needs the training stack ({exc.name} is not installed): "
              "pip install the project with its dependencies; without them only `headstart predict MODEL.onnx` works",
              file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        from .cache import is_write_fault, reason_of

        if not is_write_fault(exc):
            raise
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"headstart: error: cannot write {where}{reason_of(exc)}; free some space or choose another folder",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = getattr(args, "resume_hint", None)
        training = hint and (_training_dir(Path(hint.split(" --resume ", 1)[1])) / "run.json").is_file()
        print("headstart: interrupted; " + (f"resume with `{hint}`" if training else
                                            "run the same command again (the CNN codes computed so far are cached)"),
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
