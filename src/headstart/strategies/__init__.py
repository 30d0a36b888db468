"""How a TransferClassifier learns, one unit per strategy: ``feature_extractor`` (a linear head on CNN codes) and
``network`` (fine-tuning, or training from scratch); ``auto`` (:mod:`headstart.auto.run`) measures, decides and calls
one of them. Each takes the estimator and sets its fitted attributes, so a new strategy is one new module.

May import ``data``, ``codes``, ``heads``, ``training`` (lazily) and ``auditing``; never ``auto`` or the estimator
(only as a type).
"""
