"""`headstart serve` under load, against `headstart predict` on the same files, both in one run (loopback only).

    python bench/serve.py [--data ../shared/data/cats_vs_dogs/val] [--seconds 60] [--requests 20000] [--install]

Prints: offline predict images/s (ONNX Runtime, one process); the server's images/s with 16 concurrent clients
sending single images; p50/p99 latency at half that rate (open loop); errors; 64 clients against a queue of 16 for
30 s (503s only, every 200 checked against predict); RSS growth over --requests requests; 200 malformed requests;
with --install, the size of a serving-only install (torch-free set plus the server) and that it serves.
The clients are a small asyncio HTTP/1.1 client in this process (keep-alive), sharing the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


class Client:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, port: int):
        self.port = port
        self.reader = self.writer = None

    async def post(self, body: bytes, content_type: str = "image/jpeg") -> tuple[int, bytes]:
        """(status, body) of ``POST /predict``; reconnects when the server closed the connection."""
        for _ in range(2):
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            head = (f"POST /predict HTTP/1.1\r\nHost: bench\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode()
            try:
                self.writer.write(head + body)
                await self.writer.drain()
                status_line = await self.reader.readline()
                if not status_line:
                    raise ConnectionError("closed")
                length, close = 0, False
                while (line := await self.reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode().partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                    if name.lower() == "connection" and "close" in value.lower():
                        close = True
                payload = await self.reader.readexactly(length)
                if close:
                    self.writer.close()
                    self.writer = None
                return int(status_line.split()[1]), payload
            except (ConnectionError, asyncio.IncompleteReadError):
                self.writer = None
        return 0, b""


def start_server(model: Path, *options: str) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "headstart.cli", "serve", str(model), "--port", str(port),
                                *options], stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.1)
    return process, port


def png_claiming(width: int, height: int) -> bytes:
    """The first bytes of a decompression bomb: a PNG header claiming ``width`` x ``height`` pixels."""
    chunk = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def closed_loop(port: int, bodies: list[bytes], clients: int, seconds: float, expected: dict | None = None):
    """``clients`` connections sending one image each as fast as answered: (statuses, latencies, wrong answers)."""
    statuses: list[int] = []
    latencies: list[float] = []
    wrong = 0
    end = time.perf_counter() + seconds

    async def run(k: int):
        nonlocal wrong
        client, i = Client(port), k
        while time.perf_counter() < end:
            started = time.perf_counter()
            status, payload = await client.post(bodies[i % len(bodies)])
            latencies.append(time.perf_counter() - started)
            statuses.append(status)
            if status == 200 and expected is not None:
                got = json.loads(payload)["predictions"][0]
                want = expected[i % len(bodies)]
                if got["label"] != want["label"] or max(abs(got["probabilities"][c] - p)
                                                        for c, p in want["probabilities"].items()) > 1e-5:
                    wrong += 1
            i += clients

    await asyncio.gather(*(run(k) for k in range(clients)))
    return statuses, latencies, wrong


async def open_loop(port: int, bodies: list[bytes], rate: float, seconds: float) -> list[float]:
    """Requests started at a fixed ``rate`` (not waiting for answers): each one's latency."""
    latencies: list[float] = []
    pool = [Client(port) for _ in range(64)]
    free = asyncio.Queue()
    for c in pool:
        free.put_nowait(c)

    async def one(i: int):
        client = await free.get()
        started = time.perf_counter()
        await client.post(bodies[i % len(bodies)])
        latencies.append(time.perf_counter() - started)
        free.put_nowait(client)

    tasks, start = [], time.perf_counter()
    for i in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return latencies


def serving_install() -> None:
    """A venv with only what serving needs: its size, and that `headstart serve` starts there without torch."""
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-c", str(ROOT / ".ci/constraints.txt")]
        subprocess.run([*pip, "onnxruntime", "numpy", "pillow", "starlette", "uvicorn[standard]", "python-multipart"],
                       check=True)
        subprocess.run([*pip, "--no-deps", str(ROOT)], check=True)
        size = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file()) / 2**20
        torch = subprocess.run([str(venv / "bin" / "python"), "-c", "import torch"], capture_output=True).returncode
        print(f"serving-only install: {size:.0f} MB in the venv (torch importable: {torch == 0})")


def offline_figures(paths: list[Path], data: str, model: Path) -> tuple[float, dict]:
    """Export a model fitted on ``data``'s training images to ``model``; offline predict's images/s on ``paths`` and
    its answers (what every served answer is checked against)."""
    import headstart
    from headstart.deploy.export import export
    from headstart.deploy.runtime import OnnxClassifier, prediction_entry

    train = Path(data).parent / "train"
    export(headstart.TransferClassifier(C=1.0).fit(train if train.is_dir() else data), model)
    offline = OnnxClassifier(model)
    offline.predict_files(paths[:16])  # warm
    started = time.perf_counter()
    found = offline.predict_files(paths)
    rate = len(found.kept) / (time.perf_counter() - started)
    familiarity = found.familiarity if found.familiarity is not None else [None] * len(found.kept)
    expected = {int(i): prediction_entry(offline.classes_, row, f, offline.threshold)
                for row, i, f in zip(found.proba, found.kept, familiarity)}
    return rate, expected


def under_load(model: Path, bodies: list[bytes], expected: dict, offline_rate: float, seconds: float,
               requests: int) -> None:
    """Throughput, latency at half rate, RSS over many requests and malformed requests, on one server."""
    process, port = start_server(model)
    try:
        asyncio.run(closed_loop(port, bodies, 16, 3))  # warm-up
        statuses, latencies, wrong = asyncio.run(closed_loop(port, bodies, 16, seconds, expected))
        rate = len(statuses) / seconds
        errors = sum(s >= 500 or s == 0 for s in statuses)
        print(f"serve, 16 clients x single images, {seconds:.0f} s: {rate:.1f} images/s = "
              f"{rate / offline_rate:.2f}x offline (goal >= 0.8); errors {errors}, wrong answers {wrong}; "
              f"p50 {np.percentile(latencies, 50) * 1000:.0f} ms at full load", flush=True)
        half = asyncio.run(open_loop(port, bodies, rate / 2, min(seconds, 30)))
        p50, p99 = np.percentile(half, 50), np.percentile(half, 99)
        print(f"at half that rate ({rate / 2:.0f}/s, open loop): p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms "
              f"(p99/p50 {p99 / p50:.1f}, goal <= 4)", flush=True)
        before, sent = rss_mb(process.pid), 0
        while sent < requests:
            sent += len(asyncio.run(closed_loop(port, bodies, 16, 5))[0])
        print(f"RSS over {sent} requests: {before:.0f} -> {rss_mb(process.pid):.0f} MB "
              f"(+{rss_mb(process.pid) - before:.0f} MB, goal <= 50)", flush=True)
        malformed(port, bodies[0], expected[0], process)
    finally:
        process.terminate()
        process.wait()


def malformed(port: int, good: bytes, expected: dict, process: subprocess.Popen) -> None:
    """200 malformed requests of every kind: all 4xx, the server alive, its answers unchanged."""
    kinds = [(b"", "image/png"), (b"not an image", "image/jpeg"), (good[:300], "image/jpeg"), (good, "text/plain"),
             (b"--x\r\nbroken", "multipart/form-data; boundary=x"), (png_claiming(30000, 30000), "image/png"),
             (good, "")]

    async def send():
        client = Client(port)
        return [(await client.post(*kinds[i % len(kinds)]))[0] for i in range(200)]

    codes = asyncio.run(send())
    after = asyncio.run(Client(port).post(good))
    same = json.loads(after[1])["predictions"][0]["label"] == expected["label"]
    print(f"200 malformed requests: {sum(400 <= c < 500 for c in codes)} answered 4xx ({sorted(set(codes))}), "
          f"server alive {process.poll() is None}, answers unchanged {same}", flush=True)


def overloaded(model: Path, bodies: list[bytes], expected: dict) -> None:
    """64 clients against a queue of 16 for 30 s: only 200s (checked) and 503s."""
    process, port = start_server(model, "--max-queue", "16")
    try:
        statuses, _, wrong = asyncio.run(closed_loop(port, bodies, 64, 30, expected))
        counts = {s: statuses.count(s) for s in sorted(set(statuses))}
        alive = asyncio.run(Client(port).post(bodies[0]))[0] == 200
        print(f"64 clients, queue 16, 30 s: status counts {counts}; wrong answers {wrong}; alive afterwards {alive}",
              flush=True)
    finally:
        process.terminate()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(SHARED / "cats_vs_dogs" / "val"))
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--install", action="store_true")
    args = parser.parse_args()

    from headstart.data.folders import files_under

    paths = files_under(Path(args.data))[:400]
    bodies = [p.read_bytes() for p in paths]
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model.onnx"
        offline_rate, expected = offline_figures(paths, args.data, model)
        print(f"{len(paths)} images from {args.data}; offline predict (one process, ONNX Runtime): "
              f"{offline_rate:.1f} images/s", flush=True)
        under_load(model, bodies, expected, offline_rate, args.seconds, args.requests)
        overloaded(model, bodies, expected)
    if args.install:
        serving_install()


if __name__ == "__main__":
    main()
