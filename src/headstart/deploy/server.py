"""``headstart serve``: an exported model behind HTTP (Starlette on uvicorn), torch-free.

Requests are guarded before their body is read (token, queue, declared size), bodies are read with a size cap and a
deadline, images are decoded on a thread pool and run through the network in dynamic batches (:mod:`.batcher`).
Every refusal is a 4xx or 503 with a one-line reason in ``{"error": ...}``. No route reads or writes a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..codes.session import onnx_session
from ..data.decode import ImageSkipped, open_rgb
from .batcher import Batcher
from .metrics import BATCH_BUCKETS, LATENCY_BUCKETS, Metrics
from .page import OPENAPI, PAGE
from .runtime import OnnxClassifier, prediction_entry

#: images one request may carry
MAX_FILES = 256
ROUTES = ("/", "/predict", "/healthz", "/readyz", "/metrics", "/openapi.json")


@dataclass(frozen=True)
class ServeSettings:
    """The server's limits (the CLI's options, checked there)."""

    max_batch: int = 4
    max_wait_ms: float = 2.0
    max_queue: int = 64
    max_body_mb: float = 20.0
    token: str | None = None
    timeout_s: float = 30.0
    decode_threads: int = os.cpu_count() or 2
    #: ONNX Runtime sessions running batches side by side, the cores split between them (measured here on 2 cores:
    #: two single-threaded sessions 344 images/s, one with two threads 322)
    sessions: int = min(2, os.cpu_count() or 1)


class Refused(Exception):
    """A request refused with ``status`` and a one-line reason; ``kind`` labels it in the metrics."""

    def __init__(self, status: int, kind: str, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status, self.kind, self.reason, self.headers = status, kind, reason, headers or {}


class Guard:
    """ASGI middleware: the token, the queue bound, body size and deadline, and request metrics."""

    def __init__(self, app, settings: ServeSettings, metrics: Metrics, state: dict):
        self.app, self.settings, self.metrics, self.state = app, settings, metrics, state
        self.expected = f"Bearer {settings.token}".encode() if settings.token else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, started, status = scope["path"], time.perf_counter(), [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        predicting = path == "/predict"
        try:
            self._check(scope, path)
            if predicting:
                self.state["in_flight"] += 1
                self.metrics.set("headstart_requests_in_flight", self.state["in_flight"])
            try:
                await self.app(scope, self._bounded(receive) if predicting else receive, send_status)
            finally:
                if predicting:
                    self.state["in_flight"] -= 1
                    self.metrics.set("headstart_requests_in_flight", self.state["in_flight"])
        except Refused as refused:
            await refusal(refused, self.metrics)(scope, receive, send_status)
        finally:
            if status[0] >= 500 and status[0] != 503:
                self.metrics.inc("headstart_errors_total", kind="internal")
            route = path if path in ROUTES else "other"
            self.metrics.inc("headstart_requests_total", route=route, code=str(status[0]))
            self.metrics.observe("headstart_request_seconds", time.perf_counter() - started, LATENCY_BUCKETS,
                                 route=route)

    def _check(self, scope, path: str) -> None:
        headers = dict(scope["headers"])
        if self.expected is not None and path != "/healthz":
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                raise Refused(401, "unauthorized", "missing or wrong token: send 'Authorization: Bearer <token>'",
                              {"WWW-Authenticate": "Bearer"})
        if path != "/predict":
            return
        if self.state["in_flight"] >= self.settings.max_queue:
            raise Refused(503, "queue_full", f"busy: {self.settings.max_queue} requests are in flight; retry shortly",
                          {"Retry-After": "1"})
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.settings.max_body_mb * 2**20:
            raise Refused(413, "too_large", f"the body is {int(declared) / 2**20:.1f} MB, over --max-body-mb "
                                            f"{self.settings.max_body_mb:g}")

    def _bounded(self, receive):
        """``receive`` with a size cap and a deadline on the body (a slow client cannot hold a worker)."""
        limit, timeout = self.settings.max_body_mb * 2**20, self.settings.timeout_s
        deadline = asyncio.get_running_loop().time() + timeout
        read, done = 0, False

        async def bounded():
            nonlocal read, done
            if done:
                return await receive()
            left = deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(receive(), max(left, 0.0))
            except asyncio.TimeoutError:
                raise Refused(408, "timeout", f"the body took longer than {timeout:g} s to arrive") from None
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                done = not message.get("more_body", False)
                if read > limit:
                    raise Refused(413, "too_large", f"the body is over --max-body-mb {self.settings.max_body_mb:g}")
            return message

        return bounded


def refusal(refused: Refused, metrics: Metrics):
    """The JSON response for a refused request (counted by kind)."""
    from starlette.responses import JSONResponse

    metrics.inc("headstart_errors_total", kind=refused.kind)
    return JSONResponse({"error": refused.reason}, refused.status, headers=refused.headers)


def parse_multipart(body: bytes, content_type: str) -> list[tuple[str, str | None, bytes]]:
    """(field name, file name, bytes) of each part of a multipart/form-data body, in memory."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if not boundary:
        raise Refused(400, "bad_request", "multipart body without a boundary")
    parts: list[tuple[str, str | None, bytes]] = []
    field, value, headers, data = bytearray(), bytearray(), {}, bytearray()

    def header_end() -> None:
        headers[bytes(field).lower()] = bytes(value)
        field.clear()
        value.clear()

    def part_end() -> None:
        options = parse_options_header(headers.get(b"content-disposition", b""))[1]
        name, filename = options.get(b"name", b""), options.get(b"filename")
        parts.append((name.decode(errors="replace"), filename.decode(errors="replace") if filename else None,
                      bytes(data)))
        headers.clear()
        data.clear()

    parser = MultipartParser(boundary, callbacks={
        "on_header_field": lambda b, s, e: field.extend(b[s:e]),
        "on_header_value": lambda b, s, e: value.extend(b[s:e]),
        "on_header_end": header_end, "on_part_data": lambda b, s, e: data.extend(b[s:e]), "on_part_end": part_end})
    try:
        parser.write(body)
        parser.finalize()
    except Exception as exc:
        raise Refused(400, "bad_request", f"malformed multipart body ({exc})") from None
    return parts


async def images_of(request) -> list[tuple[str | None, bytes]]:
    """(file name, bytes) of each image a request sends: multipart field ``files``, or one raw image body."""
    kind = request.headers.get("content-type", "")
    if not (kind.startswith("multipart/form-data") or kind.startswith("image/")):
        raise Refused(415, "unsupported_type", f"cannot read a {kind or 'body without Content-Type'}: send "
                                               "multipart/form-data (field 'files') or one image with Content-Type "
                                               "image/jpeg, image/png, ...")
    body = await request.body()
    if kind.startswith("image/"):
        return [(None, body)]
    parts = parse_multipart(body, kind)
    files = [(filename, data) for name, filename, data in parts if name == "files"]
    if not files:
        raise Refused(400, "bad_request", "no images: send them in the multipart field 'files'")
    if len(files) > MAX_FILES:
        raise Refused(413, "too_large", f"{len(files)} images in one request; send at most {MAX_FILES}")
    return files


def decoder(model: OnnxClassifier):
    """Bytes to the model's preprocessed uint8 image, or the reason it cannot be used."""

    def decode(data: bytes) -> np.ndarray | str:
        if not data:
            return "empty file (0 bytes)"
        try:
            return model.preprocess(open_rgb(io.BytesIO(data), min_short_side=model.preprocess.scale_size))
        except ImageSkipped as exc:
            return str(exc)

    return decode


def server_metrics() -> Metrics:
    """The metrics ``GET /metrics`` shows, described."""
    metrics = Metrics()
    metrics.describe("headstart_requests_total", "counter", "Requests by route and status code.")
    metrics.describe("headstart_request_seconds", "histogram", "Request latency in seconds, by route.")
    metrics.describe("headstart_batch_size", "histogram", "Images per batch run through the network.")
    metrics.describe("headstart_batch_seconds", "histogram", "Seconds per batch in the network.")
    metrics.describe("headstart_requests_in_flight", "gauge", "Prediction requests being read, decoded or run.")
    metrics.describe("headstart_images_waiting", "gauge", "Decoded images waiting for a batch.")
    metrics.describe("headstart_errors_total", "counter", "Refused requests and unusable images, by kind.")
    metrics.describe("headstart_images_total", "counter", "Images answered.")
    metrics.set("headstart_requests_in_flight", 0)
    return metrics


def batcher_for(model: OnnxClassifier, settings: ServeSettings, metrics: Metrics) -> Batcher:
    """Dynamic batching over ``settings.sessions`` sessions of the model, the cores split between them."""
    threads = max(1, (os.cpu_count() or 1) // settings.sessions)
    sessions = [model.session] if settings.sessions == 1 else [onnx_session(model.path, threads)
                                                               for _ in range(settings.sessions)]

    def network(session):
        return lambda batch: session.run(model.outputs, {"images": batch})

    def on_batch(size: int, seconds: float) -> None:
        metrics.observe("headstart_batch_size", size, BATCH_BUCKETS)
        metrics.observe("headstart_batch_seconds", seconds, LATENCY_BUCKETS)

    return Batcher([network(session) for session in sessions], settings.max_batch, settings.max_wait_ms, on_batch)


def answers(model: OnnxClassifier, files: list[tuple[str | None, bytes]], decoded: list[np.ndarray | str],
            outputs: dict[int, tuple[np.ndarray, ...]], metrics: Metrics) -> list[dict]:
    """Each image's entry, in the order sent: its prediction, or why it could not be used."""
    entries = []
    for i, (filename, _) in enumerate(files):
        if i in outputs:
            out = outputs[i]
            familiarity = out[-1] if len(out) > 1 else None
            chosen = model.decide(out[0][None])[0] if model.multilabel else None
            entries.append({"path": filename, **prediction_entry(model.classes_, out[0], familiarity,
                                                                 model.threshold, chosen)})
        else:
            metrics.inc("headstart_errors_total", kind="bad_image")
            entries.append({"path": filename, "error": decoded[i], "status": 422})
    return entries


def create_app(model: OnnxClassifier, settings: ServeSettings, name: str):
    """The ASGI application serving ``model`` (named ``name`` in answers)."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    metrics = server_metrics()
    state = {"in_flight": 0, "ready": False, "name": name}
    batcher = batcher_for(model, settings, metrics)
    pool = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="headstart-decode")
    decode = decoder(model)

    async def predict(request):
        files = await images_of(request)
        loop = asyncio.get_running_loop()
        decoded = await asyncio.gather(*(loop.run_in_executor(pool, decode, data) for _, data in files))
        usable = [i for i, d in enumerate(decoded) if not isinstance(d, str)]
        outputs = await batcher.predict([decoded[i] for i in usable]) if usable else []
        metrics.set("headstart_images_waiting", batcher.waiting)
        metrics.inc("headstart_images_total", len(usable))
        body = {"model": name, "predictions": answers(model, files, decoded, dict(zip(usable, outputs)), metrics)}
        if not usable:
            body["error"] = f"no usable image: {decoded[0]}"
        return JSONResponse(body, 200 if usable else 422)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        state["ready"] = True
        try:
            yield
        finally:
            state["ready"] = False
            await batcher.stop()
            pool.shutdown(wait=True)

    async def refused(request, exc: Refused):
        return refusal(exc, metrics)

    app = Starlette(routes=[Route("/", page), Route("/predict", predict, methods=["POST"]),
                            Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics_text),
                            Route("/openapi.json", openapi)],
                    exception_handlers={Refused: refused}, lifespan=lifespan)
    app.add_middleware(Guard, settings=settings, metrics=metrics, state=state)
    app.state.metrics, app.state.batcher, app.state.serving = metrics, batcher, state
    return app


async def page(request):
    """``GET /``: the page to drop or pick images on."""
    from starlette.responses import HTMLResponse

    return HTMLResponse(PAGE)


async def healthz(request):
    """``GET /healthz``: alive (no token needed)."""
    from starlette.responses import JSONResponse

    return JSONResponse({"status": "alive"})


async def readyz(request):
    """``GET /readyz``: 200 once the model is loaded and batching runs, 503 before and while stopping."""
    from starlette.responses import JSONResponse

    state = request.app.state.serving
    return JSONResponse({"status": "ready" if state["ready"] else "starting", "model": state["name"]},
                        200 if state["ready"] else 503)


async def metrics_text(request):
    """``GET /metrics``: Prometheus text."""
    from starlette.responses import PlainTextResponse

    metrics = request.app.state.metrics
    metrics.set("headstart_images_waiting", request.app.state.batcher.waiting)
    return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")


async def openapi(request):
    """``GET /openapi.json``: the API's description."""
    from starlette.responses import JSONResponse

    return JSONResponse(OPENAPI)
