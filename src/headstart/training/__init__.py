"""Training a network on Lightning: the options (torch-free), the LightningModule, the DataModule, callbacks, cached
activations of the frozen blocks, the cost model that times a few steps, and the run itself.

May import ``data``, ``codes`` and the foundations; knows nothing of ``auto`` or the estimator.
"""
