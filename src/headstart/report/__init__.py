"""What people read about a model: the HTML report (``html``, with its multi-label and audit pages), classification
metrics (``metrics``) and the Keras-style summary (``summary``).

May import ``data``, ``codes`` and the foundations.
"""
