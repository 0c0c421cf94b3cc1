"""Explainers: every method returns the same Explanation; importing this package fills the registry."""

from core.explain.base import METHODS, Explanation, MethodInfo, Param, explain

__all__ = ["METHODS", "Explanation", "MethodInfo", "Param", "explain"]
