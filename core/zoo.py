"""Model zoo: named specs (architecture, preprocessing, classes, CAM and embedding layers) and loading.

The one registry of CNN Lens (as torchvision's ``models._api`` or timm's ``create_model``): named models
(bundled safetensors files in ``models/`` whose metadata describes them, torchvision ImageNet models, the digits
CNN), torchvision architectures without weights, one cache of loaded models, one meaning of an untrained copy and
one torch-hub-cache check. ImageNet weights come from torchvision's weight API and need the internet once (offline
they raise ModelUnavailable). Loaded models are placed on CUDA when present.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torchvision import models as tvm

from core.io import LoadedImage
from core.nets import WideResNet18

# The weights are not package data (setuptools' package discovery cannot map the top-level models/ folder into a
# package without moving it): a checkout reads models/ beside core/, an installed copy needs $CNNLENS_MODELS.
MODELS_DIR = Path(os.environ.get("CNNLENS_MODELS", Path(__file__).resolve().parent.parent / "models"))
BUNDLED = "cxr-resnet18"
BUNDLED_WEIGHTS = MODELS_DIR / f"{BUNDLED}.safetensors"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DISCLAIMER = "For education and research only. Not for diagnosis or any clinical decision."


class ModelUnavailable(RuntimeError):
    """A model that cannot be loaded here (offline, missing or corrupt weights); message is human."""


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes model input: square resize, channel count and normalisation."""

    size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class TrainingSplit:
    """How ``core.train`` split its data folder by patient: enough to recompute which images a model never saw."""

    seed: int
    val_fraction: float
    val_per_class: tuple[int, ...]  # validation images per class: a recomputed split must match them...
    val_digest: str | None = None  # ...and, for checkpoints that record it, the digest of their file names


@dataclass(frozen=True)
class ModelSpec:
    """Everything the apps need to know about a model without loading it."""

    name: str
    description: str
    architecture: str
    preprocessing: Preprocessing
    class_names: tuple[str, ...]
    cam_layer: str
    embedding_layer: str
    build: Callable[[], nn.Module]
    load_weights: Callable[[nn.Module], None]
    weights_source: str
    training_split: TrainingSplit | None = None  # set for checkpoints written by core.train

    @property
    def downloads_weights(self) -> bool:
        """True when the weights come from a URL (torchvision's hub) rather than a local file."""
        return self.weights_source.startswith(("http://", "https://"))


@dataclass(frozen=True)
class LoadedModel:
    """A model in eval mode on its device, with its spec."""

    spec: ModelSpec
    model: nn.Module
    device: torch.device


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ---------------------------------------------------------------- bundled (safetensors) models


TRUST_PREFIX = "trust."  # checkpoint tensors that are not model weights (core.trust's fitted statistics)


def save_checkpoint(model: nn.Module, path: Path, config: dict[str, object],
                    extra: dict[str, torch.Tensor] | None = None) -> None:
    """Write weights plus a JSON config (architecture, width, preprocessing, classes) as safetensors; ``extra``
    tensors (names starting with ``trust.``) travel in the same file."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if extra:
        if any(not k.startswith(TRUST_PREFIX) for k in extra):
            raise ValueError(f"Extra checkpoint tensors must be named {TRUST_PREFIX}*.")
        state.update({k: v.detach().contiguous().cpu() for k, v in extra.items()})
    save_file(state, str(path), metadata={"cnnlens": json.dumps(config)})


def read_checkpoint_config(path: Path) -> dict:
    """Read the config a checkpoint carries, without loading its tensors."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        return json.loads(meta["cnnlens"])
    except FileNotFoundError as err:
        hint = " (an installed copy finds them through $CNNLENS_MODELS: the repository's models/ folder)"
        raise ModelUnavailable(f"Weights file {path.name} is missing from {path.parent}"
                               f"{hint if path.parent == MODELS_DIR else ''}.") from err
    except (KeyError, json.JSONDecodeError) as err:
        raise ModelUnavailable(f"{path.name} has no CNN Lens config in its metadata.") from err
    except Exception as err:
        raise ModelUnavailable(f"Weights file {path.name} is corrupt or not safetensors ({err}).") from err


def _first_lines(message: str, limit: int = 300) -> str:
    """The start of an error message as one line: torch lists every mismatched tensor on a line of its own."""
    text = " ".join(line.strip() for line in message.splitlines()[:2])
    return text if len(text) <= limit else text[: limit - 1] + "…"


def spec_from_checkpoint(path: Path, name: str | None = None) -> ModelSpec:
    """Build a spec for a checkpoint written by ``core.train``."""
    path = Path(path)
    cfg = read_checkpoint_config(path)
    width, channels = int(cfg["width"]), int(cfg["channels"])
    classes = tuple(cfg["class_names"])

    def build() -> nn.Module:
        return WideResNet18(width=width, in_channels=channels, num_classes=len(classes))

    def load_weights(model: nn.Module) -> None:
        try:
            state = load_file(str(path))
            model.load_state_dict({k: v for k, v in state.items() if not k.startswith(TRUST_PREFIX)})
        except Exception as err:
            raise ModelUnavailable(f"Weights file {path.name} does not match its architecture "
                                   f"({_first_lines(str(err))}).") from err

    return ModelSpec(
        name=name or path.stem,
        description=cfg.get("description", f"ResNet-18 (width {width}) trained with core.train"),
        architecture=f"resnet18-w{width}",
        preprocessing=Preprocessing(int(cfg["input_size"]), channels, tuple(cfg["mean"]), tuple(cfg["std"])),
        class_names=classes,
        cam_layer="layer4",
        embedding_layer="avgpool",
        build=build,
        load_weights=load_weights,
        weights_source=str(path),
        training_split=_training_split(cfg),
    )


def _training_split(cfg: dict) -> TrainingSplit | None:
    if "seed" not in cfg or "confusion_matrix" not in cfg.get("validation", {}) or cfg.get("limit"):
        return None  # not from core.train, or trained on a random subset that cannot be matched to a folder
    per_class = tuple(int(sum(row)) for row in cfg["validation"]["confusion_matrix"])  # rows: true classes
    # checkpoints from before val_fraction was recorded (the bundled one) used core.train's default, 0.2
    return TrainingSplit(int(cfg["seed"]), float(cfg.get("val_fraction", 0.2)), per_class, cfg.get("val_digest"))


# ---------------------------------------------------------------- torchvision architectures and ImageNet weights

_NOT_CNN = ("vit_", "swin_", "maxvit")  # transformers: no convolutional feature map to explain


def hub_cached(url: str) -> Path | None:
    """The torch hub cache's copy of a weights URL, or None when it has not been downloaded (nothing is fetched)."""
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    return cached if cached.is_file() else None


def architecture_params(architecture: str) -> int:
    """Parameters of a torchvision architecture with its ImageNet head, from its weights' metadata (nothing built);
    0 when torchvision has no weights for it."""
    try:
        return int(next(iter(tvm.get_model_weights(architecture))).meta["num_params"])
    except (ValueError, KeyError, StopIteration):
        return 0


def cnn_architectures(max_params: int | None = None) -> tuple[str, ...]:
    """torchvision's convolutional classifiers (no transformers), optionally only those with at most
    ``max_params`` parameters."""
    return tuple(n for n in tvm.list_models(module=tvm)
                 if not n.startswith(_NOT_CNN) and (max_params is None or architecture_params(n) <= max_params))


# The architectures the lessons compare, with a line each: the bundled model's and classic torchvision CNNs.
LESSON_ARCHITECTURES: dict[str, str] = {
    BUNDLED: "the bundled chest X-ray ResNet-18 (width 32, 1 channel)",
    "resnet18": "torchvision ResNet-18 (He et al. 2016)",
    "vgg16": "torchvision VGG-16 (Simonyan & Zisserman 2015)",
    "alexnet": "torchvision AlexNet (Krizhevsky et al. 2012, one-GPU variant)",
    "mobilenet_v2": "torchvision MobileNetV2 (Sandler et al. 2018)",
    "densenet121": "torchvision DenseNet-121 (Huang et al. 2017)",
}


def _check_architecture(name: str) -> None:
    if name != BUNDLED and name not in tvm.list_models(module=tvm):
        raise ValueError(f"Unknown architecture {name!r}; choose one of {', '.join(LESSON_ARCHITECTURES)} "
                         "or another torchvision CNN.")


def new_architecture(name: str, num_classes: int | None = None) -> nn.Module:
    """The bundled model's architecture or a torchvision CNN, built with no weights (nothing is downloaded)."""
    _check_architecture(name)
    if name == BUNDLED:
        return get_spec(BUNDLED).build()
    kwargs: dict[str, object] = {} if num_classes is None else {"num_classes": num_classes}
    if name in ("googlenet", "inception_v3"):  # their auxiliary heads only exist for training
        kwargs |= {"aux_logits": False, "init_weights": False}
    return getattr(tvm, name)(weights=None, **kwargs)


def architecture_preprocessing(name: str) -> Preprocessing:
    """Input channels, default size and normalisation of an architecture (ImageNet's for torchvision CNNs)."""
    _check_architecture(name)
    return get_spec(BUNDLED).preprocessing if name == BUNDLED else Preprocessing(224, 3, IMAGENET_MEAN, IMAGENET_STD)


def build_architecture(name: str, seed: int = 0) -> nn.Module:
    """An untrained copy of an architecture (the same meaning as ``untrained_copy``), in eval mode on the CPU."""
    return _untrained(lambda: new_architecture(name), seed).eval()


def trained_architecture(name: str) -> nn.Module:
    """Trained weights on the CPU: the bundled model, or ImageNet weights only when already in the torch hub
    cache (never downloads). Raises ModelUnavailable with a sentence saying why when there are none."""
    _check_architecture(name)
    if name == BUNDLED:
        return load_model(BUNDLED, torch.device("cpu")).model
    weights = tvm.get_model_weights(name).DEFAULT
    cached = hub_cached(weights.url)
    if cached is None:
        raise ModelUnavailable(
            f"ImageNet weights for {name} ({Path(weights.url).name}) are not in the torch hub cache and this lesson "
            f"never downloads them (no internet here); trained weights are available for the bundled {BUNDLED}.")
    model = new_architecture(name)
    model.load_state_dict(torch.load(cached, map_location="cpu", weights_only=True))
    return model.eval()


def _imagenet_spec(name: str, arch: str, weights_enum: tvm.WeightsEnum, cam_layer: str, emb: str) -> ModelSpec:
    def build() -> nn.Module:
        return new_architecture(arch)

    def load_weights(model: nn.Module) -> None:
        try:
            model.load_state_dict(weights_enum.get_state_dict(progress=False, check_hash=True))
        except (OSError, RuntimeError) as err:  # URLError is an OSError
            raise ModelUnavailable(
                f"{name} needs torchvision's ImageNet weights ({Path(weights_enum.url).name}), which are "
                f"downloaded on first use. They are not in the torch hub cache ({torch.hub.get_dir()}) and "
                f"the download failed ({type(err).__name__}): connect to the internet once, or copy the "
                "file into that folder."
            ) from err

    return ModelSpec(
        name=name,
        description=f"torchvision {arch}, ImageNet-1k weights (natural photos, not X-rays)",
        architecture=arch,
        preprocessing=Preprocessing(224, 3, IMAGENET_MEAN, IMAGENET_STD),
        class_names=tuple(weights_enum.meta["categories"]),
        cam_layer=cam_layer,
        embedding_layer=emb,
        build=build,
        load_weights=load_weights,
        weights_source=weights_enum.url,
    )


# ---------------------------------------------------------------- the registry: every named model

# zoo name -> (torchvision architecture, weights, CAM layer, embedding layer)
_IMAGENET: dict[str, tuple[str, tvm.WeightsEnum, str, str]] = {
    "resnet18-imagenet": ("resnet18", tvm.ResNet18_Weights.IMAGENET1K_V1, "layer4", "avgpool"),
    "densenet121-imagenet": ("densenet121", tvm.DenseNet121_Weights.IMAGENET1K_V1, "features.norm5",
                             "features.norm5"),
}
IMAGENET_MODELS = tuple(_IMAGENET)
DIGITS = "digits-cnn"  # a teaching model for 8 x 8 digits (core.embed.digits), not for X-rays or photos


def _digits_spec() -> ModelSpec:
    from core.embed.digits import digits_spec  # imported when asked for: that module builds on this one

    return digits_spec()


def _factories(demos: bool) -> dict[str, Callable[[], ModelSpec]]:
    """Name -> spec factory for every registered model (bundled first); ``demos`` adds the digits CNN.
    Adding a model is one entry here."""
    factories: dict[str, Callable[[], ModelSpec]] = {BUNDLED: lambda: spec_from_checkpoint(BUNDLED_WEIGHTS, BUNDLED)}
    for name, args in _IMAGENET.items():
        factories[name] = lambda name=name, args=args: _imagenet_spec(name, *args)
    if demos:
        factories[DIGITS] = _digits_spec
    return factories


def list_specs(demos: bool = False) -> dict[str, ModelSpec]:
    """The specs that can be built here, by name (bundled first; a missing or corrupt bundled file is left out)."""
    specs: dict[str, ModelSpec] = {}
    for name, factory in _factories(demos).items():
        with contextlib.suppress(ModelUnavailable):  # get_spec(name) reports why it is missing
            specs[name] = factory()
    return specs


def model_names(demos: bool = False) -> list[str]:
    """Every zoo name, usable here or not (bundled first): ``unavailable_reason`` says why one cannot be used.
    ``demos`` adds the digits CNN, which reads 8 x 8 digits rather than X-rays or photos."""
    return list(_factories(demos))


def unavailable_reason(name: str) -> str | None:
    """Why a zoo model cannot be used here, found without loading or downloading anything; None when its weights
    file reads or its torchvision weights are in the torch hub cache. (A file can still hold tensors that do not
    fit; ``load_model`` finds that.)"""
    try:
        spec = get_spec(name)
    except ModelUnavailable as err:
        return str(err)
    if spec.downloads_weights and hub_cached(spec.weights_source) is None:
        return (f"needs torchvision's ImageNet weights ({Path(spec.weights_source).name}), which are not in the "
                f"torch hub cache ({Path(torch.hub.get_dir()) / 'checkpoints'})")
    return None


def get_spec(name: str) -> ModelSpec:
    """The spec for a zoo name (the digits CNN included) or a path to a checkpoint written by ``core.train``;
    ModelUnavailable saying what is wrong otherwise."""
    factories = _factories(demos=True)
    if name in factories:
        return factories[name]()
    if name.endswith(".safetensors"):
        return spec_from_checkpoint(Path(name))
    raise ModelUnavailable(f"Unknown model {name!r}; choose one of {', '.join(factories)}.")


# ---------------------------------------------------------------- loading, and the one cache


_CACHE: OrderedDict[tuple[str, ...], LoadedModel] = OrderedDict()
_CACHE_LOCK = threading.RLock()


def cached(key: tuple[str, ...], make: Callable[[], LoadedModel], keep: int | None = None) -> LoadedModel:
    """The process's one cache of loaded models: ``key``'s model, made once by ``make``.

    Keys start with their kind ("zoo", "untrained", "user" ...); ``keep`` bounds how many of that kind stay
    (least recently used dropped first), so uploads cannot fill the memory.
    """
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = make()
            if keep is not None:
                same_kind = [k for k in _CACHE if k[0] == key[0]]
                for old in same_kind[:-keep]:
                    del _CACHE[old]
        _CACHE.move_to_end(key)
        return _CACHE[key]


def cached_only(key: tuple[str, ...]) -> LoadedModel | None:
    """The cached model for ``key`` (marked as just used), or None when it was never loaded or was dropped."""
    with _CACHE_LOCK:
        if key not in _CACHE:
            return None
        _CACHE.move_to_end(key)
        return _CACHE[key]


def load_model(name: str, device: torch.device | None = None) -> LoadedModel:
    """Load (once per process) a model in eval mode on ``device`` (default: CUDA if present)."""
    device = device or default_device()
    return cached(("zoo", name, str(device)), lambda: instantiate(get_spec(name), device))


def load_untrained(name: str, seed: int = 0, device: torch.device | None = None) -> LoadedModel:
    """The named model's untrained copy (``untrained_copy``), made once per process for each seed and device."""
    device = device or default_device()
    return cached(("untrained", name, str(seed), str(device)), lambda: untrained_copy(get_spec(name), device, seed))


def instantiate(spec: ModelSpec, device: torch.device | None = None) -> LoadedModel:
    """Build a spec's model with its weights, in eval mode on ``device`` (default: CUDA if present)."""
    model = spec.build()
    spec.load_weights(model)
    device = device or default_device()
    return LoadedModel(spec, model.to(device).eval(), device)


def _untrained(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """What "untrained" means everywhere in CNN Lens: the architecture's seeded initialisation with every
    BatchNorm scale 1. The bundled model zero-initialises each residual branch's last BatchNorm (a training
    trick: each block starts as the identity); that is undone, so an untrained copy is the standard random
    network (as Luo et al. study) rather than one whose residual branches are switched off."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d) and module.weight is not None:
            nn.init.ones_(module.weight)
    return model


def untrained_copy(spec: ModelSpec, device: torch.device | None = None, seed: int = 0) -> LoadedModel:
    """The spec's architecture untrained (seeded random initial weights; see ``_untrained``), for
    trained-vs-untrained comparisons.

    It trained on nothing, so its spec records no training split. The global RNG is forked, so callers' random
    streams are unaffected.
    """
    device = device or default_device()
    model = _untrained(spec.build, seed)
    return LoadedModel(dataclasses.replace(spec, training_split=None), model.to(device).eval(), device)


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule at a dotted path, with a clear error when it does not exist."""
    try:
        return model.get_submodule(name)
    except AttributeError as err:
        raise ValueError(f"The model has no layer {name!r}.") from err


# ---------------------------------------------------------------- preprocessing


def to_channels(array: np.ndarray, channels: int) -> np.ndarray:
    """Grayscale H x W or colour H x W x 3 -> C x H x W with the requested channel count."""
    if array.ndim == 2:
        gray = array[None]
        return np.repeat(gray, channels, axis=0) if channels == 3 else gray
    chw = np.moveaxis(array, -1, 0)
    if channels == 3:
        return chw
    lum = 0.299 * chw[0] + 0.587 * chw[1] + 0.114 * chw[2]  # ITU-R 601, as Pillow's "L"
    return lum[None].astype(np.float32)


def preprocess(image: LoadedImage | np.ndarray, prep: Preprocessing, device: torch.device | None = None
               ) -> torch.Tensor:
    """Image in [0, 1] -> normalised 1 x C x S x S tensor, as the model sees it."""
    array = image.array if isinstance(image, LoadedImage) else image
    x = torch.from_numpy(np.ascontiguousarray(to_channels(array.astype(np.float32), prep.channels)))[None]
    x = normalise(resize(x, prep.size), prep)
    return x.to(device) if device is not None else x


def normalise(x: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """(x - mean) / std per channel for an N x C x S x S batch on any device: the last step of ``preprocess``."""
    mean = torch.tensor(prep.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(prep.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Square resize (aspect not kept, as in the training data) with antialiasing."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def denormalise(x: torch.Tensor, prep: Preprocessing) -> np.ndarray:
    """Model input tensor (1 x C x S x S) -> displayable H x W (or H x W x 3) array in [0, 1]."""
    mean = torch.tensor(prep.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(prep.std, device=x.device).view(1, -1, 1, 1)
    img = (x * std + mean).clamp(0, 1)[0].detach().cpu().numpy()
    return img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1)


@torch.no_grad()
def predict(loaded: LoadedModel, x: torch.Tensor) -> torch.Tensor:
    """Class probabilities (N x K) for a preprocessed batch."""
    return torch.softmax(loaded.model(x.to(loaded.device)), dim=1)
