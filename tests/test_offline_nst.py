"""VGG19 loss network, Gram/mask maths and the Gatys NST variants, on tiny images with seeded random weights."""
import numpy as np
import pytest
import torch

from usnst.offline.losses import gram, masked_gram
from usnst.offline.masks import (
    fake_pool,
    foreground_mask,
    label_masks,
    masks_for_layers,
    object_mask,
)
from usnst.offline.nst import (
    OBJECT,
    augmented_target,
    average_style_target,
    clear_background,
    run_local_nst,
    run_nst,
    style_target,
)
from usnst.offline.nst_config import NSTConfig
from usnst.offline.vgg import layer_names, load_vgg19
from usnst.offline.weights import WeightsNotFound
from usnst_io.media import to_uint8
from usnst_stream.phantom import PhantomRenderer


@pytest.fixture(scope="module")
def vgg():
    return load_vgg19("random", seed=0)


@pytest.fixture(scope="module")
def pair():
    s = PhantomRenderer(48, 48, seed=5).render(0.0)
    return to_uint8(s.lq), to_uint8(s.hq), s.seg


def test_vgg_layers_sizes_and_early_stop(vgg):
    assert len(layer_names()) == 16 and layer_names()[-1] == "block5_conv4"
    x = torch.rand(1, 1, 37, 45)
    out = vgg(x, ["block1_conv1", "block3_conv1", "block5_conv2"])
    assert out["block1_conv1"].shape == (1, 64, 37, 45)
    assert out["block3_conv1"].shape == (1, 256, 9, 11)
    assert out["block5_conv2"].shape == (1, 512, 2, 2)
    assert (out["block1_conv1"] >= 0).all()  # taken after the ReLU, as Keras names them
    with pytest.raises(KeyError, match="unknown VGG19 layers"):
        vgg(x, ["block6_conv1"])


def test_vgg_loads_a_torchvision_format_state_dict(tmp_path, vgg):
    state = {f"features.{k}": v for k, v in vgg.features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)  # the classifier is ignored
    torch.save(state, tmp_path / "vgg19-dcbb9e9d.pth")
    loaded = load_vgg19(tmp_path / "vgg19-dcbb9e9d.pth")
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(loaded(x, ["block2_conv2"])["block2_conv2"], vgg(x, ["block2_conv2"])["block2_conv2"])
    assert loaded.weights_source.endswith("vgg19-dcbb9e9d.pth") and vgg.weights_source == "random (seed 0)"


def test_missing_vgg_weights_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("USNST_VGG_WEIGHTS", raising=False)
    with pytest.raises(WeightsNotFound, match="pass --vgg-weights PATH"):
        load_vgg19(None, download=False)


def test_masked_gram_equals_plain_gram_for_all_ones_and_the_region_gram_for_a_half():
    f = torch.rand(2, 8, 4, 6)
    assert torch.allclose(masked_gram(f, torch.ones(2, 1, 4, 6)), gram(f), atol=1e-6)
    half = torch.zeros(2, 1, 4, 6)
    half[..., :3] = 1
    assert torch.allclose(masked_gram(f, half), gram(f[..., :3]), atol=1e-6)


def test_mask_downsampling_matches_every_vgg_layer_size(vgg):
    layers = ["block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1"]
    x = torch.rand(1, 1, 53, 71)
    feats = vgg(x, layers)
    masks = masks_for_layers(torch.ones(1, 1, 53, 71), layers, vgg)
    for layer in layers:
        assert masks[layer].shape[-2:] == feats[layer].shape[-2:], layer
    assert fake_pool(torch.arange(25.0).view(1, 1, 5, 5)).tolist() == [[[[0.0, 2.0], [10.0, 12.0]]]]


def test_label_masks_keep_fetus_labels_above_the_area_threshold():
    seg = np.zeros((100, 100), np.uint8)
    seg[:50] = 40  # tissue, not a fetus label
    seg[50:80] = 170
    seg[0, :20] = 200  # 0.2 % of the image: dropped
    seg[90:100, :10] = 210  # 1 %: kept
    masks = label_masks(seg)
    assert set(masks) == {170, 210}
    assert object_mask(seg).sum() == 30 * 100 + 20 + 100
    assert foreground_mask(seg).sum() == 50 * 100 + 30 * 100 + 100


def test_average_style_targets(vgg, pair):
    lq, hq, _ = pair
    styles = [hq, lq]
    avg = average_style_target(vgg, styles, mode="gram")
    singles = [style_target(vgg, s).whole for s in styles]
    for layer, g in avg.whole.items():
        assert torch.allclose(g, (singles[0][layer] + singles[1][layer]) / 2, atol=1e-6)
    feat = average_style_target(vgg, styles, mode="features")
    with torch.no_grad():
        f = [vgg(torch.from_numpy(s.astype(np.float32) / 255)[None, None], ["block1_conv1"])["block1_conv1"] for s in styles]
    assert torch.allclose(feat.whole["block1_conv1"], gram((f[0] + f[1]) / 2), atol=1e-6)


def test_gatys_decreases_its_loss_and_keeps_the_image_in_range(vgg, pair):
    lq, hq, _ = pair
    cfg = NSTConfig(iterations=12, lr=5.0, style_layers=("block1_conv1", "block2_conv1"), content_layer="block2_conv2",
                    init="noise", style_weight=1e3)
    result = run_nst(vgg, lq, style_target(vgg, hq, cfg.style_layers), cfg)
    assert result.image.shape == lq.shape and 0 <= result.image.min() and result.image.max() <= 1
    assert len(result.losses) == 12 and result.losses[-1][0] < result.losses[0][0]
    assert NSTConfig(task="seg2hq").weights() == (1e5, 1e-1)
    assert NSTConfig(task="hq2clinical", style_weight=3.0).weights() == (5e5, 3.0)


def test_gatys_from_content_with_its_own_style_stays_put(vgg, pair):
    lq, _, _ = pair
    cfg = NSTConfig(iterations=3, style_layers=("block1_conv1",), content_layer="block2_conv2")
    result = run_nst(vgg, lq, style_target(vgg, lq, cfg.style_layers), cfg)
    assert result.losses[0][0] == pytest.approx(0.0, abs=1e-9)
    assert np.abs(result.image - lq / 255.0).max() < 1e-6


def test_augmented_loss_pairs_common_labels_or_reuses_content_masks(vgg, pair):
    lq, hq, seg = pair
    target, masks = augmented_target(vgg, hq, seg)  # no style segmentation: content masks mask both
    assert set(target.by_label) == set(masks) == set(label_masks(seg)) | {OBJECT}
    assert np.array_equal(masks[OBJECT], object_mask(seg))
    style_seg = seg.copy()
    drop = next(iter(masks))
    style_seg[style_seg == drop] = 40
    cfg = NSTConfig(iterations=8, lr=2.0, style_weight=1e4, style_layers=("block1_conv1", "block2_conv1"),
                    content_layer="block2_conv2")
    paired, paired_masks = augmented_target(vgg, hq, seg, style_seg, layers=cfg.style_layers)
    assert drop not in paired.by_label and set(paired.by_label) == set(paired_masks)
    result = run_nst(vgg, lq, paired, cfg, paired_masks)
    assert result.losses[-1][2] < result.losses[0][2]  # the per-label style term is being optimised
    with pytest.raises(ValueError, match="needs the content's label masks"):
        run_nst(vgg, lq, paired, cfg)


def test_local_nst_touches_only_its_regions(vgg, pair):
    lq, hq, seg = pair
    regions = label_masks(seg)
    cfg = NSTConfig(iterations=5, lr=5.0, style_layers=("block1_conv1",), content_layer="block2_conv2", init="noise")
    result = run_local_nst(vgg, lq, hq, regions, cfg)
    outside = sum(regions.values()) == 0
    assert np.allclose(result.image[outside], lq[outside] / 255.0)
    inside = ~outside
    assert not np.allclose(result.image[inside], lq[inside] / 255.0)


def test_clear_background_zeroes_outside_the_foreground(pair):
    _, hq, seg = pair
    cleared = clear_background(np.ones(hq.shape, np.float32), foreground_mask(seg))
    assert cleared[seg == 0].max() == 0 and cleared[seg > 0].min() == 1
