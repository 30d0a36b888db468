"""``headstart serve``: answers as ``predict`` does (batched), refuses bad input in one line, bounds its queue, needs
a token off loopback, exposes Prometheus metrics and a page that works in Chromium, stops cleanly on SIGTERM, and
never imports torch (every server here runs with torch and timm blocked)."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import pytest

import headstart
from headstart.cli import main

httpx = pytest.importorskip("httpx", reason="the serve extra is not installed (pip install -e '.[dev]')")
pytest.importorskip("starlette", reason="the serve extra is not installed (pip install -e '.[dev]')")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SERVER = ("import sys; sys.modules['torch'] = None; sys.modules['timm'] = None\n"
          "from headstart.cli import main\nsys.exit(main(sys.argv[1:]))")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, colors_data):
    folder = tmp_path_factory.mktemp("serve")
    headstart.TransferClassifier(C=1.0).fit(colors_data / "train").save(folder / "model")
    assert main(["export", str(folder / "model"), "--out", str(folder / "model.onnx"), "-q"]) == 0
    return folder / "model.onnx"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(model: Path, *options: str, env: dict | None = None):
    """A `headstart serve` process on a free loopback port, torch blocked; yields (base URL, process)."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", SERVER, "serve", str(model), "--port", str(port), *options],
                               stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            if process.poll() is not None:
                raise AssertionError(f"server exited: {process.stderr.read()}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def files_form(paths: list[Path]) -> list:
    return [("files", (p.name, p.read_bytes(), "image/png")) for p in paths]


def predict_json(model: Path, paths: list[Path]) -> dict:
    out = subprocess.run([sys.executable, "-m", "headstart.cli", "predict", str(model), *map(str, paths), "--json"],
                         capture_output=True, text=True, check=True)
    return {Path(p["path"]).name: p for p in json.loads(out.stdout)["predictions"]}


def test_batched_answers_equal_predict_and_metrics_parse(exported, colors_data):
    from prometheus_client.parser import text_string_to_metric_families

    paths = sorted((colors_data / "val").rglob("*.png"))
    expected = predict_json(exported, paths)
    with server(exported, "--max-batch", "8", "--max-wait-ms", "200") as (url, _):
        assert httpx.get(f"{url}/readyz").json()["status"] == "ready"
        answers: dict[str, dict] = {}

        def one(path: Path) -> None:  # concurrent single images: batched together
            reply = httpx.post(f"{url}/predict", content=path.read_bytes(), headers={"Content-Type": "image/png"})
            assert reply.status_code == 200, reply.text
            answers[path.name] = reply.json()["predictions"][0]

        threads = [threading.Thread(target=one, args=(p,)) for p in paths]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        many = httpx.post(f"{url}/predict", files=files_form(paths)).json()  # one request, several images
        assert [p["path"] for p in many["predictions"]] == [p.name for p in paths]  # in the order sent
        for p in many["predictions"]:
            answers[p["path"] + "#many"] = p
        metrics = httpx.get(f"{url}/metrics").text
    for key, got in answers.items():
        want = expected[key.split("#")[0]]
        assert got["label"] == want["label"] and got["unfamiliar"] == want["unfamiliar"]
        for name, p in want["probabilities"].items():
            assert abs(got["probabilities"][name] - p) <= 1e-5
        assert abs(got["familiarity"] - want["familiarity"]) <= 1e-4
    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    sizes = families["headstart_batch_size"].samples
    count = next(s.value for s in sizes if s.name.endswith("_count"))
    total = next(s.value for s in sizes if s.name.endswith("_sum"))
    assert total == 2 * len(paths) and count < total  # some batches held several requests' images
    assert {"headstart_requests", "headstart_request_seconds", "headstart_errors",
            "headstart_requests_in_flight"} <= set(families)


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG header that claims ``width`` x ``height`` pixels (a decompression bomb's first bytes)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))


def test_malformed_requests_get_4xx_with_a_reason_and_change_nothing(exported, colors_data):
    good = sorted((colors_data / "val").rglob("*.png"))[0]
    jpeg = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 40, 40)).save(jpeg, "JPEG")
    bad = {
        "empty": (b"", "image/png", 422),
        "text": (b"hello, not an image", "image/jpeg", 422),
        "truncated": (jpeg.getvalue()[:200], "image/jpeg", 422),
        "bomb": (_png_claiming(30000, 30000), "image/png", 422),
        "wrong type": (good.read_bytes(), "text/plain", 415),
        "no type": (good.read_bytes(), "", 415),
        "too large": (b"\0" * (2 * 2**20), "image/png", 413),
        "bad multipart": (b"--x\r\nnonsense", "multipart/form-data; boundary=x", 400),
        "no boundary": (b"abc", "multipart/form-data", 400),
    }
    with server(exported, "--max-body-mb", "1") as (url, process):
        before = httpx.post(f"{url}/predict", files=files_form([good])).json()["predictions"][0]
        for kind, (body, content_type, status) in bad.items():
            headers = {"Content-Type": content_type} if content_type else {}
            for _ in range(20):  # 200 malformed requests in all
                reply = httpx.post(f"{url}/predict", content=body, headers=headers)
                assert reply.status_code == status, (kind, reply.status_code, reply.text)
                reason = reply.json()["error"]
                assert reason and "\n" not in reason, kind
        mixed = httpx.post(f"{url}/predict", files=[("files", ("x.jpg", b"broken", "image/jpeg")),
                                                    *files_form([good])])
        assert mixed.status_code == 200
        first, second = mixed.json()["predictions"]
        assert first["status"] == 422 and "image" in first["error"] and second["label"] == before["label"]
        assert httpx.post(f"{url}/predict", files=[("photo", ("a.png", good.read_bytes()))]).status_code == 400
        after = httpx.post(f"{url}/predict", files=files_form([good])).json()["predictions"][0]
        assert after == before and process.poll() is None
        errors = httpx.get(f"{url}/metrics").text
        assert 'headstart_errors_total{kind="too_large"} 20' in errors


def _whole_reply(connection: socket.socket) -> str:
    """Every byte of one HTTP reply: its headers, then as much body as its Content-Length says (it may come in
    several TCP segments), or until the server closes."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(4096)
        if not chunk:
            return data.decode(errors="replace")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), None)
    while length is None or len(body) < length:
        chunk = connection.recv(4096)
        if not chunk:
            break
        body += chunk
    return (head + b"\r\n\r\n" + body).decode(errors="replace")


def test_a_slow_client_gets_408_and_frees_its_place(exported, colors_data):
    image = sorted((colors_data / "val").rglob("*.png"))[0].read_bytes()
    with server(exported, "--timeout-s", "1", "--max-queue", "1") as (url, _):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as slow:
            slow.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                         + f"Content-Length: {len(image)}\r\n\r\n".encode() + image[:100])  # then nothing
            slow.settimeout(10)
            started = time.perf_counter()
            reply = _whole_reply(slow)
        assert reply.startswith("HTTP/1.1 408") and "took longer than 1 s" in reply
        assert time.perf_counter() - started < 5
        ok = httpx.post(f"{url}/predict", content=image, headers={"Content-Type": "image/png"})
        assert ok.status_code == 200  # its place in the queue of one was given back


def test_a_full_queue_answers_503_with_retry_after(exported, colors_data):
    image = sorted((colors_data / "val").rglob("*.png"))[0].read_bytes()
    headers = {"Content-Type": "image/png"}
    with server(exported, "--max-queue", "1", "--max-batch", "4", "--max-wait-ms", "1500") as (url, process):
        held = threading.Thread(target=lambda: httpx.post(f"{url}/predict", content=image, headers=headers,
                                                          timeout=30))
        held.start()  # waits 1.5 s for a batch to fill: in flight the whole time
        time.sleep(0.5)
        busy = httpx.post(f"{url}/predict", content=image, headers=headers)
        held.join()
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "1" and "busy" in busy.json()["error"]
        assert httpx.post(f"{url}/predict", content=image, headers=headers, timeout=30).status_code == 200
        assert process.poll() is None


def test_a_token_is_required_off_loopback_and_checked_on_every_route(exported, colors_data, capsys):
    assert main(["serve", str(exported), "--host", "0.0.0.0", "--port", str(free_port())]) == 2
    assert "without a token" in capsys.readouterr().err
    image = sorted((colors_data / "val").rglob("*.png"))[0].read_bytes()
    with server(exported, env={"HEADSTART_TOKEN": "s3cret-token"}) as (url, _):
        assert httpx.get(f"{url}/healthz").status_code == 200
        for route in ("/", "/readyz", "/metrics", "/openapi.json"):
            assert httpx.get(f"{url}{route}").status_code == 401, route
        headers = {"Content-Type": "image/png"}
        assert httpx.post(f"{url}/predict", content=image, headers=headers).status_code == 401
        wrong = httpx.post(f"{url}/predict", content=image, headers={**headers, "Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
        right = httpx.post(f"{url}/predict", content=image,
                           headers={**headers, "Authorization": "Bearer s3cret-token"})
        assert right.status_code == 200


def test_options_are_checked_before_the_model_is_loaded(tmp_path, capsys):
    missing = str(tmp_path / "nothing.onnx")
    for options, words in ((["--max-batch", "0"], "--max-batch"), (["--max-body-mb", "-1"], "--max-body-mb"),
                           (["--port", "70000"], "--port"),
                           (["--host", "no.such.host.invalid", "--token", "t0ken"], "--host")):
        assert main(["serve", missing, *options]) == 2
        assert words in capsys.readouterr().err
    assert main(["serve", missing, "--port", str(free_port())]) == 2
    assert "does not exist" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["serve", missing, "--port", str(taken.getsockname()[1])]) == 2
        assert "cannot listen" in capsys.readouterr().err


def test_sigterm_finishes_the_requests_in_flight(exported, colors_data):
    paths = sorted((colors_data / "val").rglob("*.png"))[:3]
    with server(exported, "--max-batch", "8", "--max-wait-ms", "1500") as (url, process):
        replies: list[int] = []

        def one(path: Path) -> None:
            reply = httpx.post(f"{url}/predict", content=path.read_bytes(), headers={"Content-Type": "image/png"},
                               timeout=30)
            replies.append(reply.status_code)

        threads = [threading.Thread(target=one, args=(p,)) for p in paths]
        for t in threads:
            t.start()
        time.sleep(0.5)  # the three wait for their batch
        process.send_signal(signal.SIGTERM)
        for t in threads:
            t.join()
        assert process.wait(timeout=30) == 0
    assert replies == [200] * 3


def test_a_model_folder_is_served_from_its_own_onnx_file_or_exported_once_into_the_cache(exported, tmp_path):
    from headstart.cli.serve import served_file

    folder = exported.parent / "model"
    assert served_file(str(folder), str(tmp_path / "cache")) == folder / "model.onnx"  # saved with the folder
    older = tmp_path / "older"  # a folder saved before model folders held their ONNX file
    shutil.copytree(folder, older)
    (older / "model.onnx").unlink()
    first = served_file(str(older), str(tmp_path / "cache"))
    stamp = first.stat().st_mtime_ns
    assert first.parent == tmp_path / "cache" / "serve"
    assert served_file(str(older), str(tmp_path / "cache")) == first and first.stat().st_mtime_ns == stamp
    with server(first) as (url, _):
        assert httpx.get(f"{url}/readyz").status_code == 200


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (.ci/run installs Debian's)")
def test_the_page_shows_a_picked_image_label_in_chromium(exported, colors_data, tmp_path):
    from websockets.sync.client import connect

    image = sorted((colors_data / "val" / "red").rglob("*.png"))[0]
    with server(exported) as (url, _):
        port = free_port()
        browser = subprocess.Popen([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                                    "--no-first-run", "--disable-background-networking", "--disable-component-update",
                                    "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
                                    f"--remote-debugging-port={port}", f"{url}/"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            def page_target():
                try:
                    pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json").json() if t["type"] == "page"]
                except httpx.TransportError:
                    return None
                return pages[0] if pages and pages[0]["url"].startswith(url) else None

            target = until(page_target)  # a cold Chromium on a busy machine takes seconds to start
            assert target, "Chromium never opened the page"
            with connect(target["webSocketDebuggerUrl"], max_size=None) as ws:
                ids = iter(range(1, 10_000))

                def call(method: str, **params):
                    n = next(ids)
                    ws.send(json.dumps({"id": n, "method": method, "params": params}))
                    while True:
                        message = json.loads(ws.recv(timeout=30))
                        if message.get("id") == n:
                            return message.get("result", {})

                def evaluate(expression: str):  # None while the page is still loading (no context yet)
                    answer = call("Runtime.evaluate", expression=expression, returnByValue=True)
                    return answer.get("result", {}).get("value")

                def file_input():  # None until the page's own document (not the blank one before it) is up
                    if not evaluate("document.readyState == 'complete' && !!document.getElementById('files')"):
                        return None
                    root = call("DOM.getDocument").get("root", {}).get("nodeId")
                    return root and call("DOM.querySelector", nodeId=root, selector="#files").get("nodeId")

                node = until(file_input)
                assert node, "the page never loaded"
                call("DOM.setFileInputFiles", nodeId=node, files=[str(image)])  # a person picking the file
                label = until(lambda: evaluate("(document.querySelector('.result .label') || {}).textContent"))
                status = evaluate("document.getElementById('status').textContent")
                assert label == "red", f"picked image: label {label!r}, status {status!r}"
                dropped = base64.b64encode(image.read_bytes()).decode()
                evaluate(  # and dropping one: a DataTransfer holding the file, dropped on the zone
                    f"(() => {{ const b = Uint8Array.from(atob('{dropped}'), c => c.charCodeAt(0));"
                    "const t = new DataTransfer(); t.items.add(new File([b], 'dropped.png', {type: 'image/png'}));"
                    "document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: t}));})()")
                count = until(lambda: evaluate("document.querySelectorAll('.result .label').length") == 2)
                status = evaluate("document.getElementById('status').textContent")
                assert count, f"dropped image: no second answer, status {status!r}"
        finally:
            browser.kill()
            browser.wait()


def until(check, seconds: float = 60.0):
    """Poll `check` until it gives something true or `seconds` pass; its last answer."""
    deadline = time.monotonic() + seconds
    while not (answer := check()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return answer
