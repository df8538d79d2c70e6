"""DICOM in and out on pydicom's own real ultrasound files (palette, RGB, YBR cine, JPEG 2000) and synthetic ones."""

import cv2
import numpy as np
import pydicom
import pytest
from pydicom import examples
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGLSLossless

from usnst_io.deidentify import new_uid
from usnst_io.dicom import DicomError, pixel_spacing_mm, read_dicom, write_derived
from usnst_stream.sources import open_source


def test_real_scanner_files_of_every_encoding_become_8_bit_grayscale():
    palette = read_dicom(examples.get_path("palette_color"))
    assert palette.photometric == "PALETTE COLOR" and len(palette.frames) == 1 and palette.fps is None
    assert palette.frames[0].shape == (350, 800) and palette.frames[0].dtype == np.uint8
    from pydicom.pixels import apply_color_lut

    ds = pydicom.dcmread(examples.get_path("palette_color"))
    rgb = apply_color_lut(ds.pixel_array, ds).astype(np.float64) / 257
    luma = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    assert np.abs(palette.frames[0] - luma).max() <= 1.0

    rgb_file = read_dicom(examples.get_path("rgb_color"))
    expected = cv2.cvtColor(pydicom.dcmread(examples.get_path("rgb_color")).pixel_array, cv2.COLOR_RGB2GRAY)
    assert rgb_file.photometric == "RGB" and np.abs(rgb_file.frames[0].astype(int) - expected).max() <= 1

    cine = read_dicom(examples.get_path("ybr_color"))  # YBR_FULL_422, JPEG baseline, 30 frames
    assert cine.photometric == "YBR_FULL_422" and len(cine.frames) == 30 and cine.fps == pytest.approx(30.0, rel=1e-3)
    assert all(f.shape == (240, 320) for f in cine.frames) and np.std(cine.frames[0]) > 5
    assert read_dicom(examples.get_path("jpeg2k")).frames[0].shape == (480, 640)


def test_the_pixel_spacing_comes_from_pixel_spacing_or_the_ultrasound_region_in_cm(tmp_path):
    """Scanners write their B-mode geometry as ultrasound regions in cm (every real ultrasound file here that has one);
    Pixel Spacing, when present, is in mm and wins. It reaches a sequence's frames, where the grain takes its size."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from usnst_io.media import read_sequence

    ds = pydicom.dcmread(examples.get_path("ybr_color"))  # a real cine: one 2-D region of 0.0510 cm per pixel
    assert pixel_spacing_mm(ds) == pytest.approx((0.5105, 0.5105), abs=1e-4)
    assert read_sequence(examples.get_path("ybr_color")).spacings == [pytest.approx((0.5105, 0.5105), abs=1e-4)] * 30
    assert read_sequence(examples.get_path("rgb_color")).spacings == [None]  # no geometry: none made up
    ds.PixelSpacing = [0.2, 0.3]
    assert pixel_spacing_mm(ds) == (0.2, 0.3)
    del ds.PixelSpacing
    doppler = Dataset()
    doppler.RegionSpatialFormat, doppler.PhysicalUnitsXDirection, doppler.PhysicalUnitsYDirection = 1, 4, 7  # s, cm/s
    doppler.PhysicalDeltaX, doppler.PhysicalDeltaY = 0.01, 0.5
    ds.SequenceOfUltrasoundRegions = Sequence([doppler])
    assert pixel_spacing_mm(ds) is None
    doppler.PhysicalUnitsXDirection = doppler.PhysicalUnitsYDirection = 3
    doppler.PhysicalDeltaY = -0.05  # signed: an axis pointing up
    assert pixel_spacing_mm(ds) == pytest.approx((0.5, 0.1))
    doppler.PhysicalDeltaX = 0.0
    assert pixel_spacing_mm(ds) is None
    del doppler.PhysicalDeltaX  # a region without its delta: no spacing, not an error
    assert pixel_spacing_mm(ds) is None


def test_monochrome1_and_16_bit_frames_are_inverted_and_scaled(tmp_path):
    ds = pydicom.dcmread(examples.get_path("rgb_color"))
    ramp = np.tile(np.arange(0, 4096, 16, dtype=np.uint16), (10, 1))  # 10 × 256, 12-bit
    ds.set_pixel_data(ramp, photometric_interpretation="MONOCHROME1", bits_stored=12)
    ds.save_as(tmp_path / "m1.dcm", enforce_file_format=True)
    frame = read_dicom(tmp_path / "m1.dcm").frames[0]
    assert frame.dtype == np.uint8 and frame[0, 0] == 255 and frame[0, -1] == 0  # MONOCHROME1: high = dark
    assert np.all(np.diff(frame[0].astype(int)) <= 0)


def test_a_compressed_file_without_its_plugin_names_the_syntax_and_the_plugins(tmp_path):
    ds = pydicom.dcmread(examples.get_path("rgb_color"))
    ds.PixelData = encapsulate([b"\xff\xd8 not really JPEG-LS \xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.save_as(tmp_path / "jls.dcm")
    with pytest.raises(DicomError, match=r"JPEG-LS.*pylibjpeg"):
        read_dicom(tmp_path / "jls.dcm")
    (tmp_path / "junk.dcm").write_bytes(b"not dicom at all")
    with pytest.raises(DicomError, match="not a readable DICOM"):
        read_dicom(tmp_path / "junk.dcm")


def test_derived_output_has_new_uids_derived_flags_and_the_original_geometry(tmp_path):
    cine = read_dicom(examples.get_path("ybr_color"))
    styled = [255 - f for f in cine.frames]
    out = write_derived(tmp_path / "styled.dcm", styled, cine, "usnst lq2hq (test)")
    back = read_dicom(out)
    src, ds = cine.dataset, back.dataset
    assert ds.SOPInstanceUID != src.SOPInstanceUID and ds.SeriesInstanceUID != src.SeriesInstanceUID
    assert ds.StudyInstanceUID != src.StudyInstanceUID and ds.SOPClassUID == src.SOPClassUID  # de-identified
    assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert ds.DerivationDescription.startswith("usnst lq2hq (test); burned-in annotations of the source")
    # The source states nothing about burned-in text and shows some: the derived image must not claim NO.
    assert "BurnedInAnnotation" not in src and ds.BurnedInAnnotation == "YES"
    assert ds.SeriesNumber == int(src.SeriesNumber) + 1000
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == new_uid(src.SOPInstanceUID)  # the de-identified source
    assert ds.SourceImageSequence[0].ReferencedSOPClassUID == src.SOPClassUID
    kept = read_dicom(write_derived(tmp_path / "kept.dcm", styled, cine, keep_identity=True)).dataset
    assert kept.StudyInstanceUID == src.StudyInstanceUID and kept.PatientName == src.PatientName
    assert kept.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert (ds.Rows, ds.Columns, int(ds.NumberOfFrames)) == (240, 320, 30) and back.fps == pytest.approx(cine.fps)
    assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.file_meta.TransferSyntaxUID.is_little_endian
    assert all(np.array_equal(a, b) for a, b in zip(back.frames, styled))
    assert not list(tmp_path.glob(".*usnst-tmp*"))
    with pytest.raises(ValueError, match="geometry"):
        write_derived(tmp_path / "bad.dcm", [f[:100] for f in styled], cine)


def test_replay_plays_a_dicom_cine_at_its_recorded_rate():
    from usnst_io import protocol

    items = list(open_source(examples.get_path("ybr_color")))
    assert len(items) == 30
    times = [t for t, _ in items]
    assert times[1] - times[0] == pytest.approx(1 / 30, rel=1e-3)
    frame = protocol.decode(items[0][1])
    assert frame.pixels.shape == (240, 320, 1) and frame.meta["source"] == "examples_ybr_color.dcm"
    assert [t for t, _ in open_source(examples.get_path("ybr_color"), fps=10)][1] == pytest.approx(0.1)


def test_stylize_takes_dicom_and_writes_derived_dicom_or_pngs(tmp_path, tiny_engine):
    import shutil

    from usnst.offline.stylize import StylizeJob, run_stylize

    (tmp_path / "in").mkdir()
    shutil.copy(examples.get_path("ybr_color"), tmp_path / "in" / "cine.dcm")
    shutil.copy(examples.get_path("palette_color"), tmp_path / "in" / "still.dcm")
    report = run_stylize(tiny_engine, StylizeJob(str(tmp_path / "in"), str(tmp_path / "d"), dicom_format="dicom",
                                                 progress=False))
    assert report.written == 2 and not report.failed
    cine = read_dicom(tmp_path / "d" / "cine.dcm")
    assert len(cine.frames) == 30 and cine.fps == pytest.approx(30, rel=1e-3)
    assert list(cine.dataset.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    again = run_stylize(tiny_engine, StylizeJob(str(tmp_path / "in"), str(tmp_path / "d"), dicom_format="dicom",
                                                progress=False))
    assert again.skipped == 2 and again.written == 0  # resume
    report = run_stylize(tiny_engine, StylizeJob(str(tmp_path / "in"), str(tmp_path / "p"), progress=False))
    assert report.written == 2
    assert len(list((tmp_path / "p").glob("cine_*.png"))) == 30 and (tmp_path / "p" / "still.png").exists()


def test_style_sets_read_dicom_cines_next_to_images(tmp_path):
    import shutil

    from usnst_io.media import read_stills

    (tmp_path / "style" / "sub").mkdir(parents=True)
    shutil.copy(examples.get_path("ybr_color"), tmp_path / "style" / "sub" / "cine.dcm")
    cv2.imwrite(str(tmp_path / "style" / "a.png"), np.full((20, 30), 128, np.uint8))
    images = read_stills(tmp_path / "style")
    assert len(images) == 31 and images[0].shape == (20, 30) and images[1].shape == (240, 320)
    assert len(read_stills(tmp_path / "style" / "sub" / "cine.dcm")) == 30


def test_cleaned_pixels_may_say_no_burned_in_annotation(tmp_path):
    cine = read_dicom(examples.get_path("ybr_color"))
    out = write_derived(tmp_path / "clean.dcm", cine.frames, cine, "cleaned", annotations_removed=True)
    ds = read_dicom(out).dataset
    assert ds.BurnedInAnnotation == "NO" and "annotations removed" in ds.DerivationDescription


def test_a_big_endian_source_is_written_little_endian(tmp_path):
    from pydicom.data import get_testdata_file

    series = read_dicom(get_testdata_file("ExplVR_BigEnd.dcm"))
    out = write_derived(tmp_path / "le.dcm", series.frames, series)
    back = read_dicom(out)
    assert back.dataset.file_meta.TransferSyntaxUID.is_little_endian
    assert all(np.array_equal(a, b) for a, b in zip(back.frames, series.frames))


def test_a_truncated_uncompressed_file_is_called_damaged_not_a_missing_plugin(tmp_path):
    from pydicom.data import get_testdata_file

    data = open(get_testdata_file("ExplVR_BigEnd.dcm"), "rb").read()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) - 2000])
    with pytest.raises(DicomError) as info:
        read_dicom(tmp_path / "cut.dcm")
    assert "truncated or damaged" in str(info.value) and "pip install" not in str(info.value)


def _identified_series(tmp_path, n=6):
    """``n`` single-frame images of one series, every PS3.15 basic-profile attribute filled with a marked value,
    nested in a sequence too, plus a private tag: what the tester's DICOM carried, and more."""
    from pydicom.datadict import dictionary_VR
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import generate_uid

    from usnst_io import deidentify as d

    samples = {"PN": "SECRET^NAME", "DA": "19710203", "TM": "101112", "DT": "19710203101112", "UI": None,
               "AS": "051Y", "DS": "71.5", "IS": "7", "US": 7, "SS": 7, "UL": 7, "FL": 7.0, "FD": 7.0, "CS": "SECRETCS"}
    template = pydicom.dcmread(examples.get_path("rgb_color"))
    series_uid, study_uid = generate_uid(), generate_uid()
    secrets = set()
    paths = []
    for i in range(n):
        ds = template.copy()
        for keyword in d.REMOVE + d.EMPTY + d.DUMMY + d.NEW_UID:
            vr = dictionary_VR(keyword)
            if keyword == "MediaStorageSOPInstanceUID" or vr in ("OB", "OW", "UN", "OD", "OF", "OL", "OV", "AT"):
                continue
            if vr == "SQ":
                item = Dataset()
                item.PatientName = "NESTED^SECRET"
                item.ReferencedSOPInstanceUID = generate_uid()
                secrets.add(str(item.ReferencedSOPInstanceUID))
                setattr(ds, keyword, Sequence([item]))
            elif vr == "UI":
                value = generate_uid()
                setattr(ds, keyword, value)
                secrets.add(value)
            else:
                value = samples.get(vr, f"SECRET-{keyword}"[:16])
                setattr(ds, keyword, value)
                if isinstance(value, str) and value.startswith("SECRET"):
                    secrets.add(value)
        ds.SeriesInstanceUID, ds.StudyInstanceUID = series_uid, study_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        secrets |= {series_uid, study_uid, str(ds.SOPInstanceUID)}
        ds.SeriesNumber, ds.InstanceNumber = 1, i + 1
        ds.BurnedInAnnotation = "NO"  # what the scanner claimed; the derived image must not repeat it
        ds.add_new(0x00091001, "LO", "SECRET-PRIVATE")
        secrets.add("SECRET-PRIVATE")
        paths.append(tmp_path / "in" / f"img{i}.dcm")
        paths[-1].parent.mkdir(exist_ok=True)
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths, secrets


def test_derived_dicom_keeps_no_identifying_attribute_and_one_series_stays_one(tmp_path, tiny_engine):
    """Issue 25, items 5 and 14: PS3.15's basic profile by default, honest Burned In Annotation, usnst as the
    equipment, and six images of one series become six images of one derived series, in one run or in shards."""
    from usnst.offline.stylize import StylizeJob, run_stylize
    from usnst_io import deidentify as d

    paths, secrets = _identified_series(tmp_path)
    run_stylize(tiny_engine, StylizeJob(str(tmp_path / "in"), str(tmp_path / "out"), dicom_format="dicom",
                                        progress=False))
    outputs = sorted((tmp_path / "out").glob("*.dcm"))
    assert len(outputs) == 6
    for out in outputs:
        data = out.read_bytes()
        leaked = sorted(s for s in secrets if s.encode() in data)
        assert not leaked, f"{out.name} still holds {leaked[:5]}"
        ds = pydicom.dcmread(out)
        for keyword in d.EMPTY:
            assert keyword not in ds or not ds[keyword].value
        assert ds.PatientIdentityRemoved == "YES" and ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
        assert ds.BurnedInAnnotation == "YES" and ds.Manufacturer == "usnst"
        assert "DeviceSerialNumber" not in ds and not any(e.tag.is_private for e in ds)
    datasets = [pydicom.dcmread(o) for o in outputs]
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 1 and len({ds.SOPInstanceUID for ds in datasets}) == 6
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1 and {int(ds.SeriesNumber) for ds in datasets} == {1001}
    for i in range(3):  # shards agree on every UID
        run_stylize(tiny_engine, StylizeJob(str(tmp_path / "in"), str(tmp_path / "shards"), dicom_format="dicom",
                                            shard=(i, 3), progress=False))
    sharded = [pydicom.dcmread(o) for o in sorted((tmp_path / "shards").glob("*.dcm"))]
    assert [ds.SOPInstanceUID for ds in sharded] == [ds.SOPInstanceUID for ds in datasets]
    assert {ds.SeriesInstanceUID for ds in sharded} == {datasets[0].SeriesInstanceUID}
    with pytest.raises(ValueError, match="--dicom-format dicom"):
        run_stylize(tiny_engine, StylizeJob(str(tmp_path / "in"), str(tmp_path / "png"), keep_identity=True,
                                            progress=False))
