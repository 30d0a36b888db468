"""scikit-learn's estimator contract, kept without importing scikit-learn until scikit-learn itself asks.

``BaseEstimator`` and its mixins cost a command 0.6 s of start-up (scikit-learn imports ``scipy.stats``), which a
``fit`` on cached codes spends on nothing else. These classes give what the estimators used from them, in
scikit-learn's own terms: ``get_params``/``set_params`` read from ``__init__``'s signature, the changed-only repr,
``fit_transform``, and the tags, which are scikit-learn's own (computed by its mixins, imported on that call, which
only scikit-learn's tools make), so ``clone``, ``is_classifier``, ``GridSearchCV`` and ``Pipeline`` see an estimator
exactly as before.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar


class Estimator:
    """``get_params``/``set_params``/repr from the parameters ``__init__`` names, as scikit-learn's BaseEstimator."""

    _mixin: ClassVar[str] = ""  #: the scikit-learn mixin whose tags the estimator has: ClassifierMixin, ...

    @classmethod
    def _get_param_names(cls) -> list[str]:
        return sorted(name for name, p in inspect.signature(cls.__init__).parameters.items()
                      if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The parameters as ``__init__`` stored them (none of them is an estimator, so ``deep`` adds nothing)."""
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params: Any) -> Estimator:
        """Set parameters by name; an unknown one is a ValueError, as in scikit-learn."""
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"Invalid parameter {name!r} for estimator {self}. Valid parameters are: {valid!r}.")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {name: p.default for name, p in inspect.signature(type(self).__init__).parameters.items()}
        changed = [f"{name}={value!r}" for name, value in self.get_params().items()
                   if not _same(value, defaults.get(name, inspect.Parameter.empty))]
        return f"{type(self).__name__}({', '.join(changed)})"

    def __sklearn_tags__(self) -> Any:
        """scikit-learn's tags for an estimator with these mixins (called by scikit-learn, so it is imported)."""
        import sklearn.base

        bases = (getattr(sklearn.base, self._mixin), sklearn.base.BaseEstimator) if self._mixin else (
            sklearn.base.BaseEstimator,)
        return type(type(self).__name__, bases, {})().__sklearn_tags__()


class ClassifierEstimator(Estimator):
    """A classifier, as ``ClassifierMixin`` + ``BaseEstimator`` make one (``score`` is the estimator's own)."""

    _mixin = "ClassifierMixin"
    _estimator_type = "classifier"  # what scikit-learn before 1.6 reads


class TransformerEstimator(Estimator):
    """A transformer, as ``TransformerMixin`` + ``BaseEstimator`` make one."""

    _mixin = "TransformerMixin"

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> Any:
        """``fit`` then ``transform`` the same ``X``."""
        return self.fit(X, y, **fit_params).transform(X)  # type: ignore[attr-defined]


def _same(value: Any, default: Any) -> bool:
    try:
        return value is default or bool(value == default)
    except (TypeError, ValueError):  # an array compared to a default
        return False
