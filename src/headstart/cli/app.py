"""The command line: parse, call the API, print human text or --json. User mistakes exit non-zero in one line."""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

from ..errors import HeadstartError
from .data import add_data_commands
from .fit import add_fit, training_dir
from .model import add_model_commands
from .output import one_line_warning, version
from .serve import add_parser as add_serve


class OneLineParser(argparse.ArgumentParser):
    """Usage mistakes in one line, with where to look, instead of argparse's usage block."""

    def error(self, message: str):
        """A usage mistake in one line, exit status 2."""
        self.exit(2, f"headstart: error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command."""
    from ..defaults import ENGINES

    parser = OneLineParser(prog="headstart", description="Transfer learning on image folders.")
    parser.add_argument("--version", action="version", version=f"headstart {version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cache-dir", help="where CNN codes are cached (default $HEADSTART_CACHE_DIR or "
                                            "~/.cache/headstart)")
    common.add_argument("--engine", default="auto", choices=ENGINES, help="runtime for the network (default auto: "
                                                                          "onnx on CPU, torch on CUDA)")
    common.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    common.add_argument("--verbose", action="store_true", help="also the training framework's own messages")
    common.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    add_fit(sub, common)
    add_model_commands(sub, common)
    add_data_commands(sub, common)
    add_serve(sub, common)
    return parser


#: Modules of the training stack; a deployment installed without them can still predict from an exported .onnx file.
TRAINING_STACK = ("torch", "torchvision", "timm", "lightning", "sklearn", "scipy", "safetensors", "onnx")


def console() -> None:
    """The ``headstart`` script and ``python -m headstart``: :func:`main`, then exit.

    With torch loaded, the process ends without the interpreter's teardown of torch and timm, about 1.1 s of every
    such command here: other threads are joined, exit handlers run and output is flushed as at a normal exit; only
    the freeing of memory is left to the operating system.
    """
    code = main()
    if "torch" in sys.modules:
        import atexit
        import threading

        for thread in threading.enumerate():
            if thread is not threading.main_thread() and not thread.daemon:
                thread.join()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv``); the exit status. User mistakes exit non-zero with
    one line."""
    started = time.perf_counter()  # `fit`'s time line counts the whole command from here
    args = build_parser().parse_args(argv)
    args.started = started
    warnings.showwarning = one_line_warning
    try:
        args.run(args)
    except HeadstartError as exc:
        print(f"headstart: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in TRAINING_STACK:
            raise
        print(f"headstart: error: `headstart {args.command}` needs the training stack ({exc.name} is not installed): "
              "pip install the project with its dependencies; without them, predict and serve (an exported .onnx "
              "file or a model folder), evaluate and report (a model folder) work",
              file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        from ..disk import is_write_fault, reason_of

        if not is_write_fault(exc):
            raise
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"headstart: error: cannot write {where}{reason_of(exc)}; free some space or choose another folder",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = getattr(args, "resume_hint", None)
        training = hint and (training_dir(Path(hint.split(" --resume ", 1)[1])) / "run.json").is_file()
        print("headstart: interrupted; " + (f"resume with `{hint}`" if training else
                                            "run the same command again (the CNN codes computed so far are cached)"),
              file=sys.stderr)
        return 130
    return 0
