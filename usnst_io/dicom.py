"""Ultrasound DICOM in and out, with pydicom.

Scanners write B-mode frames in many encodings; everything here becomes what the networks see, 8-bit grayscale:
MONOCHROME2 as is, MONOCHROME1 inverted, RGB / YBR_* (decoded to RGB by pydicom) and PALETTE COLOR (through
its lookup table) converted to luma, more than 8 bits windowed (VOI LUT when the file has one) then scaled.
Multi-frame cine loops keep their frame rate (Frame Time, Cine Rate, Recommended Display Frame Rate or the
Frame Time Vector, in that order). Compressed transfer syntaxes decode when a pydicom pixel-data plugin for them
is installed; otherwise the error names the syntax and the plugins that handle it.

Output is a *derived* image: the source header de-identified (PS3.15 basic profile, unless identity is kept on
request), new SOP Instance and Series UIDs, ImageType DERIVED\\SECONDARY, a Derivation Description, 8-bit
MONOCHROME2 uncompressed pixels, and the original geometry (rows, columns, pixel spacing, ultrasound regions, frame
timing) kept.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from usnst_io import limits
from usnst_io.atomic import atomic_path

PLUGIN_HINT = ("install a pixel-data plugin that handles it, e.g. `pip install pylibjpeg pylibjpeg-libjpeg "
               "pylibjpeg-openjpeg` (JPEG, JPEG-LS, JPEG 2000) or `pip install python-gdcm`")


class DicomError(ValueError):
    """A DICOM file that cannot be read as images, with the reason and what to do."""


@dataclass
class DicomSeries:
    frames: list[np.ndarray]  # uint8 (rows, columns) each
    fps: float | None  # from the file's timing; None for a still image
    dataset: Dataset  # the header (pixel data kept only as read), for writing derived images
    photometric: str
    path: str


def is_dicom(path: str | os.PathLike) -> bool:
    """DICOM Part 10 files have 'DICM' after a 128-byte preamble; .dcm without it is still tried by the reader."""
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def frame_rate(ds: Dataset) -> float | None:
    if ds.get("FrameTime"):
        return 1000.0 / float(ds.FrameTime)
    for key in ("CineRate", "RecommendedDisplayFrameRate"):
        if ds.get(key):
            return float(ds.get(key))
    vector = [float(v) for v in (ds.get("FrameTimeVector") or []) if float(v) > 0]
    return 1000.0 / float(np.mean(vector)) if vector else None


CM = 3  # PhysicalUnitsX/YDirection code for centimetres (PS3.3 C.8.5.5.1.15)
TISSUE_2D = 1  # RegionSpatialFormat of a 2-D (B-mode) region


def pixel_spacing_mm(ds: Dataset) -> tuple[float, float] | None:
    """(row, column) mm per pixel: Pixel Spacing when the file has it, else the first 2-D ultrasound region given in
    centimetres (scanners write their B-mode geometry there: every ultrasound file of pydicom-data and itk-pocus
    that has a geometry), else None. A region's delta is signed (its axis's direction): its size is the magnitude;
    a zero, non-finite or unreadable one is no spacing (the frames are still stylized, at the model's own grain size)."""
    try:
        if ds.get("PixelSpacing"):
            row, col = (float(v) for v in ds.PixelSpacing[:2])
        else:
            regions = [r for r in ds.get("SequenceOfUltrasoundRegions") or []
                       if r.get("RegionSpatialFormat") == TISSUE_2D and r.get("PhysicalUnitsXDirection") == CM
                       and r.get("PhysicalUnitsYDirection") == CM]
            if not regions:
                return None
            row, col = 10.0 * abs(float(regions[0].PhysicalDeltaY)), 10.0 * abs(float(regions[0].PhysicalDeltaX))
    except (AttributeError, TypeError, ValueError):  # a region without its deltas, a Pixel Spacing of one value
        return None
    return (row, col) if all(np.isfinite(v) and v > 0 for v in (row, col)) else None


def _rgb(pixels: np.ndarray, ds: Dataset) -> np.ndarray | None:
    """Decoded colour pixels (RGB, YBR as pydicom decodes it, or palette colour) as float RGB in 0–255, shape
    (..., rows, columns, 3); None for a grey image."""
    from pydicom.pixels import apply_color_lut

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, ds)
    elif not (pixels.shape[-1] == 3 and int(ds.get("SamplesPerPixel", 1)) == 3):
        return None
    rgb = pixels.astype(np.float32)
    return rgb / 257.0 if rgb.max() > 255 else rgb  # 16-bit palette entries


def _to_gray8(pixels: np.ndarray, ds: Dataset) -> np.ndarray:
    """Decoded pixels of one or more frames → uint8 luma, shape (..., rows, columns)."""
    from pydicom.pixels import apply_voi_lut

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    rgb = _rgb(pixels, ds)
    if rgb is not None:
        luma = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]  # ITU-R BT.601
        return np.clip(np.rint(luma), 0, 255).astype(np.uint8)
    if pixels.dtype != np.uint8 or int(ds.get("BitsStored", 8)) > 8:
        pixels = apply_voi_lut(pixels, ds) if "WindowCenter" in ds or "VOILUTSequence" in ds else pixels
        pixels = pixels.astype(np.float32)
        lo, hi = float(pixels.min()), float(pixels.max())
        pixels = (pixels - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(pixels)
        pixels = np.rint(pixels).astype(np.uint8)
    if photometric == "MONOCHROME1":
        pixels = 255 - pixels
    return pixels


def read_dicom(path: str | os.PathLike, colour: bool = False) -> DicomSeries:
    """Every frame of a DICOM file as uint8 grey (rows, columns) — or, with ``colour``, colour images as uint8 RGB
    (rows, columns, 3): screenshot cleaning needs the colour to find calipers and Doppler overlays."""
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:
        raise DicomError(f"{path}: not a readable DICOM file ({exc.__class__.__name__}: {exc})") from exc
    if "PixelData" not in ds:
        raise DicomError(f"{path}: this DICOM object has no image (SOP class {ds.get('SOPClassUID', 'unknown')})")
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    try:
        rows, columns = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
        frames, samples = int(ds.get("NumberOfFrames", 1) or 1), int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.get("BitsAllocated", 8) or 8)
    except (TypeError, ValueError) as exc:
        raise DicomError(f"{path}: its image size attributes are not numbers ({exc})") from None
    limits.check_image(columns, rows, str(path), frames, samples * max(1, bits // 8))  # before decoding
    try:
        pixels = ds.pixel_array
    except Exception as exc:
        name = getattr(syntax, "name", syntax)
        detail = f"({exc.__class__.__name__}: {(str(exc).splitlines() or [''])[0]})"
        if syntax is not None and not getattr(syntax, "is_compressed", True):  # no plugin would help
            raise DicomError(f"{path}: its {name} pixel data does not match its header (Rows, Columns, "
                             f"frames, bits): a truncated or damaged file? {detail}") from exc
        raise DicomError(f"{path}: cannot decode pixel data stored as {name}: {PLUGIN_HINT} {detail}") from exc
    n = int(ds.get("NumberOfFrames", 1) or 1)
    rgb = _rgb(pixels, ds) if colour else None
    image = np.clip(np.rint(rgb), 0, 255).astype(np.uint8) if rgb is not None else _to_gray8(pixels, ds)
    frames = list(image) if n > 1 else [image]
    return DicomSeries(frames, frame_rate(ds) if n > 1 else None, ds,
                       str(ds.get("PhotometricInterpretation", "")), os.fspath(path))


_COLOUR_TAGS = ("PlanarConfiguration", "RedPaletteColorLookupTableDescriptor", "GreenPaletteColorLookupTableDescriptor",
                "BluePaletteColorLookupTableDescriptor", "RedPaletteColorLookupTableData",
                "GreenPaletteColorLookupTableData", "BluePaletteColorLookupTableData",
                "SegmentedRedPaletteColorLookupTableData", "SegmentedGreenPaletteColorLookupTableData",
                "SegmentedBluePaletteColorLookupTableData", "PaletteColorLookupTableUID", "WindowCenter", "WindowWidth",
                "VOILUTSequence", "ICCProfile")


def write_derived(path: str | os.PathLike, frames: list[np.ndarray], source: DicomSeries,
                  description: str = "usnst style transfer", annotations_removed: bool = False,
                  keep_identity: bool = False, derivation: str = "") -> Path:
    """Write ``frames`` (uint8, the source's size) as a derived DICOM of ``source``; atomic (temp file + rename).

    - De-identified by default (DICOM PS3.15 basic profile, usnst_io.deidentify): no patient, physician,
      institution or device identity, no dates; ``keep_identity`` keeps the source's header as it was.
    - A new series that references its source image (Source Image Sequence). Its UIDs are derived from the source's
      and from ``derivation`` (what made the pixels: model and noise), so every image of one source series derived
      alike, in any batch, shard or resumed run, lands in one derived series (Series Number: the source's + 1000).
    - The equipment is usnst's, not the scanner's: the image no longer comes from that device.
    - Burned In Annotation says what the pixels may still show: YES, since style transfer keeps whatever text the
      source had burned in (a source's NO is not evidence about these pixels) — NO only with
      ``annotations_removed`` (pixels cleaned of annotations, e.g. by `usnst clean`)."""
    from usnst_io.deidentify import deidentify, new_uid

    rows, cols = int(source.dataset.Rows), int(source.dataset.Columns)
    if any(f.shape != (rows, cols) for f in frames):
        raise ValueError(f"derived frames must keep the source geometry {rows}x{cols}")
    if len(frames) != len(source.frames):
        raise ValueError(f"{len(frames)} frames for a source of {len(source.frames)}")
    ds = copy.deepcopy(source.dataset)
    original = source.dataset
    for tag in _COLOUR_TAGS + ("PixelData",):
        if tag in ds:
            del ds[tag]
    if not keep_identity:
        deidentify(ds)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    source_uid = str(original.get("SOPInstanceUID") or generate_uid())
    uid = new_uid(source_uid, "derived image: " + derivation)
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.SeriesInstanceUID = new_uid(str(original.get("SeriesInstanceUID") or source_uid), "derived series: " + derivation)
    ds.SeriesNumber = int(original.get("SeriesNumber") or 0) + 1000
    if "SOPInstanceUID" in original:
        ref = Dataset()
        ref.ReferencedSOPClassUID = original.get("SOPClassUID", ds.get("SOPClassUID"))
        ref.ReferencedSOPInstanceUID = source_uid if keep_identity else new_uid(source_uid)
        ds.SourceImageSequence = [ref]
    ds.SeriesDescription = (f"{ds.get('SeriesDescription', '')} [usnst]".strip() if keep_identity
                            else "usnst style transfer")
    for tag in ("DeviceSerialNumber", "StationName", "SoftwareVersions", "DeviceUID"):
        if tag in ds:
            del ds[tag]
    ds.Manufacturer, ds.ManufacturerModelName = "usnst", "usnst style transfer"
    original_type = [str(v) for v in (ds.get("ImageType") or [])][2:]
    ds.ImageType = ["DERIVED", "SECONDARY", *original_type]
    ds.BurnedInAnnotation = "NO" if annotations_removed else "YES"
    note = ("annotations removed from the pixels" if annotations_removed else
            "burned-in annotations of the source, if any, are not removed")
    ds.DerivationDescription = f"{description}; {note}"[:1024]
    data = np.stack(frames) if len(frames) > 1 else frames[0]
    ds.set_pixel_data(np.ascontiguousarray(data), photometric_interpretation="MONOCHROME2", bits_stored=8,
                      generate_instance_uid=False)  # the UID above: the same for the same source and model
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    with atomic_path(path) as tmp:
        # Always Explicit VR Little Endian, whatever the source used (a big-endian source is converted on writing).
        pydicom.dcmwrite(tmp, ds, implicit_vr=False, little_endian=True, enforce_file_format=True)
    return Path(path)


def stylize_dicom(series: DicomSeries, stylize) -> list[np.ndarray]:
    """Apply ``stylize`` (uint8 frame → uint8 frame) to every frame; a helper for batch tools."""
    out = []
    for frame in series.frames:
        styled = stylize(frame)
        if styled.shape != frame.shape:
            styled = cv2.resize(styled, (frame.shape[1], frame.shape[0]))
        out.append(styled)
    return out
