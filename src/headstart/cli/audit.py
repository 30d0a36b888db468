"""``headstart audit DATA``: every option checked before any image is read, then the audit and its outputs."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..auditing.outputs import CSV_COLUMNS
from ..errors import DataError, HeadstartError
from ..report.audit_page import PAGE_MARKER


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    """Register ``audit`` with the command line's subparsers."""
    from ..defaults import AUTO_MODELS

    au = sub.add_parser("audit", parents=[common], help="find duplicates, leaks between splits, likely label "
                                                        "errors, outliers and unusable images in DATA")
    au.add_argument("data", help="folder of class folders (or with train/ and val/ inside), or a plain folder of "
                                 "images (then only what needs no labels)")
    au.add_argument("--val", help="a separate validation folder of class folders (checked for leaks)")
    au.add_argument("--model", help="the networks, joined by commas (default: those auto compares, "
                                     f"{','.join(AUTO_MODELS)}): the first one's codes compare images, and every "
                                     "network's out-of-fold probabilities are averaged to judge labels")
    au.add_argument("--weights")
    au.add_argument("--batch-size", type=int)
    au.add_argument("--seed", type=int, default=0)
    au.add_argument("--out", help="HTML page to write (thumbnails side by side), e.g. audit.html")
    au.add_argument("--csv", help="CSV to write: one row per finding (path,issue,score,other,action); "
                                  "`fit --exclude` takes it")
    au.add_argument("--suggest", metavar="FILE", help="CSV to write: the likely label errors as path,label,given,"
                                                      "score (the suggested label), to edit and pass to "
                                                      "`fit --relabel`")
    au.add_argument("--overwrite", action="store_true", help="replace existing --out / --csv / --suggest files")
    au.set_defaults(run=cmd_audit)


def _output(path: str | None, option: str, overwrite: bool, marker: str | None, inputs: list[Path]) -> Path | None:
    """An output file: not inside the audited folders, replaced only when ours or with --overwrite, creatable."""
    from .checks import output_file

    if path is None:
        return None
    out = Path(path).expanduser()
    for folder in inputs:
        if out.resolve().is_relative_to(folder.resolve()):
            raise DataError(f"{option} {str(out)!r} is inside the audited folder {str(folder)!r}, which is never "
                            "written to; write it elsewhere")
    return output_file(out, overwrite, marker, option)


def cmd_audit(args: argparse.Namespace) -> None:
    """Check, audit, write the outputs, print the summary (or --json)."""
    from ..data.folders import existing_dir
    from .checks import at_least, weights

    at_least("--batch-size", args.batch_size, 1)
    at_least("--seed", args.seed, 0)
    data = existing_dir(args.data, "data folder")
    inputs = [data] + ([existing_dir(args.val, "validation folder")] if args.val else [])
    weights(args.weights)
    page = _output(args.out, "--out", args.overwrite, PAGE_MARKER, inputs)
    table = _output(args.csv, "--csv", args.overwrite, ",".join(CSV_COLUMNS), inputs)
    suggest = _output(args.suggest, "--suggest", args.overwrite, None, inputs)  # edited by hand: never ours to replace
    named = {"--out": page, "--csv": table, "--suggest": suggest}
    written = [(option, out.resolve()) for option, out in named.items() if out is not None]
    for i, (option, out) in enumerate(written):
        twin = next((other for other, path in written[i + 1:] if path == out), None)
        if twin:
            raise HeadstartError(f"{option} and {twin} name the same file; give each its own name")
    from ..auditing.run import audit, audit_inputs

    train, val, how = audit_inputs(data, args.val)  # class folders read and checked (empty ones refused)
    from ..codes.backbones import check_model_name

    if args.model is not None:
        check_model_name(args.model)
    result = audit(data, train_images=train, val_images=val, model=args.model, weights=args.weights,
                   cache_dir=args.cache_dir, engine=args.engine, batch_size=args.batch_size, seed=args.seed,
                   progress=not args.quiet)
    result["data"]["split"] = how
    from ..auditing.outputs import summary_lines, write_csv, write_suggestions
    from ..report.audit_page import write_page

    if table is not None:
        result["csv"] = str(write_csv(result, table))
    if suggest is not None:
        result["suggestions"] = str(write_suggestions(result, suggest))
    if page is not None:
        result["page"] = str(write_page(result, page, f"headstart audit: {data.resolve().name}"))
    if args.json:
        from .output import print_json

        print_json(result)
        return
    lines = summary_lines(result)
    written = (("csv", "csv"), ("page", "page"), ("suggestions", "relabel list to edit"))
    lines += [f"{name}: {result[key]}" for key, name in written if key in result]
    print("\n".join(lines))
