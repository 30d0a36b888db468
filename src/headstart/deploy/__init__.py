"""After training: one-file export (ONNX fp32 or int8, TorchScript) and the torch-free runtime that predicts from it.

``export`` may import anything below the estimator; ``runtime`` imports only ``codes.session``, ``data.decode`` and
``errors``, and never torch (tested).
"""
