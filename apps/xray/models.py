"""Which models the X-ray app can offer: zoo models (with the reason when one cannot load here) and user checkpoints.

A user checkpoint is a torchvision architecture plus a weights file (``.pt``/``.pth`` state dict or
``.safetensors``) plus class names; a CNN Lens checkpoint (safetensors written by ``core.train``) carries
its own config. Loaded user models live in a small LRU so memory stays bounded however many are uploaded.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from torch import nn
from torchvision import models as tvm

from core.explain.base import last_spatial_layer
from core.zoo import (
    IMAGENET_MEAN,
    IMAGENET_MODELS,
    IMAGENET_STD,
    LoadedModel,
    ModelSpec,
    ModelUnavailable,
    Preprocessing,
    get_spec,
    instantiate,
    load_model,
    model_names,
    read_checkpoint_config,
    spec_from_checkpoint,
    unavailable_reason,
)

USER_PREFIX = "user:"
MAX_USER_MODELS = 2
MAX_WEIGHTS_BYTES = 600 * 2**20
_NOT_CNN = ("vit_", "swin_", "maxvit")  # transformers: no convolutional feature map to explain
ARCHITECTURES: tuple[str, ...] = tuple(n for n in tvm.list_models(module=tvm) if not n.startswith(_NOT_CNN))


@dataclass(frozen=True)
class ZooStatus:
    """Zoo models that can be used here, and the ones that cannot with a human reason."""

    available: tuple[str, ...]
    unavailable: dict[str, str]


def zoo_status() -> ZooStatus:
    """Check every zoo model without touching the network: bundled files must load, ImageNet weights be cached.

    Bundled models are loaded here (once per process), since a file whose header reads fine can still hold
    tensors that do not fit its architecture."""
    available: list[str] = []
    unavailable: dict[str, str] = {}
    for name in model_names():
        reason = unavailable_reason(name)
        if reason is not None and name in IMAGENET_MODELS:
            reason += "; this app never downloads, so fetch them once with internet access."
        if reason is None and not get_spec(name).downloads_weights:
            try:
                load_model(name)  # a local file whose header reads can still hold tensors that do not fit
            except ModelUnavailable as err:
                reason = str(err)
        if reason is None:
            available.append(name)
        else:
            unavailable[name] = reason
    return ZooStatus(tuple(available), unavailable)


_USER: OrderedDict[str, LoadedModel] = OrderedDict()
_USER_LOCK = threading.Lock()


def get_model(key: str) -> LoadedModel:
    """A zoo model by name or a loaded user model by its key; ModelUnavailable when gone or unloadable."""
    if key.startswith(USER_PREFIX):
        with _USER_LOCK:
            if key not in _USER:
                raise ModelUnavailable("Your checkpoint is no longer loaded (the server keeps the last "
                                       f"{MAX_USER_MODELS}); load it again.")
            _USER.move_to_end(key)
            return _USER[key]
    return load_model(key)


def parse_class_names(text: str) -> tuple[str, ...]:
    """Class names from comma- or newline-separated text; ValueError when empty or repeated."""
    names = tuple(n.strip() for n in text.replace("\n", ",").split(",") if n.strip())
    if len(names) < 2:
        raise ValueError("Give at least two class names, separated by commas (e.g. NORMAL, PNEUMONIA).")
    if len(set(names)) != len(names):
        raise ValueError("Class names must be distinct.")
    return names


def load_user_checkpoint(path: Path, architecture: str, class_names: str, input_size: int = 224
                         ) -> tuple[str, LoadedModel, str]:
    """Load an uploaded checkpoint file; returns (model key, loaded model, suggested target layer).

    Raises ModelUnavailable or ValueError with a message a person can act on.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise ValueError("The weights file is empty.")
    if size > MAX_WEIGHTS_BYTES:
        raise ValueError(f"The weights file is larger than {MAX_WEIGHTS_BYTES // 2**20} MiB.")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()[:16]
    spec = _cnnlens_spec(path, digest) or _torchvision_spec(data, architecture, class_names, input_size, digest)
    key = f"{USER_PREFIX}{spec.name}"
    with _USER_LOCK:
        if key in _USER:
            _USER.move_to_end(key)
            loaded = _USER[key]
        else:
            loaded = instantiate(spec)  # reads the weights now, while the upload still exists
            _USER[key] = loaded
            while len(_USER) > MAX_USER_MODELS:
                _USER.popitem(last=False)
    prep = loaded.spec.preprocessing
    sample = torch.zeros(1, prep.channels, prep.size, prep.size, device=loaded.device)
    return key, loaded, last_spatial_layer(loaded.model, sample)


def _cnnlens_spec(path: Path, digest: str) -> ModelSpec | None:
    """A spec when the file is a CNN Lens safetensors checkpoint (config in its metadata), else None."""
    try:
        read_checkpoint_config(path)
    except ModelUnavailable:
        return None
    state = load_safetensors(path.read_bytes())
    spec = spec_from_checkpoint(path, name=f"cnnlens-{digest}")

    def load_weights(model: nn.Module) -> None:
        _load_state(model, state)

    return ModelSpec(spec.name, spec.description, spec.architecture, spec.preprocessing, spec.class_names,
                     spec.cam_layer, spec.embedding_layer, spec.build, load_weights, "uploaded file")


def _torchvision_spec(data: bytes, architecture: str, class_text: str, input_size: int, digest: str) -> ModelSpec:
    if architecture not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {architecture!r}; choose a torchvision CNN such as resnet18.")
    classes = parse_class_names(class_text)
    state = _read_state_dict(data)
    if not 32 <= int(input_size) <= 1024:
        raise ValueError("Input size must be between 32 and 1024 pixels.")

    def build() -> nn.Module:
        kwargs = {"aux_logits": False, "init_weights": False} if architecture in ("googlenet", "inception_v3") else {}
        return getattr(tvm, architecture)(weights=None, num_classes=len(classes), **kwargs)

    def load_weights(model: nn.Module) -> None:
        _load_state(model, state)

    model = build()
    cam_layer = last_spatial_layer(model, torch.zeros(1, 3, int(input_size), int(input_size)))
    return ModelSpec(f"{architecture}-{digest}", f"Your {architecture} checkpoint", architecture,
                     Preprocessing(int(input_size), 3, IMAGENET_MEAN, IMAGENET_STD), classes, cam_layer, cam_layer,
                     build, load_weights, "uploaded file")


def _read_state_dict(data: bytes) -> dict[str, torch.Tensor]:
    """Tensors from safetensors or a torch pickle (loaded with weights_only, so no code runs)."""
    try:
        if data[8:9] == b"{":
            return load_safetensors(data)
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" in str(err):  # a class or function in the pickle: it would run code
            raise ValueError("The weights file holds Python objects besides tensors; they are refused because "
                             "loading them could run code. Save a plain state dict instead.") from err
        raise ValueError("The weights file is not a readable PyTorch or safetensors checkpoint.") from err
    except (SafetensorError, RuntimeError, ValueError, EOFError, OSError, KeyError) as err:
        raise ValueError(f"The weights file is not a readable PyTorch or safetensors checkpoint ({err}).") from err
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError("The weights file does not hold a state dict (a mapping of layer names to tensors).")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _load_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).split("\n\t")[:3]
        raise ModelUnavailable("The weights do not fit this architecture and class count: "
                               + " ".join(line.strip() for line in first)[:400]) from err
