"""`mtl serve`: a FastAPI app over one loaded model, run by uvicorn on 127.0.0.1 unless told otherwise.

    POST /predict   {"texts": [...], "tasks": [...]?} -> {"predictions": [record per text]}, each record what
                    `mtl predict` writes for that text (every head of the picked tasks, decoded)
    GET  /health    alive;  /ready: loaded and warmed up (503 before, and while shutting down)
    GET  /metadata  tasks, heads, label sets, runtime, mtl version, model checksum, limits
    GET  /metrics   Prometheus text;  /docs and /openapi.json: FastAPI's
    GET  /          a page to try the model (page.html: no build step, no network assets); `/?text=...` runs
                    at once, so a link can show a prediction
Requests are batched across connections (mtl.serving.batching); a full queue answers 503 with Retry-After;
a model failure answers 500 for its batch only. On SIGINT/SIGTERM uvicorn stops accepting connections,
lets the requests in flight finish, then the batcher drains.
"""
import asyncio
import json
import logging
import time
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, AsyncIterator

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response

from mtl.serving.batching import Batcher, ModelFailed, QueueFull
from mtl.serving.engine import Engine
from mtl.serving.metrics import ServerMetrics
from mtl.serving.requests import Limits, RequestError, read_predict_request
from mtl.version import __version__

log = logging.getLogger(__name__)
WARM_UP_TEXT = "book a flight from boston to denver tomorrow morning"
RETRY_AFTER_SECONDS = 1
GRACEFUL_SHUTDOWN_SECONDS = 30


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """JSON as `mtl predict` writes it (UTF-8, not escaped), without FastAPI's per-value encoder pass."""
    return Response(json.dumps(content, ensure_ascii=False), status, headers, media_type="application/json")


class ServerState:
    """Everything one app holds: the engine, its batcher, its counters; nothing global, so two apps in one
    process (tests) do not interfere."""

    def __init__(self, engine: Engine, limits: Limits, warm_up: bool) -> None:
        self.engine, self.limits, self.warm_up = engine, limits, warm_up
        self.metrics = ServerMetrics()
        self.batcher = Batcher(engine.predict, limits.max_batch_size, limits.max_wait_ms, limits.max_queue,
                               self.metrics.batch_size.observe)
        self.ready = self.stopping = False
        self._warming: asyncio.Task | None = None

    async def start(self) -> None:
        await self.batcher.start()
        self._warming = asyncio.create_task(self._warm())

    async def _warm(self) -> None:
        """One forward at batch 1 and one at the largest batch, on the model's thread, before /ready says so
        (first calls pay for lazy initialisation; requests that come meanwhile queue behind them)."""
        if self.warm_up:
            sizes = sorted({1, self.limits.max_batch_size})
            try:
                await self.batcher.run_in_worker(lambda: self.engine.warm_up(WARM_UP_TEXT, sizes))
            except Exception:  # noqa: BLE001 - a sample the model rejects; real requests will tell
                log.exception("warm-up failed; serving anyway")
        self.ready = True
        log.info("model warmed up: ready")

    async def stop(self) -> None:
        self.stopping = True
        if self._warming is not None:
            await self._warming
        await self.batcher.stop()


def create_app(engine: Engine, limits: Limits | None = None, warm_up: bool = True) -> FastAPI:
    """The app for one model. Batching starts and stops with the app's lifespan."""
    state = ServerState(engine, limits or Limits(), warm_up)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.start()
        yield
        await state.stop()

    app = FastAPI(title="mtl serve", version=__version__, lifespan=lifespan,
                  description="Every head of every task of one multi-task model, from one encoder pass.")
    app.state.mtl = state
    add_routes(app, state)
    return app


def add_routes(app: FastAPI, state: ServerState) -> None:
    names = state.engine.task_names
    request_body = {"required": True, "content": {"application/json": {"schema": state.limits.schema(names)}}}
    errors = {code: {"description": text} for code, text in (
        (400, "not JSON"), (413, "body over the size limits"), (422, "a field is wrong; the answer names it"),
        (500, "the model failed on this request's batch"), (503, "queue full or not ready; see Retry-After"))}

    @app.post("/predict", openapi_extra={"requestBody": request_body}, responses=errors,
              summary="Decoded outputs of every head, per text")
    async def predict(request: Request) -> Response:
        started, texts = time.perf_counter(), []
        try:
            texts, tasks = await read_predict_request(request, state.limits, names)
            records = await state.batcher.submit(texts, tasks)
        except RequestError as error:
            return _fail(state, started, error.status, error.body(), "invalid")
        except QueueFull as error:
            return _fail(state, started, 503, {"error": {"field": None, "message": f"server busy: {error}; retry "
                         "later"}}, "queue_full", {"Retry-After": str(RETRY_AFTER_SECONDS)})
        except ModelFailed as error:
            return _fail(state, started, 500, {"error": {"field": None, "message": f"the model failed on this "
                         f"request's batch ({error}); see the server log"}}, "model")
        state.metrics.answered(200, time.perf_counter() - started, len(texts))
        return json_response({"predictions": records})

    page = resources.files("mtl.serving").joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/", summary="A page to try the model", response_class=HTMLResponse)
    async def try_page() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline' "
                                           "'self'; style-src 'unsafe-inline'; connect-src 'self'"})

    @app.get("/health", summary="The process is alive")
    async def health() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/ready", summary="Loaded and warmed up (503 before, and while shutting down)")
    async def ready() -> Response:
        if state.ready and not state.stopping:
            return json_response({"status": "ready"})
        status = "stopping" if state.stopping else "warming up"
        return json_response({"status": status}, 503, {"Retry-After": str(RETRY_AFTER_SECONDS)})

    @app.get("/metadata", summary="Tasks, heads, label sets, runtime, version, checksum, limits")
    async def metadata() -> Response:
        limits = {name: getattr(state.limits, name) for name in state.limits.__dataclass_fields__}
        return json_response({**state.engine.metadata(), "limits": limits})

    @app.get("/metrics", summary="Prometheus text format", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        text = state.metrics.render(state.batcher.depth, state.ready and not state.stopping)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")


def _fail(state: ServerState, started: float, status: int, body: dict, reason: str,
          headers: dict[str, str] | None = None) -> Response:
    state.metrics.answered(status, time.perf_counter() - started, reason=reason)
    return json_response(body, status, headers)


def serve(engine: Engine, limits: Limits | None = None, host: str = "127.0.0.1", port: int = 8000,
          access_log: bool = False) -> None:
    """Run the app until SIGINT/SIGTERM; requests in flight then finish (up to 30 s) before it exits."""
    import uvicorn
    app = create_app(engine, limits)
    config = uvicorn.Config(app, host=host, port=port, access_log=access_log, log_level="info",
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS, lifespan="on")
    uvicorn.Server(config).run()
