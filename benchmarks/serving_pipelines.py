"""The peer server of benchmarks/serving.py: what an HF user serves today for intent + slots. Two transformers
`pipeline`s (text classification, token classification), each its own MiniLM, behind a FastAPI app whose
endpoint runs one request's texts through both (FastAPI runs the sync endpoint on its thread pool; nothing is
batched across requests). The heads are randomly initialised, sized and named after the mtl model's labels:
their accuracy is irrelevant to throughput.

    python benchmarks/serving_pipelines.py --labels MODEL/labels.json --port 0 [--threads 2]
"""
import argparse
import json
import logging

import torch
from fastapi import FastAPI
from transformers import (AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer,
                          pipeline)

from common import minilm_dir


def label_sets(labels_file: str) -> tuple[list[str], list[str]]:
    """The intent names and the slot tags of an mtl joint model (labels.json: {task: {field: names}})."""
    fields = next(iter(json.loads(open(labels_file, encoding="utf-8").read()).values()))
    return fields["intent_ids"], fields["slot_ids"]


def build_app(intents: list[str], tags: list[str]) -> FastAPI:
    """/predict with mtl's request and answer shape; /ready for the load generator."""
    folder = minilm_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    classify = pipeline("text-classification", tokenizer=tokenizer, device="cpu", model=(
        AutoModelForSequenceClassification.from_pretrained(folder, id2label=dict(enumerate(intents)))))
    tag = pipeline("token-classification", tokenizer=tokenizer, device="cpu", aggregation_strategy="simple",
                   model=AutoModelForTokenClassification.from_pretrained(folder, id2label=dict(enumerate(tags))))
    classify(["warm up"])
    tag(["warm up"])
    app = FastAPI()

    @app.post("/predict")
    def predict(body: dict) -> dict:
        texts = body["texts"]
        intents_found, spans_found = classify(texts), tag(texts)
        return {"predictions": [
            {"text": text, "intent": {"label": intent["label"], "prob": float(intent["score"])},
             "slots": {"spans": [{"text": s["word"], "type": s["entity_group"], "start": int(s["start"]),
                                  "end": int(s["end"]), "prob": float(s["score"])} for s in spans]}}
            for text, intent, spans in zip(texts, intents_found, spans_found)]}

    @app.get("/ready")
    def ready() -> dict:
        return {"status": "ready"}
    return app


def main() -> None:
    import uvicorn
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", required=True, help="labels.json of the mtl model served beside it")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    app = build_app(*label_sets(args.labels))
    uvicorn.run(app, host="127.0.0.1", port=args.port, access_log=False, log_level="info")


if __name__ == "__main__":
    main()
