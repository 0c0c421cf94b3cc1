"""Explainer speed on the bundled model and a real chest X-ray: each method's median seconds, its floor measured
in the same run, and the same method in the peer library (pytorch-grad-cam, Captum, lime) with the speed-up.

Floors are the bare work a method cannot avoid: one forward plus a backward to the layer (CAMs) or to the input
(gradient methods); for sampling methods the same number of rows, forward (+ backward for gradients) in batches
of the same size; Score-CAM one forward plus one masked forward per scored channel; DeepLIFT a forward and backward
of the image and its baseline; LRP Zennit's own call (composite and canonizer registered once, outside the timing,
on a private copy), so its ratio is the cost of our wrapper. Contestants run round-robin so machine load hits them
alike. Targets (issue 16): every ratio to floor <= 1.15 (LRP <= 1.1), Score-CAM >= 2x faster than
pytorch-grad-cam's ScoreCAM at the same batch size.

    python -m bench.explainers [--json] [--methods grad_cam,occlusion] [--repeats 9]

Add a method with one ``Case`` in ``CASES`` (floor factory + optional peer factory).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from bench.common import interleaved_medians, table
from core.data import data_dir
from core.explain import METHODS, explain
from core.explain.base import BATCH, Context, baseline
from core.explain.occlusion import starts
from core.io import load_image
from core.nets import WideResNet18
from core.zoo import (
    LoadedModel,
    ModelSpec,
    ModelUnavailable,
    Preprocessing,
    get_layer,
    instantiate,
    load_model,
    preprocess,
)

Runner = Callable[[], Any]


@dataclass(frozen=True)
class Setup:
    """The model, one preprocessed X-ray, its predicted class and the batch size every contestant uses."""

    loaded: LoadedModel
    x: torch.Tensor
    target: int
    batch_size: int
    note: str

    @property
    def model(self) -> torch.nn.Module:
        """The bare network."""
        return self.loaded.model

    @property
    def layer(self) -> torch.nn.Module:
        """The model's CAM layer module."""
        return get_layer(self.model, self.loaded.spec.cam_layer)

    def rows(self, n: int) -> list[torch.Tensor]:
        """n copies of the image, as batches of at most ``batch_size``."""
        return [self.x.expand(min(self.batch_size, n - i), -1, -1, -1).contiguous()
                for i in range(0, n, self.batch_size)]


# ---------------------------------------------------------------- floors


def forwards(n: int) -> Callable[[Setup], Runner]:
    """Floor: n bare forward passes in batches."""

    def make(s: Setup) -> Runner:
        chunks = s.rows(n)

        def run() -> None:
            with torch.no_grad():
                for xb in chunks:
                    s.model(xb)
        return run
    return make


def input_gradients(n: int) -> Callable[[Setup], Runner]:
    """Floor: n rows of forward + backward of the target logit to the input, in batches."""

    def make(s: Setup) -> Runner:
        chunks = s.rows(n)

        def run() -> None:
            for xb in chunks:
                xr = xb.requires_grad_(True)
                torch.autograd.grad(s.model(xr)[:, s.target].sum(), xr)
        return run
    return make


def zennit_lrp(s: Setup) -> Runner:
    """Floor of LRP: Zennit's attributor on a private copy with the default composite and the canonizer the model
    needs, registered once outside the timing; the timed call is the forward and modified backward alone."""
    from zennit.attribution import Gradient

    from core.explain.relevance import make_composite
    from core.explain.replicas import detached_copy

    net = detached_copy(s.model)
    ctx = Context(net, s.loaded.device, "", 0, s.batch_size, {}, prep=s.loaded.spec.preprocessing)
    p = METHODS["lrp"].defaults()
    composite = make_composite(p["composite"], net, p["epsilon"], p["gamma"], ctx.pixel_value(0.0, s.x),
                               ctx.pixel_value(1.0, s.x))
    attributor = Gradient(model=net, composite=composite)
    attributor.__enter__()  # stays registered for the benchmark's lifetime: the floor pays no registration
    one_hot = torch.zeros(1, len(s.loaded.spec.class_names))
    one_hot[0, s.target] = 1.0

    def run() -> None:
        with torch.enable_grad():
            attributor(s.x, one_hot)
    return run


def layer_gradient(s: Setup) -> Runner:
    """Floor: one forward + backward of the target logit to the CAM layer's output (no parameter gradients)."""

    def run() -> None:
        box: list[torch.Tensor] = []
        handle = s.layer.register_forward_hook(lambda _m, _i, out: box.append(out))
        try:
            logits = s.model(s.x)
        finally:
            handle.remove()
        torch.autograd.grad(logits[0, s.target], box[-1])
    return run


# ---------------------------------------------------------------- peers


def grad_cam_peer(kind: str) -> Callable[[Setup, dict], Runner]:
    """pytorch-grad-cam's class ``kind``, masked images batched as the method's ``batch`` parameter when it has one
    (Score-CAM). Built inside each timed call and its hooks released after it: pytorch-grad-cam keeps its forward
    hooks on the model until ``release()``, and left in place they also slowed the floor and our method (the
    Eigen-CAM floor, one bare forward, measured twice the CAM floor's)."""

    def make(s: Setup, params: dict) -> Runner:
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        targets = [ClassifierOutputTarget(s.target)]

        def run() -> None:
            explainer = getattr(pytorch_grad_cam, kind)(model=s.model, target_layers=[s.layer])
            if "batch" in params:
                explainer.batch_size = params["batch"]
            try:
                explainer(input_tensor=s.x, targets=targets)
            finally:
                explainer.activations_and_grads.release()
        return run
    return make


def captum_saliency(s: Setup, _params: dict) -> Runner:
    """Captum Saliency (|gradient|)."""
    from captum.attr import Saliency

    return lambda: Saliency(s.model).attribute(s.x, target=s.target, abs=True)


def captum_smoothgrad(s: Setup, params: dict) -> Runner:
    """Captum NoiseTunnel(Saliency), same samples, noise and batch size."""
    from captum.attr import NoiseTunnel, Saliency

    sigma = params["noise"] * float(s.x.max() - s.x.min())
    tunnel = NoiseTunnel(Saliency(s.model))
    return lambda: tunnel.attribute(s.x, nt_type="smoothgrad", nt_samples=params["n_samples"], stdevs=sigma,
                                    nt_samples_batch_size=s.batch_size, target=s.target, abs=False)


def captum_ig(s: Setup, params: dict) -> Runner:
    """Captum IntegratedGradients (Gauss-Legendre, same steps, baseline and batch size)."""
    from captum.attr import IntegratedGradients

    base = _baseline(s, params["baseline"])
    ig = IntegratedGradients(s.model)
    return lambda: ig.attribute(s.x, baselines=base, target=s.target, n_steps=params["steps"],
                                method="gausslegendre", internal_batch_size=s.batch_size)


def captum_occlusion(s: Setup, params: dict) -> Runner:
    """Captum Occlusion with the same windows, fill and batch size."""
    from captum.attr import Occlusion

    c = s.x.shape[1]
    base = _baseline(s, params["baseline"])
    occ = Occlusion(s.model)
    return lambda: occ.attribute(s.x, sliding_window_shapes=(c, params["patch"], params["patch"]),
                                 strides=(c, params["stride"], params["stride"]), baselines=base, target=s.target,
                                 perturbations_per_eval=s.batch_size)


def captum_guided_backprop(s: Setup, _params: dict) -> Runner:
    """Captum GuidedBackprop."""
    from captum.attr import GuidedBackprop

    return lambda: GuidedBackprop(s.model).attribute(s.x, target=s.target)


def captum_guided_grad_cam(s: Setup, _params: dict) -> Runner:
    """Captum GuidedGradCam at the CAM layer."""
    from captum.attr import GuidedGradCam

    return lambda: GuidedGradCam(s.model, s.layer).attribute(s.x, target=s.target)


def captum_deeplift(s: Setup, params: dict) -> Runner:
    """Captum DeepLift on the fx-rewritten private copy our method uses (Captum cannot run the bundled ResNet as it
    is: its blocks call one ReLU module twice), same baseline."""
    from captum.attr import DeepLift

    from core.explain.reference import prepare_deeplift
    from core.explain.replicas import detached_copy

    net = prepare_deeplift(detached_copy(s.model))
    base = _baseline(s, params["baseline"])
    explainer = DeepLift(net)
    return lambda: explainer.attribute(s.x.clone().requires_grad_(True), base, target=s.target)


def captum_gradient_shap(s: Setup, params: dict) -> Runner:
    """Captum GradientShap with as many samples, black and white baselines."""
    from captum.attr import GradientShap

    ctx = Context(s.model, s.loaded.device, "", 0, s.batch_size, {}, prep=s.loaded.spec.preprocessing)
    bases = torch.cat([ctx.pixel_value(0.0, s.x).expand_as(s.x), ctx.pixel_value(1.0, s.x).expand_as(s.x)])
    explainer = GradientShap(s.model)
    return lambda: explainer.attribute(s.x, bases, n_samples=params["n_samples"], stdevs=0.0, target=s.target)


def _baseline(s: Setup, kind: str) -> torch.Tensor:
    ctx = Context(s.model, s.loaded.device, "", 0, s.batch_size, {}, prep=s.loaded.spec.preprocessing)
    return baseline(ctx, s.x, kind)


# ---------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    """One benchmarked method: registry name, parameters, floor factory, optional peer and repeat count."""

    method: str
    floor: Callable[[Setup], Runner]
    params: dict[str, Any] = field(default_factory=dict)
    peer: str | None = None
    peer_run: Callable[[Setup, dict], Runner] | None = None
    repeats: int = 15


def _occlusion_rows(side: int, patch: int, stride: int) -> int:
    return len(starts(side, patch, stride)) ** 2


SIDE = 160  # input size of the untrained stand-in for the bundled model


def cases(side: int, channels: int, batch: int) -> list[Case]:
    """Every benchmarked method, with floors sized for a ``side`` x ``side`` input whose CAM layer has
    ``channels`` channels, sampling methods batched ``batch`` rows at a time."""
    sg, ig = METHODS["smoothgrad"].defaults(), METHODS["integrated_gradients"].defaults()
    occ, shap = METHODS["occlusion"].defaults(), METHODS["gradient_shap"].defaults()
    return [
        Case("cam", forwards(1)),
        Case("grad_cam", layer_gradient, peer="pytorch-grad-cam GradCAM", peer_run=grad_cam_peer("GradCAM")),
        Case("grad_cam_pp", layer_gradient, peer="pytorch-grad-cam GradCAMPlusPlus",
             peer_run=grad_cam_peer("GradCAMPlusPlus")),
        Case("layer_cam", layer_gradient, peer="pytorch-grad-cam LayerCAM", peer_run=grad_cam_peer("LayerCAM")),
        Case("saliency", input_gradients(1), peer="captum Saliency", peer_run=captum_saliency),
        Case("guided_backprop", input_gradients(1), peer="captum GuidedBackprop", peer_run=captum_guided_backprop),
        Case("guided_grad_cam", input_gradients(1), peer="captum GuidedGradCam", peer_run=captum_guided_grad_cam),
        Case("smoothgrad", input_gradients(sg["n_samples"]), sg, "captum NoiseTunnel(Saliency)", captum_smoothgrad,
             repeats=5),
        Case("integrated_gradients", input_gradients(ig["steps"]), ig, "captum IntegratedGradients", captum_ig,
             repeats=5),
        Case("occlusion", forwards(_occlusion_rows(side, occ["patch"], occ["stride"])), occ, "captum Occlusion",
             captum_occlusion, repeats=5),
        Case("hires_cam", layer_gradient, peer="pytorch-grad-cam HiResCAM", peer_run=grad_cam_peer("HiResCAM")),
        Case("xgrad_cam", layer_gradient, peer="pytorch-grad-cam XGradCAM", peer_run=grad_cam_peer("XGradCAM")),
        Case("eigen_cam", forwards(1), peer="pytorch-grad-cam EigenCAM", peer_run=grad_cam_peer("EigenCAM")),
        Case("score_cam", forwards(1 + channels), {**METHODS["score_cam"].defaults(), "batch": batch},
             "pytorch-grad-cam ScoreCAM", grad_cam_peer("ScoreCAM"), repeats=5),
        Case("deeplift", input_gradients(2), METHODS["deeplift"].defaults(), "captum DeepLift (same rewritten copy)",
             captum_deeplift),
        Case("gradient_shap", input_gradients(shap["n_samples"]), shap, "captum GradientShap", captum_gradient_shap,
             repeats=5),
        Case("lrp", zennit_lrp),
        *superpixel_cases(),
    ]


# ---------------------------------------------------------------- superpixel methods (LIME, Kernel SHAP)
# Peer: the lime package on the same model, segmentation, number of samples, hide value and batch size.
# Floor: the same number of bare forwards in batches.

SUPERPIXEL_SAMPLES = 1000


def lime_peer(s: Setup, params: dict) -> Runner:
    """lime's LimeImageExplainer; its segmentation_fn is our segmentation, so both pay for the same one."""
    import contextlib
    import io

    import numpy as np
    from lime import lime_image

    from core.explain.superpixels import segment_input

    channels = s.x.shape[1]
    image = np.repeat(s.x[0].permute(1, 2, 0).cpu().numpy().astype(np.float64), 3 // channels, axis=2)

    def classify(images: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(images[..., :channels]).permute(0, 3, 1, 2).to(s.loaded.device, torch.float32)
        with torch.inference_mode():
            return torch.softmax(s.model(batch), dim=1).cpu().numpy()

    explainer = lime_image.LimeImageExplainer(random_state=0)
    hide_color = {"mean": None, "zero": 0.0}[params["hide"]]

    def run() -> None:
        with contextlib.redirect_stderr(io.StringIO()):  # lime draws a tqdm bar per call
            explainer.explain_instance(image, classify, labels=(s.target,), top_labels=None, hide_color=hide_color,
                                       num_samples=params["n_samples"], batch_size=s.batch_size,
                                       segmentation_fn=lambda _img: segment_input(s.x[0], params, 0))
    return run


def superpixel_cases() -> list[Case]:
    """LIME and Kernel SHAP at their defaults but SUPERPIXEL_SAMPLES samples, against 1,000 bare forwards."""
    return [
        Case(name, forwards(SUPERPIXEL_SAMPLES), {**METHODS[name].defaults(), "n_samples": SUPERPIXEL_SAMPLES},
             f"lime LimeImageExplainer{suffix}", lime_peer, repeats=3)
        for name, suffix in (("lime", ""), ("kernel_shap", " (LIME: same segmentation and samples)"))
    ]


def setup(batch_size: int) -> Setup:
    """The bundled model (an untrained copy while its weights are missing) and the first pneumonia X-ray."""
    try:
        loaded, note = load_model("cxr-resnet18"), "bundled cxr-resnet18"
    except ModelUnavailable:
        loaded, note = _untrained(), "untrained cxr-resnet18 copy (bundled weights missing)"
    folder = data_dir()
    if folder is None:
        sys.exit("No chest X-ray folder: set CNNLENS_DATA (see core.data.data_dir).")
    path = sorted((folder / "PNEUMONIA").iterdir())[0]
    x = preprocess(load_image(path), loaded.spec.preprocessing, loaded.device)
    with torch.no_grad():
        target = int(loaded.model(x).argmax(dim=1))
    return Setup(loaded, x, target, batch_size, f"{note}; {path.name}")


def _untrained() -> LoadedModel:
    spec = ModelSpec("cxr-resnet18 (untrained)", "untrained copy of the bundled architecture", "resnet18-w32",
                     Preprocessing(SIDE, 1, (0.5,), (0.25,)), ("NORMAL", "PNEUMONIA"), "layer4", "avgpool",
                     lambda: WideResNet18(32, 1, 2), lambda _m: None, "none")
    return instantiate(spec)  # its load_weights does nothing: random initial weights


def measure(case: Case, s: Setup, repeats_scale: float = 1.0) -> dict[str, Any]:
    """One row of results for a case."""
    ours = lambda: explain(s.loaded, s.x, case.method, s.target, batch_size=s.batch_size, **case.params)  # noqa: E731
    fns = {"ours": ours, "floor": case.floor(s)}
    if case.peer_run is not None:
        fns["peer"] = case.peer_run(s, case.params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peers warn about hooks on reused/in-place modules; the maps are not used
        t = interleaved_medians(fns, max(1, round(case.repeats * repeats_scale)))
    peer_seconds = t.get("peer")
    return {
        "method": case.method,
        "seconds": t["ours"],
        "floor_seconds": t["floor"],
        "ratio_to_floor": t["ours"] / t["floor"],
        "peer": case.peer,
        "peer_seconds": peer_seconds,
        "speedup_vs_peer": peer_seconds / t["ours"] if peer_seconds is not None else None,
    }


def main(argv: list[str] | None = None) -> None:
    """Run the selected cases and print a table (or JSON)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print a JSON list of result objects")
    p.add_argument("--methods", default="", help="comma-separated subset of methods")
    p.add_argument("--repeats", type=float, default=1.0, help="scale every case's repeat count")
    p.add_argument("--batch-size", type=int, default=BATCH, help="images per forward (default: the explainers' own)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    s = setup(args.batch_size)
    with torch.no_grad():
        box: list[torch.Tensor] = []
        handle = s.layer.register_forward_hook(lambda _m, _i, out: box.append(out))
        try:
            s.model(s.x)
        finally:
            handle.remove()
    channels = min(box[0].shape[1], METHODS["score_cam"].defaults()["max_channels"])
    chosen = [c for c in cases(s.x.shape[-1], channels, s.batch_size)
              if not args.methods or c.method in args.methods.split(",")]
    rows = []
    for case in chosen:
        rows.append(measure(case, s, args.repeats))
        if not args.json:
            print(f"{case.method}: {rows[-1]['seconds']:.4f} s", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{s.note}; {torch.get_num_threads()} threads; batch size {s.batch_size}; medians of interleaved runs")
    print(table(rows, ["method", "seconds", "floor_seconds", "ratio_to_floor", "peer", "peer_seconds",
                       "speedup_vs_peer"]))


if __name__ == "__main__":
    main()
