"""Models: every architecture on odd sizes and band counts, output heads, offline local weights."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from segtrain.config.schema import ConfigError, ModelConfig
from segtrain.errors import UserError
from segtrain.models import MODEL_NAMES, build_model, positive_logit, positive_probability
from segtrain.models.registry import adapt_rgb_kernel
from segtrain.models.unet import norm_layer

# Tiny settings: the smallest smp encoders at their minimum depth, a small U-Net. Each
# architecture gets one (bands, encoder) pair in turn, so every band count and encoder is run
# by several architectures while the test stays fast.
BANDS_AND_ENCODERS = [(1, "resnet18"), (4, "mobilenet_v2"), (13, "efficientnet-b0")]
CASES = [(arch, *BANDS_AND_ENCODERS[i % 3]) for i, arch in enumerate(MODEL_NAMES)]


def tiny(arch: str, encoder: str = "resnet18", **kwargs) -> ModelConfig:
    return ModelConfig(arch=arch, encoder=encoder, encoder_depth=None if arch == "unet" else 3,
                       depth=2, base_width=4, **kwargs)


@pytest.mark.parametrize("arch,bands,encoder", CASES)
def test_every_model_runs_forward_and_backward_on_odd_sizes(arch, bands, encoder):
    torch.manual_seed(0)
    model = build_model(tiny(arch, encoder), in_channels=bands)
    x = torch.randn(2, bands, 33, 45, requires_grad=True)
    logits = model(x)
    assert logits.shape == (2, 1, 33, 45)
    logits.mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # DDP's condition: every trainable parameter gets a gradient (unused encoder stages are frozen)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_encoder_stages_beyond_the_encoder_depth_are_frozen_and_the_others_train():
    encoder = build_model(tiny("Unet"), in_channels=3).net.encoder  # resnet18 at depth 3: layer3, layer4 unused
    assert not any(p.requires_grad for p in encoder.layer3.parameters())
    assert not any(p.requires_grad for p in encoder.layer4.parameters())
    assert all(p.requires_grad for p in encoder.layer2.parameters())


@pytest.mark.parametrize("arch", ["unet", "FPN"])
def test_two_output_channels_give_two_logits_per_pixel(arch):
    logits = build_model(tiny(arch, out_channels=2), in_channels=3).eval()(torch.randn(1, 3, 20, 27))
    assert logits.shape == (1, 2, 20, 27)


@pytest.mark.parametrize("size", [(1, 1), (8, 8), (31, 17)])
def test_unet_accepts_any_size_including_ones_smaller_than_its_stride(size):
    model = build_model(ModelConfig(depth=3, base_width=4), in_channels=2).eval()
    assert model(torch.randn(1, 2, *size)).shape == (1, 1, *size)


def test_inputs_that_are_already_a_multiple_are_not_padded():
    model = build_model(ModelConfig(depth=2, base_width=4), in_channels=2).eval()
    x = torch.randn(1, 2, 12, 8)
    torch.testing.assert_close(model(x), model.net(x))


def test_groupnorm_trains_a_single_tile_whose_bottleneck_is_one_pixel_where_batchnorm_cannot():
    x = torch.randn(1, 3, 4, 4)  # depth 2: 1 x 1 at the bottleneck
    build_model(ModelConfig(depth=2, base_width=12, norm="group"), in_channels=3)(x).mean().backward()
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        build_model(ModelConfig(depth=2, base_width=12, norm="batch"), in_channels=3)(x)


@pytest.mark.parametrize("channels", [4, 6, 12, 16, 24, 40, 96, 128, 512, 1000])
def test_groupnorm_groups_divide_the_channels_with_at_least_four_channels_each(channels):
    norm = norm_layer("group", channels)
    assert channels % norm.num_groups == 0
    assert 1 <= norm.num_groups <= 32 and channels // norm.num_groups >= 4


def test_positive_probability_is_the_sigmoid_of_one_logit_and_the_softmax_of_two():
    one, two = torch.randn(2, 1, 3, 3), torch.randn(2, 2, 3, 3)
    torch.testing.assert_close(positive_probability(one), torch.sigmoid(one))
    torch.testing.assert_close(positive_probability(two), torch.softmax(two, dim=1)[:, 1:2])


def test_positive_logit_refuses_more_than_two_channels():
    with pytest.raises(ValueError, match="1 or 2 channels"):
        positive_logit(torch.zeros(1, 3, 2, 2))


def test_explicit_in_channels_must_match_the_selected_bands():
    with pytest.raises(UserError, match="^model.in_channels: is 4 but the data provide 3 bands"):
        build_model(ModelConfig(in_channels=4), in_channels=3)


def test_unknown_encoder_is_a_user_error_naming_the_key():
    with pytest.raises(UserError, match="^model.encoder: unknown smp encoder 'resnet19'"):
        build_model(tiny("Unet", "resnet19"), in_channels=3)


def test_an_encoder_and_depth_smp_refuses_is_a_user_error():
    with pytest.raises(UserError, match="^model: smp cannot build FPN with encoder 'mit_b0' and encoder_depth 3"):
        build_model(ModelConfig(arch="FPN", encoder="mit_b0", encoder_depth=3), in_channels=3)


def test_the_unet_refuses_encoder_weights():
    with pytest.raises(ConfigError, match="model.encoder_weights"):
        ModelConfig(arch="unet", encoder_weights="w.pth").check()


# --- local encoder weights ----------------------------------------------------------------

def encoder_state(bands: int, seed: int = 1) -> dict[str, torch.Tensor]:
    """An encoder state dict as a pretrained file would hold it (different from a fresh init)."""
    torch.manual_seed(seed)
    return build_model(tiny("Unet"), in_channels=bands).net.encoder.state_dict()


def test_missing_weights_file_is_a_user_error_naming_key_and_path(tmp_path):
    path = tmp_path / "nowhere.pth"
    with pytest.raises(UserError, match=f"^model.encoder_weights: {path}: no such file"):
        build_model(tiny("Unet", encoder_weights=str(path)), in_channels=3)


def test_weights_for_the_same_bands_load_exactly(tmp_path):
    saved = encoder_state(13)
    torch.save(saved, tmp_path / "enc.pth")
    model = build_model(tiny("Unet", encoder_weights=str(tmp_path / "enc.pth")), in_channels=13)
    for key, tensor in model.net.encoder.state_dict().items():
        torch.testing.assert_close(tensor, saved[key])


def test_rgb_weights_are_adapted_to_the_selected_bands(tmp_path):
    saved = {f"encoder.{key}": tensor for key, tensor in encoder_state(3).items()}  # a whole smp model's keys
    save_file(saved, tmp_path / "rgb.safetensors")
    model = build_model(tiny("Unet", encoder_weights=str(tmp_path / "rgb.safetensors")), in_channels=4)
    conv = model.net.encoder.conv1.weight
    torch.testing.assert_close(conv, adapt_rgb_kernel(saved["encoder.conv1.weight"], 4))
    torch.testing.assert_close(model.net.encoder.layer1[0].conv1.weight, saved["encoder.layer1.0.conv1.weight"])


def test_rgb_kernel_adaptation_follows_smps_rule():
    weight = torch.randn(8, 3, 3, 3)
    torch.testing.assert_close(adapt_rgb_kernel(weight, 1), weight.sum(1, keepdim=True))
    five = adapt_rgb_kernel(weight, 5)
    torch.testing.assert_close(five[:, 3], weight[:, 0] * 3 / 5)
    torch.testing.assert_close(five[:, 4], weight[:, 1] * 3 / 5)


def test_a_torchvision_style_file_with_a_classifier_head_and_no_batch_counters_loads(tmp_path):
    saved = {key: t for key, t in encoder_state(3).items() if not key.endswith("num_batches_tracked")}
    saved |= {"fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}
    torch.save({"state_dict": saved}, tmp_path / "tv.pth")
    build_model(tiny("Unet", encoder_weights=str(tmp_path / "tv.pth")), in_channels=3)


def test_weights_of_another_encoder_are_a_user_error(tmp_path):
    torch.save(build_model(tiny("Unet", "mobilenet_v2"), in_channels=3).net.encoder.state_dict(), tmp_path / "m.pth")
    with pytest.raises(UserError, match=r"^model.encoder_weights: .*m.pth: \d+ of \d+ encoder tensors are missing"):
        build_model(tiny("Unet", encoder_weights=str(tmp_path / "m.pth")), in_channels=3)


def test_weights_with_a_wrong_shape_are_a_user_error(tmp_path):
    saved = encoder_state(3)
    saved["bn1.weight"] = torch.ones(7)
    torch.save(saved, tmp_path / "bad.pth")
    with pytest.raises(UserError, match=r"tensor bn1.weight has shape \(7,\), the encoder needs \(64,\)"):
        build_model(tiny("Unet", encoder_weights=str(tmp_path / "bad.pth")), in_channels=3)


def test_an_unreadable_or_unsafe_weights_file_is_a_user_error(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read weights") as info:
        build_model(tiny("Unet", encoder_weights=str(path)), in_channels=3)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("arch", ["unet", "Unet", "FPN"])
def test_the_pixel_branch_adds_a_per_pixel_mlp_to_the_logits_at_full_resolution(arch):
    """With the network's own output at zero, what is left is per pixel: a change to one pixel's
    bands moves that pixel's logit and no other (issue 26: masks made by per-pixel rules)."""
    torch.manual_seed(0)
    model = build_model(tiny(arch, pixel_branch=8), in_channels=4).eval()
    branch = model.net.pixel
    assert [type(m).__name__ for m in branch] == ["Conv2d", "ReLU", "Conv2d", "ReLU", "Conv2d"]
    assert all(conv.kernel_size == (1, 1) for conv in branch[::2]) and branch[2].in_channels == 8
    x = torch.randn(1, 4, 37, 29)
    with torch.no_grad():
        full, alone = model(x), branch(x)
        net = model.net.net
        for p in net.parameters():
            p.zero_()
        model(x)  # the branch is all that is left, whatever the network's normalization does to zeros
        rest = model(x) - alone
        y = x.clone()
        y[0, :, 20, 10] += 1.0
        moved = (model(y) - model(x)).abs()[0, 0] > 0
    assert full.shape == alone.shape == (1, 1, 37, 29)
    assert torch.allclose(rest, rest.flatten()[0].expand_as(rest))  # the zeroed network: a constant
    assert moved.nonzero().tolist() == [[20, 10]]


def test_without_the_pixel_branch_the_model_and_its_weights_stay_as_before():
    """``pixel_branch: 0`` (the default for configs written before it) builds the same network, so
    earlier checkpoints load into it."""
    plain = build_model(tiny("unet"), in_channels=4).state_dict()
    assert not any("pixel" in key for key in plain)
    assert all(key.startswith("net.") and not key.startswith("net.net.") for key in plain)
    with_branch = build_model(tiny("unet", pixel_branch=8), in_channels=4).state_dict()
    assert {key.replace("net.net.", "net.", 1) for key in with_branch if "pixel" not in key} == set(plain)
