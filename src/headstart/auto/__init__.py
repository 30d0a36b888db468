"""The default path: measure the data in one pass, score candidate layers, plan within the budget, decide, check by
experiment, fit (``run``); ``advice`` is the same measurement as a recommendation (``headstart advise``).

May import ``data``, ``codes``, ``heads``, ``training`` (lazily: torch loads only when fine-tuning is timed),
``strategies`` and the foundations. ``run.fit_auto`` drives the estimator through its strategies.
"""
