"""Dynamic batching: images of concurrent requests run through the network together, up to ``max_batch`` images or
``max_wait_ms`` after the first one arrived. Each network (one ONNX Runtime session) runs one batch at a time on a
thread of its own; with two, one batch runs while the next is gathered."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

#: the network: a uint8 NHWC batch in, one array per output (rows in batch order) out
Network = Callable[[np.ndarray], list[np.ndarray]]


class Batcher:
    """Collects preprocessed images from many requests and answers each with its own rows of the network's outputs.

    ``on_batch(size, seconds)`` is told every batch run (for metrics). Start it inside the event loop that serves.
    """

    def __init__(self, networks: list[Network], max_batch: int, max_wait_ms: float,
                 on_batch: Callable[[int, float], None] | None = None):
        self.networks = networks
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.on_batch = on_batch
        self.waiting = 0  # images queued, not yet in a batch
        self._queue: asyncio.Queue | None = None
        self._tasks: list[asyncio.Task] = []
        self._threads = [ThreadPoolExecutor(1, thread_name_prefix=f"headstart-batch{i}") for i in range(len(networks))]

    async def start(self) -> None:
        """Begin taking images (call from the serving loop)."""
        self._queue = asyncio.Queue()
        self._tasks = [asyncio.create_task(self._run(network, thread))
                       for network, thread in zip(self.networks, self._threads)]

    async def stop(self) -> None:
        """Answer what is queued, then stop."""
        if not self._tasks:
            return
        await self._queue.join()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for thread in self._threads:
            thread.shutdown(wait=True)

    async def predict(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, ...]]:
        """Each image's outputs (one row of each network output), in the order given."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in images]
        for image, future in zip(images, futures):
            self._queue.put_nowait((image, future))
        self.waiting += len(images)
        return list(await asyncio.gather(*futures))

    async def _next_batch(self) -> list[tuple[np.ndarray, asyncio.Future]]:
        batch = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            getter = asyncio.ensure_future(self._queue.get())
            await asyncio.wait({getter}, timeout=left)
            getter.cancel()  # no effect when it already holds an image (then it is taken below, never lost)
            try:
                batch.append(await getter)
            except asyncio.CancelledError:
                break  # the wait is over
        return batch

    async def _run(self, network: Network, thread: ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            self.waiting -= len(batch)
            started = loop.time()
            try:
                outputs = await loop.run_in_executor(thread, network, np.stack([b[0] for b in batch]))
            except Exception as exc:  # the network failed: every image of the batch gets the error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for i, (_, future) in enumerate(batch):
                    if not future.done():  # a client that went away cancelled its future
                        future.set_result(tuple(output[i] for output in outputs))
            if self.on_batch is not None:
                self.on_batch(len(batch), loop.time() - started)
            for _ in batch:
                self._queue.task_done()
