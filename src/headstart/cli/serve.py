"""``headstart serve MODEL``: every option checked (and the port tried) before the model is loaded, then the server.

The serving process never imports torch: an exported ``.onnx`` is served as it is; a model folder is exported once
(by ``headstart export`` in a child process) into the cache and served from there.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from ..errors import HeadstartError
from . import checks

LOOPBACK_NAMES = ("localhost", "ip6-localhost")


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    """Register ``serve`` with the command line's subparsers."""
    sv = sub.add_parser("serve", parents=[common], help="answer predictions over HTTP (POST /predict), batching "
                                                        "concurrent requests")
    sv.add_argument("model_dir", metavar="MODEL", help="a model folder or an exported .onnx file (fp32 or int8)")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback; any other needs --token)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--max-batch", type=int, default=4, help="images run through the network together (default 4: on "
                                                               "CPUs larger batches are no faster and answer later)")
    sv.add_argument("--max-wait-ms", type=float, default=2.0,
                    help="how long a batch waits for more images after its first (default 2)")
    sv.add_argument("--max-queue", type=int, default=64,
                    help="prediction requests in flight at once; beyond it 503 with Retry-After (default 64)")
    sv.add_argument("--max-body-mb", type=float, default=20.0, help="largest request body; beyond it 413 (default 20)")
    sv.add_argument("--timeout-s", type=float, default=30.0,
                    help="a request body must arrive within this many seconds; else 408 (default 30)")
    sv.add_argument("--token", help="require 'Authorization: Bearer TOKEN' on every route but /healthz "
                                    "(default $HEADSTART_TOKEN)")
    sv.set_defaults(run=cmd_serve)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_port(host: str, port: int) -> None:
    """A one-line error unless ``host:port`` can be bound now."""
    if not 1 <= port <= 65535:
        raise HeadstartError(f"--port must be between 1 and 65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise HeadstartError(f"--host {host!r} is not an address of this machine ({exc.strerror})") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise HeadstartError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port or "
                                 "--host") from None


def served_file(model: str, cache_dir: str | None) -> Path:
    """The ONNX file to serve: ``model`` itself, a model folder's own ``model.onnx``, or (folders saved without one)
    its export, made once and kept in the cache."""
    from ..artifact import CONFIG, deployed_file, read_config
    from ..disk import cache_folder, file_identity, write_atomic

    path = Path(model).expanduser()
    if path.suffix == ".onnx":
        if not path.is_file():
            raise HeadstartError(f"{str(path)!r} does not exist; give a model folder or a file from `headstart export`")
        return path
    read_config(path)  # a one-line error unless it is a model folder
    own = deployed_file(path)
    if own is not None:  # saved with the folder
        return own
    identity = "|".join(str(file_identity(p)) for p in sorted(path.iterdir()) if p.is_file())
    key = hashlib.sha256((identity + (path / CONFIG).read_text()).encode()).hexdigest()[:24]
    folder = cache_folder(cache_dir or None) / "serve"
    out = folder / f"{path.resolve().name}-{key}.onnx"
    if out.is_file():
        return out
    folder.mkdir(parents=True, exist_ok=True)
    staged = folder / f".{out.name}.{os.getpid()}.onnx"
    command = [sys.executable, "-m", "headstart.cli", "export", str(path), "--out", str(staged), "-q", "--overwrite"]
    if cache_dir:
        command += ["--cache-dir", cache_dir]
    print(f"exporting {path} to ONNX once (kept as {out})", file=sys.stderr)
    done = subprocess.run(command, capture_output=True, text=True)
    try:
        if done.returncode:
            reason = (done.stderr.strip().splitlines() or ["export failed"])[-1].removeprefix("headstart: error: ")
            if "training stack" in reason:
                reason = ("serving a model folder exports it once, which needs the training stack (torch); run "
                          "`headstart export MODEL` where it is installed and serve the .onnx file")
            raise HeadstartError(reason)
        write_atomic(out, staged.read_bytes())
    finally:
        staged.unlink(missing_ok=True)
    return out


def cmd_serve(args: argparse.Namespace) -> None:
    """``headstart serve``: an exported model behind HTTP, torch-free."""
    from ..deploy.server import ServeSettings

    for option, value in (("--max-batch", args.max_batch), ("--max-queue", args.max_queue)):
        checks.at_least(option, value, 1)
    checks.at_least("--max-wait-ms", args.max_wait_ms, 0)
    for option, value in (("--max-body-mb", args.max_body_mb), ("--timeout-s", args.timeout_s)):
        checks.positive(option, value)
    token = args.token or os.environ.get("HEADSTART_TOKEN") or None
    if not is_loopback(args.host) and not token:
        raise HeadstartError(f"refusing to serve on {args.host} without a token: anyone who reaches it could use the "
                             "model; pass --token (or set HEADSTART_TOKEN), or bind to 127.0.0.1")
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ModuleNotFoundError as exc:
        raise HeadstartError(f"`headstart serve` needs {exc.name}: pip install 'headstart[serve]'") from None
    check_port(args.host, args.port)
    settings = ServeSettings(args.max_batch, args.max_wait_ms, args.max_queue, args.max_body_mb, token,
                             args.timeout_s)
    path = served_file(args.model_dir, args.cache_dir)
    from ..deploy.runtime import OnnxClassifier
    from ..deploy.server import create_app

    model = OnnxClassifier(path)
    name = Path(args.model_dir).expanduser().resolve().name.removesuffix(".onnx")
    app = create_app(model, settings, name)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"serving {name} ({len(model.classes_)} classes) on http://{shown}:{args.port} "
          f"(POST /predict; max batch {args.max_batch}, queue {args.max_queue}"
          f"{', token required' if token else ''}); Ctrl-C or SIGTERM stops after the requests in flight",
          file=sys.stderr, flush=True)
    # uvicorn stops gracefully on SIGINT/SIGTERM, then raises the signal again for the handler it found: these
    # handlers take it, so a requested stop exits 0 rather than as killed
    caught = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False, timeout_keep_alive=5,
                    limit_concurrency=4 * args.max_queue + 16, timeout_graceful_shutdown=max(60.0, 2 * args.timeout_s))
    finally:
        for sig, handler in caught.items():
            signal.signal(sig, handler)
    print("stopped after answering the requests in flight", file=sys.stderr)
