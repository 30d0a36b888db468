"""After training: one-file export (ONNX fp32 or int8, TorchScript), the torch-free runtime that predicts from it,
and the HTTP server around that runtime (``server``, with ``batcher``, ``metrics`` and ``page``).

``export`` may import anything below the estimator; ``runtime`` and the server import only ``codes.session``,
``data.decode``, ``results`` and ``errors`` of the package, and never torch (tested).
"""
