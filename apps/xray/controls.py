"""Gradio controls generated from the explainer registry, so a newly registered method needs no app change."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gradio as gr

from core.explain.base import MethodInfo, Param


def control(param: Param) -> gr.components.Component:
    """The widget for one parameter: slider when bounded, number otherwise, dropdown, checkbox."""
    if param.kind == "choice":
        return gr.Dropdown(list(param.choices), value=param.default, label=param.label, info=param.help or None)
    if param.kind == "bool":
        return gr.Checkbox(value=bool(param.default), label=param.label, info=param.help or None)
    if param.low is not None and param.high is not None:
        return gr.Slider(param.low, param.high, value=param.default, step=_step(param), label=param.label,
                         info=param.help or None)
    return gr.Number(value=param.default, label=param.label, info=param.help or None,
                     precision=0 if param.kind == "int" else None)


def _step(param: Param) -> float:
    if param.step is not None:
        return param.step
    if param.kind == "int":
        return 1
    return 10.0 ** math.floor(math.log10((param.high - param.low) / 1000))  # ~1000 positions on the slider


@dataclass
class MethodControls:
    """Each method's group of parameter widgets, flattened in a fixed order for Gradio's inputs list."""

    groups: dict[str, gr.Group]
    widgets: list[tuple[str, str, gr.components.Component]]  # (method, parameter, widget)

    def build_overrides(self, method: str, values: tuple[Any, ...]) -> dict[str, Any]:
        """The chosen method's parameter values from the flat tuple of every widget's value."""
        return {name: value for (owner, name, _), value in zip(self.widgets, values, strict=True) if owner == method}

    def components(self) -> list[gr.components.Component]:
        """Every widget, in the order ``build_overrides`` expects."""
        return [widget for _, _, widget in self.widgets]

    def visibility(self, method: str) -> list[gr.Group]:
        """Updates showing only ``method``'s group."""
        return [gr.Group(visible=name == method) for name in self.groups]


def method_controls(methods: dict[str, MethodInfo], selected: str) -> MethodControls:
    """Create (inside the current Blocks context) one hidden group of widgets per method."""
    groups: dict[str, gr.Group] = {}
    widgets: list[tuple[str, str, gr.components.Component]] = []
    for name, info in methods.items():
        with gr.Group(visible=name == selected) as group:
            for param in info.params:
                widgets.append((name, param.name, control(param)))
            if not info.params:
                gr.Markdown(f"{info.label} has no parameters.")
        groups[name] = group
    return MethodControls(groups, widgets)
