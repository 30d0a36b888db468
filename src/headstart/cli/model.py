"""Commands on a saved model: evaluate, predict, report, export, summary."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import HeadstartError
from . import checks
from .fit import precision_option
from .output import print_json, skipped_lines


def _load(args: argparse.Namespace):
    from ..estimator import load

    return load(args.model_dir, cache_dir=args.cache_dir, engine=args.engine, progress=not args.quiet)


def _onnx_file(args: argparse.Namespace) -> Path | None:
    """The ONNX file to run torch-free: an exported file given as such, or the model folder's own ``model.onnx``
    (unless ``--engine torch`` asks for PyTorch, or the folder has none that matches its config)."""
    from ..artifact import deployed_file

    if str(args.model_dir).endswith(".onnx"):
        return Path(args.model_dir)
    return None if args.engine == "torch" else deployed_file(args.model_dir)


def _scorer(args: argparse.Namespace):
    """The model folder as evaluate and report score it: by its own ONNX file, torch-free, when it has one that
    matches its config (and --engine is not torch), else the library's TransferClassifier."""
    onnx = _onnx_file(args)
    if onnx is None:
        return _load(args)
    from ..artifact import read_config
    from ..deploy.folder import FolderModel

    return FolderModel(args.model_dir, onnx, read_config(args.model_dir))


def labelled_data(args: argparse.Namespace):
    """The labelled images to score, read before the model loads: class folders, or (``--labels``) a label CSV, whose
    classes or labels must be the model's."""
    from ..artifact import read_config
    from ..data.folders import evaluation_set, existing_dir

    config = read_config(args.model_dir)
    existing_dir(args.data, "data folder")
    multilabel, names = bool(config.get("multilabel")), config["class_names"]
    if multilabel and not args.labels:
        raise HeadstartError(f"{args.model_dir} gives each image a set of labels: give the images' labels with "
                             "--labels CSV")
    if args.labels and not multilabel:
        raise HeadstartError(f"{args.model_dir} gives each image one class: score it on class folders, without "
                             "--labels")
    if args.labels:
        from ..data.labelfile import label_file, labelled_images

        label_file(args.labels, args.data)
        return labelled_images(args.data, args.labels, names)[0]
    return evaluation_set(args.data, names)


def cmd_evaluate(args: argparse.Namespace) -> None:
    """``headstart evaluate``: metrics of a model on labelled images."""
    images = labelled_data(args)
    result = _scorer(args).evaluate(images)
    if args.json:
        print_json(result)
        return
    if "per_label" in result:
        print("\n".join(_multilabel_lines(result)))
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
    lines += skipped_lines(result["skipped"])
    print("\n".join(lines))


def _multilabel_lines(result: dict) -> list[str]:
    """evaluate's text for a multi-label model: the figures in words, then a row per label."""
    from .fit import multilabel_line

    lines = [f"{result['n_images']} images: {multilabel_line(result)}",
             f"{'label':<24}{'precision':>10}{'recall':>10}{'f1':>10}{'AP':>10}{'n':>8}"]
    for name, m in result["per_label"].items():
        ap = f"{m['ap']:>10.3f}" if m["ap"] is not None else f"{'-':>10}"
        lines.append(f"{name[:23]:<24}{m['precision']:>10.3f}{m['recall']:>10.3f}{m['f1']:>10.3f}{ap}"
                     f"{m['support']:>8}")
    if "n_unfamiliar" in result:
        lines.append(f"unfamiliar: {result['n_unfamiliar']} of {result['n_images']} images")
    return lines + skipped_lines(result["skipped"])


def cmd_predict(args: argparse.Namespace) -> None:
    """``headstart predict``: labels, probabilities and familiarity of images."""
    from ..artifact import read_config
    from ..data.folders import prediction_inputs

    checks.at_least("--top", args.top, 1)
    paths = prediction_inputs(args.inputs)
    if not str(args.model_dir).endswith(".onnx"):
        read_config(args.model_dir)
    file = _onnx_file(args)
    onnx = file is not None
    if onnx:  # an exported file, or the folder's own: ONNX Runtime only, torch is never imported
        from ..deploy.runtime import OnnxClassifier

        clf = OnnxClassifier(file)
    else:
        clf = _load(args)
    loaded = time.perf_counter()
    found = clf.predict_files(paths)
    predicted = time.perf_counter()
    threshold = clf.threshold if onnx else getattr(getattr(clf, "familiarity_", None), "threshold", None)
    from ..deploy.runtime import prediction_entry

    familiarity = found.familiarity if found.familiarity is not None else [None] * len(found.kept)
    multilabel = clf.multilabel if onnx else clf.multilabel_
    chosen = (clf.decide if onnx else clf.head_.decide)(found.proba) if multilabel else [None] * len(found.kept)
    predictions = [{"path": str(paths[i]), **prediction_entry(clf.classes_, row, score, threshold, labels)}
                   for row, i, score, labels in zip(found.proba, found.kept, familiarity, chosen)]
    skipped_list = [{"path": p, "reason": r} for p, r in found.skipped]
    if args.json:
        seconds = {"startup": round(loaded - args.started, 3), "predict": round(predicted - loaded, 3),
                   "command": round(time.perf_counter() - args.started, 3)}  # start-up: imports and the model
        print_json({"predictions": predictions, "n_skipped": len(skipped_list), "skipped": skipped_list,
                    "familiarity_threshold": threshold, "seconds": seconds})
        return
    for p in predictions:
        top = list(p["probabilities"].items())[: args.top]
        mark = (f"\tUNFAMILIAR (familiarity {p['familiarity']:.3f} < {threshold:.3f}: unlike the training images)"
                if p.get("unfamiliar") else "")
        said = f"labels: {', '.join(p['labels']) or '(none)'}\t" if "labels" in p else ""
        print(f"{p['path']}\t{said}" + "  ".join(f"{name} {prob:.3f}" for name, prob in top) + mark)
    for line in skipped_lines(skipped_list):
        print(line, file=sys.stderr)


def cmd_report(args: argparse.Namespace) -> None:
    """``headstart report``: the HTML report of a model on labelled images."""
    from ..report.html import GENERATOR, write_report

    images = labelled_data(args)
    out = checks.output_file(args.out or Path(args.model_dir) / "report.html", args.overwrite, ours=GENERATOR)
    write_report(_scorer(args), images, out, f"headstart: {Path(args.model_dir).name}")
    if args.json:
        print_json({"out": str(out)})
    else:
        print(f"report: {out}")


def cmd_export(args: argparse.Namespace) -> None:
    """``headstart export``: one ONNX or TorchScript file."""
    from ..artifact import read_config
    from ..data.folders import existing_dir, files_under

    config = read_config(args.model_dir)
    precision = args.precision or config.get("precision", "fp32")
    checks.precision(precision, "torch" if args.format == "torchscript" else "onnx")
    if args.calibration is not None and precision != "int8":
        raise HeadstartError("--calibration is for --precision int8")
    calibration = None
    if args.calibration is not None:
        from ..codes.quantize import MIN_CALIBRATION_IMAGES

        calibration = files_under(existing_dir(args.calibration, "calibration folder"))
        if len(calibration) < MIN_CALIBRATION_IMAGES:
            raise HeadstartError(f"--calibration {args.calibration} holds {len(calibration)} file(s); give a folder of "
                                 f"at least {MIN_CALIBRATION_IMAGES} training images")
    out = checks.output_file(args.out or Path(args.model_dir) / f"model.{'onnx' if args.format == 'onnx' else 'pt'}",
                             args.overwrite)
    from ..deploy.export import export

    clf = _load(args)
    export(clf, out, args.format, precision, calibration)
    size = out.stat().st_size / 2**20
    if args.json:
        print_json({"out": str(out), "format": args.format, "precision": precision, "megabytes": round(size, 2)})
    else:
        print(f"exported {args.format} ({precision}): {out} ({size:.1f} MB)")


def cmd_summary(args: argparse.Namespace) -> None:
    """``headstart summary``: the network's blocks and trainable parameters."""
    from ..artifact import read_config
    from ..training.options import FineTuneConfig, parse_layers

    checks.at_least("--num-classes", args.num_classes, 2)
    blocks = FineTuneConfig(strategy=args.strategy, unfreeze=args.unfreeze).unfreeze_blocks()
    checks.weights(args.weights)
    parse_layers(args.layer)
    if args.model_dir:
        read_config(args.model_dir)
    from ..codes.create import create_backbone
    from ..report.summary import format_summary, summarize
    from ..training.module import trainable_prefixes

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

        from ..codes.codesnet import codes_net

        h, w = backbone.preprocess.input_size
        with torch.inference_mode():
            codes_dim = sum(o.shape[1] for o in codes_net(backbone, layers)(torch.zeros(1, h, w, 3,
                                                                                   dtype=torch.uint8)))
    summary = summarize(backbone, strategy, codes_dim, n_classes, trainable)
    summary["codes_layers"] = layers
    if args.json:
        print_json(summary)
    else:
        print(format_summary(summary))


def add_model_commands(sub, common: argparse.ArgumentParser) -> None:
    """The commands that use a saved model: evaluate, predict, report, export, summary."""
    from ..defaults import DEFAULT_MODEL, EXPORT_FORMATS, STRATEGIES

    ev = sub.add_parser("evaluate", parents=[common], help="score a saved model on labelled images")
    ev.add_argument("model_dir")
    ev.add_argument("data", help="folder of class folders (or holding val/); with --labels, a folder of images")
    ev.add_argument("--labels", metavar="CSV", help="a multi-label model: the images' labels (as fit --labels)")
    ev.set_defaults(run=cmd_evaluate)

    pr = sub.add_parser("predict", parents=[common], help="predict classes of image files or folders")
    pr.add_argument("model_dir", help="a saved model folder, or an exported .onnx file")
    pr.add_argument("inputs", nargs="+")
    pr.add_argument("--top", type=int, default=3, help="classes shown per image (text output)")
    pr.set_defaults(run=cmd_predict)

    rp = sub.add_parser("report", parents=[common], help="write a self-contained HTML report on labelled images")
    rp.add_argument("model_dir")
    rp.add_argument("data", help="folder of class folders (or holding val/); with --labels, a folder of images")
    rp.add_argument("--labels", metavar="CSV", help="a multi-label model: the images' labels (as fit --labels)")
    rp.add_argument("--out", help="HTML file to write (default MODEL_DIR/report.html)")
    rp.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    rp.set_defaults(run=cmd_report)

    ex = sub.add_parser("export", parents=[common], help="write a saved model as one ONNX or TorchScript file")
    ex.add_argument("model_dir")
    ex.add_argument("--format", default="onnx", choices=EXPORT_FORMATS)
    ex.add_argument("--out", help="file to write (default MODEL_DIR/model.onnx or model.pt)")
    precision_option(ex, None)
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
