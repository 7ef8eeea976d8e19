"""Dynamic batching: the texts of concurrent requests wait in one queue; one loop on the event loop takes up to
`max_batch_size` of them (waiting at most `max_wait_ms` for a batch to fill) and runs them as one predict call
on one worker thread. Requests of one batch share encoder passes, the model sees one batch at a time (no
threads fighting over the cores), and the event loop keeps accepting and answering requests meanwhile."""
import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger(__name__)

TaskChoice = tuple[str, ...] | None  # the tasks a request picked; None: every task
PredictFn = Callable[[list[str], TaskChoice], list[dict[str, Any]]]


class QueueFull(Exception):
    """More texts are waiting than the server accepts: answer 503 with Retry-After rather than pile up."""


class ModelFailed(Exception):
    """The model raised on the batch a request was in (the server answers 500 for that batch only)."""


@dataclass
class _Request:
    texts: list[str]
    tasks: TaskChoice
    future: asyncio.Future
    arrived: float = field(default_factory=time.perf_counter)


class Batcher:
    """Queue + model loop. `submit` from request handlers; `start` and `stop` from the app's lifespan.

    A request's texts stay together: a batch takes whole requests in arrival order while their texts fit
    `max_batch_size` (the first request always, however many texts it has: the predictor cuts it into
    passes of `max_batch_size`). `max_batch_size=1` is the no-batching server: one forward per request.
    `max_queue` bounds the texts waiting."""

    def __init__(self, predict: PredictFn, max_batch_size: int, max_wait_ms: float, max_queue: int,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.predict, self.max_batch_size, self.max_queue = predict, max_batch_size, max_queue
        self.max_wait = max_wait_ms / 1000.0
        self.on_batch = on_batch or (lambda size: None)
        self.waiting: deque[_Request] = deque()
        self.depth = 0  # texts in `waiting`
        self._executor: ThreadPoolExecutor | None = None
        self._arrived: asyncio.Event | None = None
        self._loop_task: asyncio.Task | None = None
        self._stopping = False
        self._concurrent = True  # the last batch held several requests: worth waiting for the next to fill

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="mtl-model")
        self._arrived = asyncio.Event()
        self._loop_task = asyncio.create_task(self._run_forever())

    async def stop(self) -> None:
        """Finish every request already queued, then let the worker thread go."""
        self._stopping = True
        if self._arrived is not None:
            self._arrived.set()
        if self._loop_task is not None:
            await self._loop_task
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def run_in_worker(self, function: Callable[[], Any]) -> Any:
        """Run `function` on the model's thread, in turn with the batches (warm-up uses it)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function)

    async def submit(self, texts: list[str], tasks: TaskChoice = None) -> list[dict[str, Any]]:
        """One record per text, once the batch holding them has run. QueueFull when the queue cannot take
        them; ModelFailed when the model raised on their batch."""
        if self._stopping or self._arrived is None:
            raise QueueFull("the server is shutting down")
        if self.depth + len(texts) > self.max_queue:
            raise QueueFull(f"{self.depth} texts are waiting (at most {self.max_queue})")
        request = _Request(texts, tasks, asyncio.get_running_loop().create_future())
        self.waiting.append(request)
        self.depth += len(texts)
        self._arrived.set()
        return await request.future

    async def _run_forever(self) -> None:
        while True:
            batch = await self._next_batch()
            if not batch:
                return
            await self._run(batch)

    async def _next_batch(self) -> list[_Request]:
        """Whole requests, oldest first, up to max_batch_size texts; waits up to max_wait for the batch to fill
        once the first request is in, unless the last batch held one request alone (light traffic: a lone
        client should not pay the wait on every request). Empty only when stopping with nothing left."""
        while not self.waiting:
            if self._stopping:
                return []
            self._arrived.clear()
            await self._arrived.wait()
        deadline = asyncio.get_running_loop().time() + (self.max_wait if self._concurrent else 0.0)
        while self.depth < self.max_batch_size and not self._stopping:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                break
        batch, size = [], 0
        while self.waiting and (not batch or size + len(self.waiting[0].texts) <= self.max_batch_size):
            request = self.waiting.popleft()
            self.depth -= len(request.texts)
            if not request.future.done():  # a client that went away is not worth a forward
                batch.append(request)
                size += len(request.texts)
        self._concurrent = len(batch) > 1
        return batch

    async def _run(self, batch: list[_Request]) -> None:
        """One predict call per distinct task choice in the batch, on the worker thread; each request gets
        its records back. When the model raises, the batch's requests run again one by one, so that only a
        request that fails on its own gets ModelFailed (one bad input does not fail its neighbours); the
        loop goes on with the next batch either way."""
        self.on_batch(sum(len(r.texts) for r in batch))
        try:
            results = await self.run_in_worker(lambda: self._predict_all(batch))
        except Exception as error:  # noqa: BLE001 - any failure of the model fails this batch only
            if len(batch) == 1:
                log.exception("the model failed on a request of %d texts", len(batch[0].texts))
                _settle(batch[0], error=ModelFailed(type(error).__name__))
                return
            log.warning("the model failed on a batch of %d requests (%s): running them one by one", len(batch),
                        type(error).__name__)
            for request in batch:
                await self._run([request])
            return
        for request, records in zip(batch, results):
            _settle(request, records)

    def _predict_all(self, batch: list[_Request]) -> list[list[dict[str, Any]]]:
        """The records of each request: the texts of all requests with the same task choice in one call."""
        choices: dict[TaskChoice, list[int]] = {}
        for index, request in enumerate(batch):
            choices.setdefault(request.tasks, []).append(index)
        results: list[list[dict[str, Any]]] = [[] for _ in batch]
        for tasks, members in choices.items():
            records = self.predict([text for i in members for text in batch[i].texts], tasks)
            start = 0
            for i in members:
                results[i] = records[start:start + len(batch[i].texts)]
                start += len(batch[i].texts)
        return results


def _settle(request: _Request, records: list[dict[str, Any]] | None = None, error: Exception | None = None) -> None:
    """Answer a request unless its client has gone (its future cancelled)."""
    if request.future.done():
        return
    if error is not None:
        request.future.set_exception(error)
    else:
        request.future.set_result(records)
