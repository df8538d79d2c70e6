"""Screenshot cleaning on pydicom's real scanner screenshots and on synthetic ones with known overlays."""
import cv2
import numpy as np
import pydicom
import pytest
from pydicom import examples

from usnst.offline.screenshot import clean_screenshot
from usnst_io.media import to_uint8
from usnst_stream.phantom import PhantomRenderer


def synthetic_screenshot(rgb: bool):
    """A phantom sector on a UI canvas with a brightness bar, text, a ruler and calipers. Returns the screenshot,
    the overlay mask and the sector mask (both in screenshot coordinates) and the sector's top-left corner."""
    r = PhantomRenderer(256, 256, seed=3)
    sector = to_uint8(r.render(0.0).hq)
    h, w, top, left = 320, 460, 40, 150
    canvas = np.zeros((h, w, 3), np.uint8)
    canvas[top:top + 256, left:left + 256] = sector[:, :, None]
    overlay = np.zeros((h, w), np.uint8)
    canvas[30:290, 12:30] = np.linspace(255, 0, 260).astype(np.uint8)[:, None, None]  # brightness bar (ramp)
    for y, text in ((20, "GAIN 55  DR 60"), (60, "C5-1  3.5 MHz"), (300, "DEPTH 12 cm")):
        cv2.putText(overlay, text, (40, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 255, 1)
    for y in range(50, 290, 20):  # a depth ruler right of the sector
        cv2.line(overlay, (425, y), (435, y), 255, 1)
    cross_a, cross_b = (left + 100, top + 150), (left + 160, top + 190)  # calipers inside the sector
    for cx, cy in (cross_a, cross_b):
        cv2.line(overlay, (cx - 5, cy), (cx + 5, cy), 255, 1)
        cv2.line(overlay, (cx, cy - 5), (cx, cy + 5), 255, 1)
    colour = (255, 255, 0) if rgb else (255, 255, 255)  # yellow calipers on colour screenshots
    canvas[overlay > 0] = colour
    in_sector = np.zeros((h, w), bool)
    in_sector[top:top + 256, left:left + 256] = r.in_sector
    image = canvas if rgb else canvas[:, :, 0]
    return image, overlay > 0, in_sector


@pytest.mark.parametrize("rgb", [False, True])
def test_known_overlays_are_removed_and_the_image_is_kept(rgb):
    shot, overlay, sector = synthetic_screenshot(rgb)
    result = clean_screenshot(shot)
    assert result.report["bars"] == ["left"]
    top, left, hh, ww = result.box  # in the screenshot's own coordinates (the bar cut included)
    assert result.report["crop"] == [top, left, hh, ww]
    back = np.zeros(overlay.shape, np.int16) - 1
    back[top:top + hh, left:left + ww] = result.image
    gray = cv2.cvtColor(shot, cv2.COLOR_RGB2GRAY) if rgb else shot
    removed = ((back[overlay] == -1) | (back[overlay] == 0) | (np.abs(back[overlay] - gray[overlay]) > 30)).mean()
    near_overlay = cv2.dilate(overlay.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    keep = sector & ~near_overlay
    kept = (back[keep] == gray[keep]).mean()
    assert removed >= 0.95 and kept >= 0.95, (removed, kept)
    assert result.report["overlay_pixels_inpainted"] > 0 and result.report["ui_pixels_removed"] > 0


def test_real_scanner_screenshots_keep_their_imaging_region():
    from pydicom.pixels import apply_color_lut

    ds = pydicom.dcmread(examples.get_path("ybr_color"))  # cardiac phased-array sector with text and icons
    result = clean_screenshot(ds.pixel_array[0])
    assert 0.15 < result.report["region_fraction"] < 0.35 and result.report["ui_pixels_removed"] > 1000
    ds = pydicom.dcmread(examples.get_path("palette_color"))  # curved-array abdomen, text panel and header
    rgb = (apply_color_lut(ds.pixel_array, ds) / 257).astype(np.uint8)
    result = clean_screenshot(rgb)
    assert result.image.shape[0] < 200 and result.report["ui_pixels_removed"] > 10_000


def test_usnst_clean_writes_cleaned_images_and_a_report(tmp_path):
    import json
    import shutil
    import subprocess
    import sys

    (tmp_path / "in").mkdir()
    shot, _, _ = synthetic_screenshot(True)
    cv2.imwrite(str(tmp_path / "in" / "shot.png"), cv2.cvtColor(shot, cv2.COLOR_RGB2BGR))
    shutil.copy(examples.get_path("ybr_color"), tmp_path / "in" / "cine.dcm")
    proc = subprocess.run([sys.executable, "-m", "usnst.cli", "clean", str(tmp_path / "in"), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "out" / "cleaning.json").read_text())
    assert report["images"] == 31 and not report["failures"]
    cleaned = cv2.imread(str(tmp_path / "out" / "shot.png"), cv2.IMREAD_GRAYSCALE)
    assert cleaned.shape[0] < shot.shape[0] and cleaned.shape[1] < shot.shape[1]
    assert len(list((tmp_path / "out").glob("cine_*.png"))) == 30
    crops = {tuple(r["crop"]) for r in report["rows"] if r["input"] == "cine.dcm"}
    assert len(crops) == 1  # one region and one crop for the whole cine (the UI does not move)


def test_a_colour_dicom_is_cleaned_in_colour_so_doppler_flow_is_removed(tmp_path):
    import json
    import shutil

    from usnst.offline.screenshot import clean_folder

    (tmp_path / "in").mkdir()
    shutil.copy(examples.get_path("rgb_color"), tmp_path / "in" / "ge.dcm")  # power Doppler over B-mode, in colour
    clean_folder(str(tmp_path / "in"), str(tmp_path / "out"))
    row = json.loads((tmp_path / "out" / "cleaning.json").read_text())["rows"][0]
    ds = pydicom.dcmread(examples.get_path("rgb_color"))
    coloured = int(((ds.pixel_array.max(axis=2).astype(int) - ds.pixel_array.min(axis=2)) > 40).sum())
    assert coloured > 4000 and row["overlay_pixels_inpainted"] >= coloured  # every flow pixel (and its rim) inpainted


def test_legends_header_bands_and_markers_are_cut_from_real_screenshots():
    from pydicom.pixels import apply_color_lut

    from usnst.offline.screenshot import box_lines

    ge = pydicom.dcmread(examples.get_path("rgb_color")).pixel_array  # GE lymph node: "PWR" legends at both sides
    result = clean_screenshot(ge)
    top, left, h, w = result.box
    assert result.report["ui_elements_cut"] == 2
    assert left >= 19 and left + w <= 301  # the legends lie in columns 11–19 and 301–309 (rows 78–111)
    assert box_lines(cv2.cvtColor(ge, cv2.COLOR_RGB2GRAY)).sum() > 500  # the Doppler box outline, found ...
    assert box_lines(result.image).sum() < 50  # ... and gone from the cleaned image
    ds = pydicom.dcmread(examples.get_path("palette_color"))  # Philips OB: blue header band down to row 59
    rgb = (apply_color_lut(ds.pixel_array, ds) / 257).astype(np.uint8)
    top, left, h, w = clean_screenshot(rgb).box
    assert top >= 60  # no header band rows
    assert left > 332  # the orientation marker (a blue disc at columns 311–332) is outside the region


def test_speckle_is_neither_flat_ui_nor_a_box_line():
    from usnst.offline.screenshot import box_lines, flat_ui

    frame = to_uint8(PhantomRenderer(256, 256, seed=5).render(0.0).hq)
    assert not flat_ui(frame).any() and box_lines(frame).sum() == 0
    drawn = frame.copy()
    cv2.rectangle(drawn, (40, 60), (200, 180), 255, 1)
    found = box_lines(drawn)
    assert found[60, 50:190].mean() > 0.9 and found[70:170, 40].mean() > 0.9 and found.sum() < 4 * 2 * (160 + 120)


def test_an_image_with_flat_runs_all_over_keeps_its_texture_whole():
    """itk-pocus' hand-held scanners smooth and scale up their image, so 80–300 pieces of it per frame are flat
    along rows for 20 rows or more, like a legend; those are the image, not UI, and cutting them punched holes in it
    (issue 28). Here: speckle with 60 such pieces (3–8 px wide, each row one grey level, rows differing)."""
    rng = np.random.default_rng(0)
    image = np.clip(rng.rayleigh(1.0, (160, 180)) * 60 + 20, 0, 255).astype(np.uint8)
    for _ in range(60):
        y, x, w, h = rng.integers(0, 120), rng.integers(0, 170), rng.integers(3, 9), rng.integers(22, 40)
        image[y:y + h, x:x + w] = rng.integers(40, 200, (min(h, 160 - y), 1))
    canvas = np.zeros((200, 260), np.uint8)
    canvas[20:180, 40:220] = image
    cv2.putText(canvas, "GAIN 55", (4, 196), cv2.FONT_HERSHEY_SIMPLEX, 0.35, 255, 1)
    result = clean_screenshot(canvas)
    assert result.image.shape == (160, 180) and result.report["ui_elements_cut"] == 0
    assert (result.image > 0).mean() > 0.99
