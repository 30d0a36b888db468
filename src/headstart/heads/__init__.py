"""What is trained on CNN codes: linear heads with their cross-validated C search, and familiarity (how much an image
looks like the training images).

May import ``data`` and the foundations; works on arrays, so it never imports torch or a network.
"""
