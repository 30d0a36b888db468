"""``headstart fit``: every option checked before any model is loaded or image read, then the run and its text."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from ..errors import HeadstartError
from . import checks
from .output import print_json, skipped_lines


def _default_out(data: Path) -> Path:
    base = Path("runs") / (data.resolve().name or "model")
    out, n = base, 2
    while out.exists():
        out, n = base.with_name(f"{base.name}-{n}"), n + 1
    return out


#: fit's options that do not shape the run; every other one is saved for --resume
NOT_RESUMED = ("command", "run", "started", "resume", "resume_hint", "out", "overwrite", "report", "json", "quiet",
               "verbose", "cache_dir", "engine", "exclude_paths", "relabel_labels")


def fraction(value: float | None) -> float:
    """The --val-fraction option, its default applied."""
    return 0.2 if value is None else value


def find_data(args: argparse.Namespace):
    """The training and validation images the options name: class folders, or (``--labels``) label CSVs."""
    from ..data.splits import find_label_splits, find_splits

    if getattr(args, "labels", None):
        return find_label_splits(args.data, args.labels, args.val_labels, fraction(args.val_fraction), args.seed)
    return find_splits(args.data, args.val, fraction(args.val_fraction), args.seed)


def label_arguments(parser: argparse.ArgumentParser) -> None:
    """``--labels`` and ``--val-labels``: multi-label data as label CSVs."""
    parser.add_argument("--labels", metavar="CSV", help="multi-label: a CSV of file names (relative to DATA or "
                                                        "DATA/images) and labels, as a 0/1 column per label or "
                                                        "'filename,labels' with labels separated by spaces, ; or |")
    parser.add_argument("--val-labels", metavar="CSV", help="with --labels: the validation images' CSV (default: "
                                                            "--val-fraction held out by iterative stratification)")


def check_numbers(args: argparse.Namespace) -> None:
    """Counts that must be at least 1 (or 0), for the options a command has."""
    for option, low in (("batch_size", 1), ("num_nodes", 1), ("workers", 0), ("seed", 0)):
        if hasattr(args, option):
            checks.at_least(f"--{option.replace('_', '-')}", getattr(args, option), low)
    if hasattr(args, "devices"):
        checks.devices(args.devices)
    if hasattr(args, "image_size"):
        from ..data.decode import check_image_size

        check_image_size(args.image_size)


def training_dir(out: Path) -> Path:
    """Where a run's checkpoints and logs live while it trains (beside ``--out``)."""
    return out.parent / f".{out.name}.training"


def _finetune_config(args: argparse.Namespace):
    from ..training.options import FineTuneConfig

    return FineTuneConfig(
        strategy="scratch" if getattr(args, "strategy", None) == "scratch" else "fine-tune",
        unfreeze=str(args.unfreeze), epochs=args.epochs, probe_epochs=args.probe_epochs,
        head_init=args.head_init, lr=args.lr,
        backbone_lr_mult=args.backbone_lr_mult, batch_size=args.batch_size or 32, augment=args.augment,
        class_weight=args.class_weight, patience=args.patience, workers=args.workers, loader=args.loader,
        views=args.views,
        num_nodes=args.num_nodes, accelerator=args.accelerator, distributed=args.distributed,
        devices=checks.devices(args.devices),
        logger=args.logger or [], seed=args.seed, verbose=getattr(args, "verbose", False),
    )


def _classifier(args: argparse.Namespace, workdir: Path | None):
    """The TransferClassifier the fit options describe (``workdir``: where a network trains)."""
    from ..estimator import TransferClassifier

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
        saved = training_dir(out) / "run.json"
        if not saved.is_file():
            raise HeadstartError(f"nothing to resume at {str(out)!r}: no interrupted training found there")
        for key, value in json.loads(saved.read_text()).items():
            setattr(args, key, value)
    from ..artifact import check_replaceable, check_writable
    from ..data.folders import existing_dir

    check_numbers(args)
    _finetune_config(args).check()
    checks.precision(args.precision, args.engine)
    if not args.budget > 0:
        raise HeadstartError(f"--budget is in seconds and must be positive, got {args.budget:g}")
    checks.positive("--C", args.C, "a positive number (the inverse regularisation strength)")
    existing_dir(args.data, "data folder")
    checks.label_options(args)
    if not args.labels:
        checks.val_options(args.data, args.val, args.val_fraction)
    checks.weights(args.weights)
    if args.layer is not None:
        from ..training.options import parse_layers

        parse_layers(args.layer)
    if args.exclude:
        args.exclude_paths = checks.exclusions(args.exclude)
    if args.relabel:
        if args.labels:
            raise HeadstartError("--relabel gives images one class each; with --labels, edit the label file instead")
        args.relabel_labels = checks.relabels(args.relabel)
    out = Path(args.out or args.resume) if (args.out or args.resume) else _default_out(Path(args.data))
    check_replaceable(out, args.overwrite or bool(args.resume))  # a user's own folder is never replaced
    check_writable(out)
    from ..artifact import estimated_model_bytes
    from ..codes.backbones import check_model_name
    from ..codes.joint import named_networks
    from ..disk import cache_folder, space_for

    names = named_networks(args.model, args.strategy == "auto" and not args.weights and args.layer is None)
    if not names:
        raise HeadstartError("--model is empty; give a timm model name, or several joined by commas for auto")
    if len(names) > 1 and args.weights:
        raise HeadstartError(f"--model names {len(names)} networks, each with its own pretrained weights; drop "
                             "--weights, or name one network")
    if len(names) > 1 and args.strategy in ("fine-tune", "scratch"):
        raise HeadstartError(f"--strategy {args.strategy} trains one network and --model names {len(names)}; name "
                             "one (--strategy auto plans which of several to fine-tune)")
    for name in names:  # the last checks (timm, unless the network is known), before any data is read
        check_model_name(name)
    cache = cache_folder(args.cache_dir)
    space_for(out.parent, estimated_model_bytes(",".join(names), cache), "the model folder")
    return out


def cmd_fit(args: argparse.Namespace) -> None:
    """``headstart fit``: fit, score, save, report."""
    from ..workflow import fit_folder

    out = _check_fit(args)
    splits = find_data(args)
    if args.exclude:
        splits = checks.without(splits, args.exclude_paths, args.exclude)
    if args.relabel:
        splits = checks.relabelled(splits, args.relabel_labels, args.relabel)
    args.resume_hint = f"headstart fit --resume {out}"
    may_train = args.strategy in ("auto", "fine-tune", "scratch")  # a network may train: keep what resumes it
    workdir = training_dir(out) if may_train else None
    if workdir is not None and not args.resume:
        workdir.mkdir(parents=True, exist_ok=True)
        resumed = {k: v for k, v in vars(args).items() if k not in NOT_RESUMED}
        (workdir / "run.json").write_text(json.dumps(resumed, indent=2))
    clf = _classifier(args, workdir)
    fitting = time.perf_counter()
    result = fit_folder(clf, args.data, splits, out, args.overwrite, workdir, args.report,
                        spent=fitting - args.started)
    if result is None:
        return  # another process of a data-parallel run: rank 0 reports
    result["seconds"]["startup"] = round(fitting - args.started, 3)
    result["seconds"]["command"] = round(time.perf_counter() - args.started, 3)
    if args.json:
        print_json(result)
    else:
        print(_fit_text(clf, result, splits.how, clf.strategy_ in ("fine-tune", "scratch")))


def _fit_text(clf, result: dict[str, Any], split: str, network: bool) -> str:
    """What `fit` prints for people: data, model, classifier or training, validation, time, skipped files."""
    from ..codes.joint import layers_text

    val, data, info = result["validation"], result["data"], clf.head_.info
    n_val = val["n_images"] if val else 0
    what = "labels" if clf.multilabel_ else "classes"
    lines = [
        f"data: {result['n_train_images']} train / {n_val} validation images, {len(clf.classes_)} {what} "
        f"({split})",
        *[f"note: {note}" for note in data.get("notes", [])],
        f"model: {clf.backbone_.name} ({clf.backbone_.weights}), layer {layers_text(clf.layers_)}, "
        f"{result['codes_dim']}-d {'int8 ' if clf.precision_ == 'int8' else ''}codes",
    ]
    if data["imbalance_ratio"] >= 1.5 and not clf.multilabel_:
        lines.append(f"note: classes are imbalanced (largest/smallest = {data['imbalance_ratio']}); "
                     "watch balanced accuracy, consider --class-weight balanced")
    if network:
        t = result["training"]
        lines.append(f"training: {clf.strategy_}, unfreeze {t['config']['unfreeze']}, {t['epochs_run']} epochs, best "
                     f"early-stopping accuracy {t['best_monitor_acc']:.4f} on {t['monitor_images']} held-out "
                     "training images")
    else:
        C = (f"C={info['C']:g}" if not clf.multilabel_ and "members" not in info else
             "one per network, C " + "/".join(f"{m['C']:g}" for m in info["members"]) + ", logits averaged"
             if "members" in info else
             "one per label, C " + "/".join(f"{c:g}" for c in info["C"]) + ", thresholds "
             + "/".join(f"{t:.2f}" for t in info["thresholds"]))
        folds = info.get("cv_folds") or (info.get("members") or [{}])[0].get("cv_folds")
        lines.append(f"classifier: {clf.classifier}, {C}"
                     + (f" ({folds}-fold CV on train, log_loss)" if folds else ""))
    if val and clf.multilabel_:
        lines.append(f"validation: {multilabel_line(val)}")
    elif val:
        lines.append(f"validation: accuracy {val['accuracy']:.4f}, balanced accuracy {val['balanced_accuracy']:.4f}")
    lines.append(time_line(result["seconds"], result["n_codes_computed"], network))
    if result.get("excluded"):
        lines.append("excluded (--exclude): " + ", ".join(f"{n} {k}" for k, n in result["excluded"].items()))
    if "relabelled" in result:
        lines.append("labels changed (--relabel): " + (", ".join(f"{n} {k}" for k, n in result["relabelled"].items())
                                                       or "none (every listed label was already the file's own)"))
    if result.get("leaks"):
        from ..auditing.leakcheck import leak_line

        lines.append(leak_line(result["leaks"], val["accuracy"] if val else None,
                               "subset accuracy" if clf.multilabel_ else "accuracy"))
    lines += skipped_lines(result["skipped"] + (val["skipped"] if val else []))
    lines.append(f"saved: {result['out']}" + (f" (report: {result['report']})" if result.get("report") else ""))
    return "\n".join(lines)


def multilabel_line(metrics: dict[str, Any]) -> str:
    """Multi-label validation figures in one line."""
    return (f"mAP {metrics['map']:.4f}, micro-F1 {metrics['micro_f1']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
            f"subset accuracy {metrics['subset_accuracy']:.4f}, Hamming loss {metrics['hamming_loss']:.4f}")


def time_line(s: dict[str, float], computed: int, network: bool) -> str:
    """The whole command's time, then its parts in the order they ran."""
    fit = (f"training {s['total'] - s.get('decide', 0):.1f} s" if network else
           f"codes {s['codes']:.1f} s ({computed} computed), classifier {s['classifier']:.1f} s")
    parts = [("start-up", s.get("startup")), ("deciding", s.get("decide")), (fit, None),
             ("validation", s.get("validation")), ("leak check", s.get("leak_check")), ("saving", s.get("save")),
             ("report", s.get("report"))]
    said = ", ".join(name if value is None else f"{name} {value:.1f} s" for name, value in parts
                     if value is not None or name == fit)
    return f"time: {s.get('command', s['total']):.1f} s ({said})"


def precision_option(parser: argparse.ArgumentParser, default: str | None = "fp32",
                     otherwise: str = "the model's own") -> None:
    """Add ``--precision`` to a command's parser (``otherwise``: what no default means)."""
    from ..defaults import PRECISIONS

    parser.add_argument("--precision", default=default, choices=PRECISIONS,
                        help="int8: the network quantised by ONNX Runtime, calibrated on training images (about "
                             "1.8x faster on CPUs with int8 instructions)"
                             + (f" (default {default})" if default else f" (default: {otherwise})"))


def add_fit(sub, common: argparse.ArgumentParser) -> None:
    """Add ``headstart fit`` and its options to the parser."""
    from ..defaults import AUTO_MODELS, CLASSIFIERS, DEFAULT_BUDGET, DEFAULT_MODEL, FIT_STRATEGIES

    fit = sub.add_parser("fit", parents=[common], help="train a classifier on DATA (one subfolder per class)")
    fit.add_argument("data", nargs="?", help="folder of class folders, or with train/ and val/ inside (with --labels: "
                                             "a folder of images)")
    label_arguments(fit)
    fit.add_argument("--val", help="a separate validation folder of class folders")
    fit.add_argument("--val-fraction", type=float, help="held out when there is no val/ folder (default 0.2)")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--model", help="any timm model name, or several joined by commas, cheapest first: measured "
                                      "together, their probes averaged (auto plans which to fine-tune on large "
                                      f"data); default: {' and '.join(AUTO_MODELS)} with auto, otherwise, and with "
                                      f"--weights or --layer, {DEFAULT_MODEL}")
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
    precision_option(fit, None, "fp32, or int8 where auto measures it worth it on a large collection")
    _add_fine_tune_options(fit)
    fit.add_argument("--exclude", metavar="FILE", help="leave these images out: an audit CSV (its path column: "
                                                       "edit it to the rows you agree with) or one path per line")
    fit.add_argument("--relabel", metavar="FILE", help="give these images other labels without moving any file: a CSV "
                                                       "of path,label (`audit --suggest` writes one to edit), or an "
                                                       "audit CSV whose action cells read 'relabel' or 'relabel CLASS'")
    fit.add_argument("--out", help="model folder to write (default runs/<data name>)")
    fit.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    fit.add_argument("--no-report", dest="report", action="store_false", help="skip OUT/report.html")
    fit.set_defaults(run=cmd_fit)


def _add_fine_tune_options(fit: argparse.ArgumentParser) -> None:
    """The fine-tuning options, their defaults taken from FineTuneConfig (defined there once)."""
    from ..training.options import HEAD_INITS, LOADERS, FineTuneConfig

    default = FineTuneConfig()
    tune = fit.add_argument_group("fine-tune and scratch (Lightning)")
    tune.add_argument("--unfreeze", default=default.unfreeze,
                      help=f"top blocks trained with the head: a number or 'all' (default {default.unfreeze})")
    tune.add_argument("--epochs", type=int, default=default.epochs)
    tune.add_argument("--probe-epochs", type=int, default=default.probe_epochs,
                      help="epochs training only the new head first")
    tune.add_argument("--head-init", choices=HEAD_INITS, default=default.head_init,
                      help="the new head starts random (default) or as a linear probe on a sample's codes (probe: "
                           "LP-FT, then --probe-epochs 0 is enough)")
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
    tune.add_argument("--views", type=int, default=default.views,
                      help=f"--loader activations: augmented views of each image cached (default {default.views})")
    tune.add_argument("--devices", default=default.devices, help="Lightning devices: auto, a count, or ids")
    tune.add_argument("--num-nodes", type=int, default=default.num_nodes)
    tune.add_argument("--accelerator", default=default.accelerator, help="auto, cpu, gpu, ...")
    tune.add_argument("--distributed", default=default.distributed,
                      help="Lightning strategy: auto, ddp, fsdp, ... (ddp_spawn is refused: use ddp)")
    tune.add_argument("--logger", action="append", choices=("tensorboard", "mlflow"), help="extra loggers (CSV is "
                                                                                          "always written)")
    tune.add_argument("--resume", metavar="RUN", help="finish the interrupted run whose --out was RUN")
