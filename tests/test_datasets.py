"""Dataset readers: clinical screenshots with a brightness bar, centre crops, resizing."""
import numpy as np

from usnst.offline.datasets import centre_crop, crop_brightness_bar, resize_longest
from usnst_io.media import to_uint8
from usnst_stream.phantom import PhantomRenderer


def _screenshot(bar_left=6, bar_width=12, gap=9, top=20, bottom=150, descending=False, h=180, w=260):
    """A scanner-like screenshot: a grey ramp on the left, a dark gap, then a B-mode image."""
    shot = np.zeros((h, w), np.uint8)
    ramp = np.linspace(0, 255, bottom - top).astype(np.uint8)
    if descending:
        ramp = ramp[::-1]
    shot[top:bottom, bar_left:bar_left + bar_width] = ramp[:, None]
    x0 = bar_left + bar_width + gap
    bmode = to_uint8(PhantomRenderer(h, w - x0, seed=2).render(0.0).hq)
    shot[:, x0:] = bmode
    return shot, x0


def test_brightness_bar_is_found_and_cropped_at_any_position():
    for kwargs in ({}, {"bar_left": 0, "bar_width": 5, "gap": 3}, {"bar_left": 30, "descending": True, "gap": 15}):
        shot, x0 = _screenshot(**kwargs)
        result = crop_brightness_bar(shot)
        assert result.bar is not None
        bar_left = kwargs.get("bar_left", 6)
        assert result.bar[0] == bar_left and result.bar[1] == bar_left + kwargs.get("bar_width", 12) - 1
        assert result.left >= bar_left + kwargs.get("bar_width", 12)
        assert shot[:, result.bar[1] + 1:result.left].max() < 10  # only empty columns go with the bar
        assert result.left >= x0 or shot[:, result.left].max() >= 10
        assert result.image.shape[1] == shot.shape[1] - result.left


def test_images_without_a_bar_are_left_whole():
    for seed in range(3):
        img = to_uint8(PhantomRenderer(120, 160, seed=seed).render(0.0).hq)
        result = crop_brightness_bar(img)
        assert result.bar is None and result.left == 0 and result.image is img


def test_centre_crop_and_resize():
    img = np.arange(1000 * 1386, dtype=np.uint32).reshape(1000, 1386)
    crop = centre_crop(img, 1000)
    assert crop.shape == (1000, 1000) and crop[0, 0] == img[0, 193]
    assert centre_crop(np.zeros((50, 60)), 100).shape == (50, 60)
    seg = np.zeros((100, 140), np.uint8)
    seg[:, 70:] = 170
    small = resize_longest(seg, 70, labels=True)
    assert small.shape == (50, 70) and set(np.unique(small)) == {0, 170}
