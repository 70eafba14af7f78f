"""Issue 18 item 9: DICOM pixels go through pydicom's modality LUT and the VOI LUT / window; the manifest says which.

Synthetic files written by pydicom with known rescale slope/intercept, window and VOI LUT; the expected display
intensities are written in closed form from the DICOM standard (PS3.3 C.11.2.1.2.1), not from pydicom.
"""

import io

import numpy as np
import pytest
from PIL import Image

pydicom = pytest.importorskip("pydicom")

from cdtm_hf.data.dicom import dicom_lut_counts, dicom_pixels, dicom_to_png_bytes  # noqa: E402
from data_fixtures import make_cbis_ddsm_nbia_tree, manifest, prepare, write_dicom  # noqa: E402

STORED = np.arange(0, 1200, 10, dtype=np.uint16).reshape(12, 10)  # 0 .. 1190


def _with_tags(path, **tags):
    ds = pydicom.dcmread(path)
    for key, value in tags.items():
        if key == "VOILUTSequence":
            item = pydicom.Dataset()
            item.LUTDescriptor = value[0]
            item.add_new(0x00283006, "US", value[1])  # LUT Data (US, not the ambiguous OW)
            ds.VOILUTSequence = [item]
        else:
            setattr(ds, key, value)
    ds.save_as(path)
    return pydicom.dcmread(path)


def _linear_window(values, center, width):
    """PS3.3 C.11.2.1.2.1 (LINEAR), as a fraction of the output range."""
    c, w = center - 0.5, width - 1
    out = (values - c) / w + 0.5
    return np.where(values <= c - w / 2, 0.0, np.where(values > c + w / 2, 1.0, out))


def test_rescale_then_window(tmp_path):
    ds = _with_tags(write_dicom(tmp_path / "a.dcm", STORED), RescaleSlope=2, RescaleIntercept=-100,
                    WindowCenter=900, WindowWidth=801)
    pixels, used = dicom_pixels(ds)
    hu = 2.0 * STORED - 100  # the modality LUT
    np.testing.assert_allclose(pixels, _linear_window(hu, 900, 801), atol=1e-12)
    assert used == {"modality_lut": "rescale", "voi_lut": "window"}
    assert pixels.min() == 0 and pixels.max() == 1 and 0 < pixels[5, 5] < 1  # clipped on both sides


def test_monochrome1_window_is_inverted(tmp_path):
    ds = _with_tags(write_dicom(tmp_path / "a.dcm", STORED), PhotometricInterpretation="MONOCHROME1",
                    WindowCenter=600, WindowWidth=401)
    pixels, used = dicom_pixels(ds)
    np.testing.assert_allclose(pixels, 1 - _linear_window(STORED.astype(float), 600, 401), atol=1e-12)
    assert used == {"modality_lut": "none", "voi_lut": "window"}


def test_voi_lut_sequence(tmp_path):
    first, lut = 100, np.linspace(0, 4095, 256).round().astype(np.uint16)  # 256 entries from stored value 100
    ds = _with_tags(write_dicom(tmp_path / "a.dcm", STORED), VOILUTSequence=([256, first, 12], lut.tolist()))
    pixels, used = dicom_pixels(ds)
    expected = lut[np.clip(STORED.astype(int) - first, 0, 255)] / 4095.0
    np.testing.assert_allclose(pixels, expected, atol=1e-12)
    assert used == {"modality_lut": "none", "voi_lut": "voi_lut"}


def test_without_window_the_modality_values_are_scaled_by_their_range(tmp_path):
    ds = _with_tags(write_dicom(tmp_path / "a.dcm", STORED), RescaleSlope=0.5, RescaleIntercept=10)
    pixels, used = dicom_pixels(ds)
    np.testing.assert_allclose(pixels, STORED / 1190.0, atol=1e-12)
    assert used == {"modality_lut": "rescale", "voi_lut": "none"}


def test_png_bytes_carry_the_window(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", STORED)
    _with_tags(path, WindowCenter=600, WindowWidth=401)
    png = np.asarray(Image.open(io.BytesIO(dicom_to_png_bytes(str(path)))), dtype=float)
    np.testing.assert_allclose(png / 65535, _linear_window(STORED.astype(float), 600, 401), atol=1 / 65535)
    assert dicom_lut_counts([path, tmp_path / "b.png"]) == {"modality_lut": {"none": 1}, "voi_lut": {"window": 1}}


def test_cbis_ddsm_manifest_records_the_luts_and_images_are_windowed(tmp_path):
    """Through the builder: a windowed crop's pixels are the window's, and the manifest counts the LUTs used."""
    tree = make_cbis_ddsm_nbia_tree(tmp_path / "tcia", n_patients=6, no_description=0)
    windowed = sorted(tree["crop_files"])[0]
    ds = _with_tags(tree["root"] / windowed, RescaleSlope=1, RescaleIntercept=-50, WindowCenter=60, WindowWidth=41)
    builder, splits = prepare(__import__("cdtm_hf").data.get_builder_class("cbis_ddsm"), tree["root"],
                              tmp_path / "cache", split_strategy="official")
    luts = manifest(builder)["notes"]["dicom_luts"]
    n = len(tree["crop_files"])
    assert luts == {"modality_lut": {"none": n - 1, "rescale": 1}, "voi_lut": {"none": n - 1, "window": 1}}
    row = next(r for s in splits for r in splits[s] if r["file"] == windowed)
    expected = _linear_window(ds.pixel_array.astype(float) - 50, 60, 41)
    np.testing.assert_allclose(np.asarray(row["image"], dtype=float) / 65535, expected, atol=1 / 65535)
