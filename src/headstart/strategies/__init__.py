"""How a TransferClassifier learns, one unit per strategy: ``feature_extractor`` (a linear head on CNN codes) and
``network`` (fine-tuning, or training from scratch); ``auto`` (:mod:`headstart.auto.run`) measures, decides and calls
one of them. Each reads the estimator's parameters (:class:`.fitted.Settings`) and returns what it fitted
(:class:`.fitted.Fitted`), which the estimator's ``fit`` alone assigns; a new strategy is one new module.

May import ``data``, ``codes``, ``heads``, ``training`` (lazily) and ``auditing``; never ``auto`` or the estimator.
"""
