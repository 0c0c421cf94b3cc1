"""Explainers: every method returns the same Explanation; importing this package fills the registry."""

import core.explain.perturbation  # noqa: F401  (registers meaningful_perturbation)
from core.explain import superpixels  # noqa: F401  (registers lime, kernel_shap)
from core.explain.base import METHODS, Explanation, MethodInfo, Param, explain

__all__ = ["METHODS", "Explanation", "MethodInfo", "Param", "explain"]
