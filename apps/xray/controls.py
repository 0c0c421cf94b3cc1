"""Gradio controls generated from the explainer registry, so a newly registered method needs no app change.

Only what applies is shown: each method's widgets sit in a group visible while that method is selected, and a
parameter whose label ends in one of a choice parameter's options in brackets, e.g. "Scale (Felzenszwalb)" under
"Superpixels" = felzenszwalb, is visible only while that option is chosen.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from core.explain.base import MethodInfo, Param

_TAG = re.compile(r"\(([^()]+)\)\s*$")  # "Number of superpixels (SLIC)" -> "SLIC"


def control(param: Param, visible: bool = True, bounds: tuple[float, float] | None = None) -> gr.components.Component:
    """The widget for one parameter: slider when bounded, number otherwise, dropdown, checkbox. ``bounds``
    narrows a slider to what the server's work budget allows, and its help says so."""
    common = {"label": param.label, "info": param.help or None, "visible": visible}
    if bounds is not None and param.low is not None and param.high is not None:
        low, high = bounds
        step = _step(param)
        low = param.low + math.ceil((low - param.low) / step) * step  # on the slider's own grid, inside the bounds
        high = param.low + math.floor((high - param.low) / step) * step
        note = f"This server's work budget allows {low:,.0f} to {high:,.0f}."
        common["info"] = f"{param.help} {note}" if param.help else note
        default = min(max(param.default, low), high)
        return gr.Slider(low, high, value=default, step=step, **common)
    if param.kind == "choice":
        return gr.Dropdown(list(param.choices), value=param.default, **common)
    if param.kind == "bool":
        return gr.Checkbox(value=bool(param.default), **common)
    if param.low is not None and param.high is not None:
        return gr.Slider(param.low, param.high, value=param.default, step=_step(param), **common)
    return gr.Number(value=param.default, precision=0 if param.kind == "int" else None, **common)


def _step(param: Param) -> float:
    if param.step is not None:
        return param.step
    if param.kind == "int":
        return 1
    return 10.0 ** math.floor(math.log10((param.high - param.low) / 1000))  # ~1000 positions on the slider


def condition(param: Param, params: tuple[Param, ...] | list[Param]) -> tuple[str, str] | None:
    """(choice parameter, option) that ``param`` applies to, from the option named in brackets at the end of its
    label; None when it always applies."""
    match = _TAG.search(param.label)
    if match is None:
        return None
    tag = match.group(1).strip().lower()
    for other in params:
        if other is not param and other.kind == "choice":
            for option in other.choices:
                if option.lower() == tag:
                    return other.name, option
    return None


@dataclass
class MethodControls:
    """Each method's group of parameter widgets, flattened in a fixed order for Gradio's inputs list."""

    groups: dict[str, gr.Group]
    widgets: list[tuple[str, str, gr.components.Component]]  # (method, parameter, widget)
    # (method, parameter) -> (choice parameter, option): shown only while that option is chosen
    conditions: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)

    def build_overrides(self, method: str, values: tuple[Any, ...]) -> dict[str, Any]:
        """The chosen method's parameter values from the flat tuple of every widget's value."""
        return {name: value for (owner, name, _), value in zip(self.widgets, values, strict=True) if owner == method}

    def components(self) -> list[gr.components.Component]:
        """Every widget, in the order ``build_overrides`` expects."""
        return [widget for _, _, widget in self.widgets]

    def visibility(self, method: str) -> list[gr.Group]:
        """Updates showing only ``method``'s group."""
        return [gr.Group(visible=name == method) for name in self.groups]

    def widget(self, method: str, param: str) -> gr.components.Component:
        """The widget of one method's parameter."""
        return next(w for owner, name, w in self.widgets if (owner, name) == (method, param))

    def wire(self, **event: Any) -> None:
        """Show and hide the conditional widgets when their choice changes (inside the Blocks context)."""
        by_chooser: dict[tuple[str, str], list[tuple[gr.components.Component, str]]] = {}
        for (method, param), (chooser, option) in self.conditions.items():
            by_chooser.setdefault((method, chooser), []).append((self.widget(method, param), option))
        for (method, chooser), dependents in by_chooser.items():
            options = [option for _, option in dependents]

            def toggle(choice: str, _options: list[str] = options) -> list[dict]:
                return [gr.update(visible=choice == option) for option in _options]

            self.widget(method, chooser).change(toggle, self.widget(method, chooser), [w for w, _ in dependents],
                                                queue=False, show_progress="hidden", **event)


def method_controls(methods: dict[str, MethodInfo], selected: str,
                    bounds: dict[tuple[str, str], tuple[float, float]] | None = None) -> MethodControls:
    """Create (inside the current Blocks context) one hidden group of widgets per method; ``bounds`` narrows
    (method, parameter) sliders (``Limits.slider_bounds``)."""
    bounds = bounds or {}
    groups: dict[str, gr.Group] = {}
    widgets: list[tuple[str, str, gr.components.Component]] = []
    conditions: dict[tuple[str, str], tuple[str, str]] = {}
    for name, info in methods.items():
        defaults = {p.name: p.default for p in info.params}
        with gr.Group(visible=name == selected) as group:
            for param in info.params:
                when = condition(param, info.params)
                if when is not None:
                    conditions[(name, param.name)] = when
                visible = when is None or defaults[when[0]] == when[1]
                widgets.append((name, param.name, control(param, visible, bounds.get((name, param.name)))))
            if not info.params:
                gr.Markdown(f"{info.label} has no parameters.")
        groups[name] = group
    return MethodControls(groups, widgets, conditions)
