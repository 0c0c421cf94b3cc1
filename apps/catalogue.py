"""The classroom's table of contents: one entry per page file under ``apps/classroom/``.

The Streamlit entry builds its navigation from this list and the home page links to every entry,
so adding a lesson is one line here plus its page file.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Lesson:
    """A page of the classroom."""

    group: str
    file: str  # relative to apps/
    title: str
    icon: str
    blurb: str


LESSONS: list[Lesson] = [
    Lesson("Lessons", "classroom/convolution.py", "Convolution playground", ":material/grid_on:",
           "kernels, padding, stride and dilation on real images; the size formula; one output cell by hand"),
    Lesson("Lessons", "classroom/receptive_field.py", "Receptive field", ":material/center_focus_strong:",
           "what one unit sees: layer arithmetic, real networks with skip paths, effective receptive fields, dilation"),
    Lesson("Lessons", "classroom/pooling.py", "Max-pool backprop", ":material/call_split:",
           "pooling forward and backward step by step, overlapping windows, ties, strided-conv gradients"),
    Lesson("Lessons", "classroom/activations.py", "Activation functions", ":material/show_chart:",
           "curves and derivatives, where each saturates, softmax temperature, vanishing gradients"),
    Lesson("Inside a trained network", "classroom/embeddings.py", "Embedding explorer", ":material/scatter_plot:",
           "t-SNE / UMAP maps of what the network learned, similar cases, mistakes, trained vs untrained"),
    Lesson("Inside a trained network", "classroom/feature_maps.py", "Feature maps and filters", ":material/layers:",
           "every channel of any layer on your image, the learned first-layer filters, trained vs untrained"),
    Lesson("Inside a trained network", "classroom/activation_max.py", "Activation maximisation",
           ":material/auto_awesome:",
           "synthesise the image that most excites a class or a channel, starting from noise"),
    Lesson("Inside a trained network", "classroom/audit.py", "Dataset audit", ":material/fact_check:",
           "explain a whole folder, cluster the maps (SpRAy) and hunt shortcuts: markers, text, film edges"),
    Lesson("How networks are trained and judged", "classroom/transfer.py", "Hand-crafted vs learned features",
           ":material/trending_up:", "learning curves: HOG/LBP features, frozen embeddings, fine-tuning, from scratch"),
    Lesson("How networks are trained and judged", "classroom/distillation.py", "Distillation", ":material/compress:",
           "a tiny student learns from the bundled model's softened outputs; hard labels side by side"),
    Lesson("How networks are trained and judged", "classroom/architectures.py", "Architectures",
           ":material/account_tree:",
           "AlexNet to EfficientNet measured: parameters, multiply-adds, receptive field, CPU speed"),
    Lesson("How networks are trained and judged", "classroom/train_live.py", "Train live", ":material/model_training:",
           "a small CNN learns from 64 px X-rays: overfitting, learning rate, class weights, new patients"),
    Lesson("How networks are trained and judged", "classroom/threshold_metrics.py", "Judge a classifier",
           ":material/tune:", "ROC and PR curves, a threshold's confusion matrix, prevalence, validation vs new data"),
]
