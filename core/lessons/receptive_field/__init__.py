"""Receptive fields, one concept per module:

- ``arithmetic``: one layer along one axis (Araujo, Norris & Sim, Distill 2019), single-path stacks in closed
  form, per-layer tables and one unit mapped onto the image (no torch);
- ``graph``: real networks read with torch.fx, every path's field through shortcuts and concatenations, and a
  network cut at one node;
- ``erf``: the effective receptive field (Luo et al., NeurIPS 2016) and how concentrated it is;
- ``dilation``: the 1-D view, dilation schedules and path counts.

The names below are the lesson's public API (``from core.lessons import receptive_field as rf``); the networks
it reads come from core.zoo's registry (``zoo.LESSON_ARCHITECTURES``, ``zoo.build_architecture``).
"""

from core.lessons.receptive_field.arithmetic import (
    INPUT_FIELD,
    LAYER_KINDS,
    STACK_PRESETS,
    Analysis,
    Field,
    LayerKind,
    LayerSpec,
    Row,
    UnitField,
    analyse_stack,
    output_size,
    stack_fields,
    union,
    unit_field,
)
from core.lessons.receptive_field.dilation import (
    SCHEDULES,
    Contributions,
    DilationSchedule,
    contributions_1d,
    dilation_stack,
    growth_table,
)
from core.lessons.receptive_field.erf import ERFSummary, effective_receptive_field, mass_radius, summarise_erf
from core.lessons.receptive_field.graph import (
    analyse_module,
    layer_from_module,
    stack_module,
    stack_node_names,
    unit_probe,
)

__all__ = [
    "INPUT_FIELD", "LAYER_KINDS", "SCHEDULES", "STACK_PRESETS", "Analysis", "Contributions", "DilationSchedule",
    "ERFSummary", "Field", "LayerKind", "LayerSpec", "Row", "UnitField", "analyse_module", "analyse_stack",
    "contributions_1d", "dilation_stack", "effective_receptive_field", "growth_table", "layer_from_module",
    "mass_radius", "output_size", "stack_fields", "stack_module", "stack_node_names", "summarise_erf", "union",
    "unit_field", "unit_probe",
]
