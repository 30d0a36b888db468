"""What is trained on CNN codes: linear heads with their cross-validated C search (one label per image, or a C and a
threshold per label), the standardised basis they are solved in, and familiarity (how much an image looks like the
training images).

May import ``data`` and the foundations; works on arrays, so it never imports torch or a network.
"""
