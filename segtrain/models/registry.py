"""segmentation-models-pytorch architectures by name, built offline, for any input size.

smp is imported inside the functions: it pulls in timm and huggingface_hub (seconds), which
commands that never build an smp model should not pay for. ``encoder_weights=None`` is always
passed to smp, so nothing is ever downloaded; pretrained encoder weights come from the local
file named by ``model.encoder_weights`` and are loaded here.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from segtrain.config.schema import ModelConfig
from segtrain.errors import UserError
from segtrain.models.padding import PadToMultiple

# smp's default decoder widths for the Unet family; a shallower encoder takes the first ones.
_DECODER_CHANNELS = (256, 128, 64, 32, 16)


def _arch_kwargs(arch: str, depth: int | None) -> dict:
    """smp keyword arguments that keep the output at the input's resolution for ``depth`` stages.

    smp's FPN and PSPNet upsample their output by a fixed factor that is only right for their
    default depth, so the factor is derived from the depth here.
    """
    if depth is None:
        return {}
    kwargs: dict = {"encoder_depth": depth}
    if arch in ("Unet", "UnetPlusPlus", "MAnet"):
        kwargs["decoder_channels"] = _DECODER_CHANNELS[:depth]
    elif arch == "FPN":
        kwargs["upsampling"] = 2 ** (depth - 3)  # FPN merges at stride 2**(depth - 3) ... 4
    elif arch == "PSPNet":
        kwargs["upsampling"] = 2**depth  # PSPNet predicts at the deepest stride
    return kwargs


def _input_multiple(arch: str, net: nn.Module) -> int:
    """The size multiple ``net`` needs: the encoder's output stride (less when it is dilated).

    PAN's feature pyramid attention pools the deepest features three more times (stride 8).
    """
    stride = net.encoder.output_stride
    return stride * 8 if arch == "PAN" else stride


def _check_encoder_name(name: str) -> None:
    import segmentation_models_pytorch as smp
    import timm

    known = timm.is_model(name[3:]) if name.startswith("tu-") else name in smp.encoders.get_encoder_names()
    if not known:
        raise UserError(f"model.encoder: unknown smp encoder {name!r} (see smp's encoder table; "
                        "timm models as 'tu-<name>')")


def build_smp(cfg: ModelConfig, in_channels: int) -> PadToMultiple:
    """The smp network ``cfg.arch`` with ``cfg.encoder``, wrapped to accept any input size."""
    import segmentation_models_pytorch as smp

    _check_encoder_name(cfg.encoder)
    try:
        net = smp.create_model(cfg.arch, encoder_name=cfg.encoder, encoder_weights=None,
                               in_channels=in_channels, classes=cfg.out_channels,
                               **_arch_kwargs(cfg.arch, cfg.encoder_depth))
    except (ValueError, KeyError, AssertionError) as exc:
        raise UserError(f"model: smp cannot build {cfg.arch} with encoder {cfg.encoder!r} "
                        f"and encoder_depth {cfg.encoder_depth}: {_first_line(exc)}") from None
    if cfg.encoder_weights is not None:
        load_encoder_weights(net.encoder, Path(cfg.encoder_weights), in_channels)
    multiple = _input_multiple(cfg.arch, net)
    freeze_unused_parameters(net, in_channels, max(multiple, 64))
    return PadToMultiple(net, multiple)


def freeze_unused_parameters(net: nn.Module, in_channels: int, size: int) -> None:
    """Set ``requires_grad=False`` on the parameters the output does not depend on.

    smp keeps an encoder's stages beyond ``encoder_depth`` (some even run them and drop the
    result). Their parameters would never get a gradient, which DDP refuses unless it searches
    for unused parameters at every step; optimizers skip them either way. They are found
    once, as the parameters missing from the autograd graph of the output for a zero input of
    ``size`` x ``size`` pixels (large enough for every encoder's deepest stage), in eval mode
    so that BatchNorm statistics stay untouched.
    """
    training = net.training
    net.eval()
    try:
        output = net(torch.zeros(1, in_channels, size, size))
    finally:
        net.train(training)
    used: set[int] = set()
    stack, seen = [output.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if hasattr(node, "variable"):  # AccumulateGrad: a leaf, i.e. a parameter
            used.add(id(node.variable))
        stack.extend(next_node for next_node, _ in node.next_functions)
    for param in net.parameters():
        if id(param) not in used:
            param.requires_grad_(False)


def load_encoder_weights(encoder: nn.Module, path: Path, in_channels: int) -> None:
    """Load a local state dict into ``encoder``; every encoder tensor must be in the file.

    Accepted: the encoder's own state dict or a whole model's (keys ``encoder.*`` from smp,
    ``net.encoder.*`` from segtrain), possibly under a ``state_dict`` or ``model`` key. Extra
    tensors (a classifier head) are ignored. A first convolution saved for 3 bands (ImageNet
    RGB) is adapted to ``in_channels`` the way smp adapts its own pretrained weights.
    """
    where = f"model.encoder_weights: {path}"
    state = _encoder_state(_read_state_dict(path, where))
    expected = encoder.state_dict()
    # BatchNorm fills in a missing batch counter itself (torchvision files have none).
    missing = [key for key in expected if key not in state and not key.endswith("num_batches_tracked")]
    if missing:
        raise UserError(f"{where}: {len(missing)} of {len(expected)} encoder tensors are missing "
                        f"(first: {missing[0]}); is it a state dict of encoder {type(encoder).__name__}?")
    loadable = {key: _fit(key, state[key], tensor.shape, in_channels, where)
                for key, tensor in expected.items() if key in state}
    encoder.load_state_dict(loadable)


def _fit(key: str, saved: torch.Tensor, shape: torch.Size, in_channels: int, where: str) -> torch.Tensor:
    """``saved`` if it has the encoder's shape, an adapted RGB first-conv kernel, or a UserError."""
    if saved.shape == shape:
        return saved
    if saved.dim() == 4 and saved.shape[1] == 3 and shape == (saved.shape[0], in_channels, *saved.shape[2:]):
        return adapt_rgb_kernel(saved, in_channels)
    raise UserError(f"{where}: tensor {key} has shape {tuple(saved.shape)}, the encoder needs {tuple(shape)}")


def adapt_rgb_kernel(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A first-conv kernel trained on RGB, for ``in_channels`` bands (smp's rule for pretrained weights).

    One band takes the sum of the RGB kernels; more bands cycle through R, G, B and are scaled
    by 3 / in_channels, so that the response to a constant input keeps its magnitude.
    """
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    cycled = weight[:, [band % 3 for band in range(in_channels)]]
    return cycled * (3 / in_channels)


def _read_state_dict(path: Path, where: str) -> Mapping:
    if not path.is_file():
        raise UserError(f"{where}: no such file (weights are never downloaded; give a local "
                        ".pth/.safetensors file)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(path, device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable or unsafe pickle: the user's file, not our bug
        raise UserError(f"{where}: cannot read weights: {_first_line(exc)}") from None


def _encoder_state(obj: object) -> dict[str, torch.Tensor]:
    """The encoder's tensors from a loaded file (see :func:`load_encoder_weights` for the forms)."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        return {}
    tensors = {key: value for key, value in obj.items() if isinstance(value, torch.Tensor)}
    for prefix in ("net.encoder.", "encoder."):  # a segtrain model (wrapped) or an smp model
        if any(key.startswith(prefix) for key in tensors):
            return {key.removeprefix(prefix): value for key, value in tensors.items() if key.startswith(prefix)}
    return tensors


def _first_line(exc: Exception) -> str:
    """An exception as one line for a UserError (library messages can span many)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
