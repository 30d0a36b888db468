"""CNN codes: the pretrained networks (timm, their weights and tap layers), the ONNX export of the tapped network and
its runtimes, extraction over image files, the on-disk code cache, and int8.

May import ``data`` and the top-level foundations (``errors``, ``defaults``, ``disk``); knows nothing of heads,
training, ``auto``, the audit or deployment. ``session`` never imports torch.
"""
