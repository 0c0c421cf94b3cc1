"""Which models the X-ray app can offer: zoo models (with the reason when one cannot load here) and user checkpoints.

A user checkpoint is a torchvision architecture plus a weights file (``.pt``/``.pth`` state dict or
``.safetensors``) plus class names; a CNN Lens checkpoint (safetensors written by ``core.train``) carries
its own config (kept whole, its training split included). Models come from
core.zoo's registry and live in its one cache; user models hold at most MAX_USER_MODELS places there, so memory
stays bounded however many are uploaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import pickle
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from torch import nn

from core.explain.base import last_spatial_layer
from core.zoo import (
    IMAGENET_MEAN,
    IMAGENET_MODELS,
    IMAGENET_STD,
    TRUST_PREFIX,
    LoadedModel,
    ModelSpec,
    ModelUnavailable,
    Preprocessing,
    architecture_params,
    cached,
    cached_only,
    cnn_architectures,
    get_spec,
    instantiate,
    load_model,
    model_names,
    new_architecture,
    read_checkpoint_config,
    spec_from_checkpoint,
    unavailable_reason,
)

USER_PREFIX = "user:"
MAX_USER_MODELS = 2
MAX_WEIGHTS_BYTES = 600 * 2**20  # a weights file, and what it decompresses to (a .pt is a zip that may deflate)
MAX_CLASSES = 1000
MAX_CLASS_NAME = 100
# Sane ranges of a checkpoint's architecture: each bounds what one forward pass costs (width: channels of the first
# stage, 4x that in the last; input_size: the side every analysis runs at). The bundled model is width 32 at 160 px.
WIDTH_RANGE = (4, 128)
INPUT_SIZE_RANGE = (16, 1024)
TORCHVISION_SIZE_RANGE = (32, 1024)  # torchvision CNNs downsample 32x: smaller inputs leave no map to explain

# torchvision CNNs whose float32 weights fit the weights cap (convnext_large and regnet_y_128gf do not)
ARCHITECTURES: tuple[str, ...] = cnn_architectures(max_params=MAX_WEIGHTS_BYTES // 4)


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
            source = Path(get_spec(name).weights_source)
            try:
                if source.suffix == ".safetensors":  # the operator's file, held to the ranges uploads are
                    check_config(read_checkpoint_config(source))
                load_model(name)  # a local file whose header reads can still hold tensors that do not fit
            except ModelUnavailable as err:
                reason = str(err)
            except ValueError as err:
                reason = f"{source.name}: {err}"
        if reason is None:
            available.append(name)
        else:
            unavailable[name] = reason
    return ZooStatus(tuple(available), unavailable)


def get_model(key: str) -> LoadedModel:
    """A zoo model by name or a loaded user model by its key; ModelUnavailable when gone or unloadable."""
    if key.startswith(USER_PREFIX):
        loaded = cached_only(("user", key))  # user models share core.zoo's cache, at most MAX_USER_MODELS of them
        if loaded is None:
            raise ModelUnavailable("Your checkpoint is no longer loaded (the server keeps the last "
                                   f"{MAX_USER_MODELS}); load it again.")
        return loaded
    return load_model(key)


def parse_class_names(text: str) -> tuple[str, ...]:
    """Class names from comma- or newline-separated text; ValueError when empty, repeated or too many."""
    names = tuple(n.strip() for n in text.replace("\n", ",").split(",") if n.strip())
    _check_class_names(names)
    return names


def _check_class_names(names: tuple[str, ...]) -> None:
    if len(names) < 2:
        raise ValueError("Give at least two class names, separated by commas (e.g. NORMAL, PNEUMONIA).")
    if len(names) > MAX_CLASSES:
        raise ValueError(f"{len(names):,} class names: this app takes at most {MAX_CLASSES:,}.")
    if len(set(names)) != len(names):
        raise ValueError("Class names must be distinct.")
    if any(len(n) > MAX_CLASS_NAME for n in names):
        raise ValueError(f"Class names must be at most {MAX_CLASS_NAME} characters long.")


def _whole(cfg: dict, key: str, low: int, high: int) -> int:
    """``cfg[key]`` when it is a whole number in [low, high] (not a bool, not a float); else a one-line reason."""
    value = cfg.get(key)
    if type(value) is not int:
        raise ValueError(f"The checkpoint's config gives {key} as {_shown(value)}; it must be a whole number "
                         f"from {low} to {high}.")
    if not low <= value <= high:
        raise ValueError(f"The checkpoint's config gives {key} {value}; this app accepts {low} to {high}.")
    return value


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def check_config(cfg: object) -> None:
    """Check a CNN Lens checkpoint config (architecture metadata) against sane ranges before anything is built.

    A 772-byte file whose config says ``width: 400`` or ``input_size: 6000`` would otherwise cost gigabytes and
    seconds on load and on every later analysis; each problem is one sentence (ValueError)."""
    if not isinstance(cfg, dict):
        raise ValueError("The checkpoint's CNN Lens config is not a JSON object.")
    if cfg.get("architecture", "resnet18") != "resnet18":
        raise ValueError(f"The checkpoint's config names architecture {_shown(cfg.get('architecture'))}; CNN Lens "
                         "checkpoints are resnet18.")
    _whole(cfg, "width", *WIDTH_RANGE)
    _whole(cfg, "input_size", *INPUT_SIZE_RANGE)
    channels = _whole(cfg, "channels", 1, 3)
    if channels == 2:
        raise ValueError("The checkpoint's config gives channels 2; it must be 1 (grey) or 3 (RGB).")
    names = cfg.get("class_names")
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        raise ValueError("The checkpoint's config must list its class names as non-empty strings.")
    _check_class_names(tuple(names))
    for key in ("mean", "std"):
        values = cfg.get(key)
        if (not isinstance(values, list) or len(values) != channels
                or not all(type(v) in (int, float) and math.isfinite(v) for v in values)):
            raise ValueError(f"The checkpoint's config must give {key} as {channels} finite number(s), one per "
                             "channel.")
    if not all(v > 0 for v in cfg["std"]):
        raise ValueError("The checkpoint's config gives a std that is not positive.")
    if not isinstance(cfg.get("description", ""), str) or len(cfg.get("description", "")) > 2000:
        raise ValueError("The checkpoint's config description must be text of at most 2,000 characters.")


def load_user_checkpoint(path: Path, architecture: str, class_names: str, input_size: int = 224
                         ) -> tuple[str, LoadedModel, str]:
    """Load an uploaded checkpoint file; returns (model key, loaded model, suggested target layer).

    Every path is bounded before anything large is allocated: the file's size, what a ``.pt`` zip decompresses to,
    the architecture and input size (and a CNN Lens config's width, channels and classes).
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
    spec = _cnnlens_spec(path, data, digest) or _torchvision_spec(data, architecture, class_names, input_size,
                                                                  digest)
    key = f"{USER_PREFIX}{spec.name}"
    # instantiate reads the weights now, while the upload still exists
    loaded = cached(("user", key), lambda: instantiate(spec), keep=MAX_USER_MODELS)
    prep = loaded.spec.preprocessing
    sample = torch.zeros(1, prep.channels, prep.size, prep.size, device=loaded.device)
    return key, loaded, last_spatial_layer(loaded.model, sample)


def _cnnlens_spec(path: Path, data: bytes, digest: str) -> ModelSpec | None:
    """A spec when the file is a CNN Lens safetensors checkpoint (config in its metadata), else None; ValueError
    when its config is out of range or malformed."""
    try:
        cfg = read_checkpoint_config(path)
    except ModelUnavailable:
        return None
    check_config(cfg)
    try:
        state = load_safetensors(data)
        spec = spec_from_checkpoint(path, name=f"cnnlens-{digest}")
    except (SafetensorError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"The checkpoint's CNN Lens config or tensors are malformed ({type(err).__name__}).") from err
    state = {k: v for k, v in state.items() if not k.startswith(TRUST_PREFIX)}  # core.calibrate's statistics

    def load_weights(model: nn.Module) -> None:
        _load_state(model, state)

    return dataclasses.replace(spec, load_weights=load_weights, weights_source="uploaded file")


def _torchvision_spec(data: bytes, architecture: str, class_text: str, input_size: int, digest: str) -> ModelSpec:
    if architecture not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {architecture!r}; choose a torchvision CNN such as resnet18.")
    classes = parse_class_names(class_text)
    low, high = TORCHVISION_SIZE_RANGE
    if isinstance(input_size, bool) or not isinstance(input_size, int) or not low <= input_size <= high:
        raise ValueError(f"Input size must be a whole number of pixels from {low} to {high}.")
    # A state dict holds the parameters and buffers (float32: 4 bytes each); a training checkpoint may add an
    # optimiser's state (Adam: twice the parameters) and float64 copies, hence the headroom.
    expected = 4 * (architecture_params(architecture) or MAX_WEIGHTS_BYTES // 4)
    state = _read_state_dict(data, min(MAX_WEIGHTS_BYTES, 4 * expected + 16 * 2**20))

    def build() -> nn.Module:
        return new_architecture(architecture, num_classes=len(classes))

    def load_weights(model: nn.Module) -> None:
        _load_state(model, state)

    cam_layer = _cam_layer(build, input_size)
    return ModelSpec(name=f"{architecture}-{digest}", description=f"Your {architecture} checkpoint",
                     architecture=architecture, preprocessing=Preprocessing(input_size, 3, IMAGENET_MEAN, IMAGENET_STD),
                     class_names=classes, cam_layer=cam_layer, embedding_layer=cam_layer, build=build,
                     load_weights=load_weights, weights_source="uploaded file")


def _cam_layer(build: Callable[[], nn.Module], input_size: int) -> str:
    """The last spatial layer, found on the meta device (shapes only, no memory) where the architecture allows."""
    try:
        with torch.device("meta"):
            return last_spatial_layer(build(), torch.zeros(1, 3, input_size, input_size))
    except NotImplementedError:  # regnets compute their widths from tensors while they are built
        return last_spatial_layer(build(), torch.zeros(1, 3, input_size, input_size))


def decompressed_size(data: bytes) -> int:
    """Bytes a weights file expands to when loaded: its own size for safetensors (stored as is), the sum of its
    members' uncompressed sizes for torch.save's zip format (members may be deflated: a 1 MB file can hold 1 GiB
    of zeros). ValueError for anything else, including PyTorch's pre-1.6 format, whose storage sizes are only
    known once it is unpickled."""
    if data[8:9] == b"{":
        return len(data)
    if data.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                return sum(member.file_size for member in archive.infolist())
        except (zipfile.BadZipFile, ValueError, OSError) as err:
            raise ValueError(f"The weights file is not a readable PyTorch or safetensors checkpoint ({err}).") from err
    raise ValueError("The weights file is not a readable PyTorch or safetensors checkpoint (this app reads "
                     "torch.save's zip format, PyTorch 1.6 or later, and safetensors).")


def _read_state_dict(data: bytes, limit: int = MAX_WEIGHTS_BYTES) -> dict[str, torch.Tensor]:
    """Tensors from safetensors or a torch zip (loaded with weights_only, so no code runs), refused before loading
    when they would expand to more than ``limit`` bytes."""
    expanded = decompressed_size(data)
    if expanded > limit:
        raise ValueError(f"The weights file expands to {expanded / 2**20:,.0f} MiB, more than the "
                         f"{limit / 2**20:,.0f} MiB this architecture's weights can need.")
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
