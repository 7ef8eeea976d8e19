"""Serving a trained model: `mtl serve` (server, batching, metrics), ONNX export and its runtime.

Inference only: nothing here imports a training module. Import the submodule you need; this package imports
none of them, so exporting needs no web framework and serving no ONNX exporter."""
