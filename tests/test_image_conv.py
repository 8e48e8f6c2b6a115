"""sensor_msgs/Image <-> numpy conversion (no cv_bridge on PyPI: the package's own converter)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip('sensor_msgs')

from bolt_inspection.core.errors import ImageError  # noqa: E402
from bolt_inspection.nodes.image_conv import bgr_to_image, image_to_bgr  # noqa: E402


@pytest.fixture
def bgr():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)


def test_bgr8_round_trip_keeps_pixels_and_header(bgr):
    msg = bgr_to_image(bgr, frame_id='cam0_optical_frame')
    assert (msg.width, msg.height, msg.step, msg.encoding) == (5, 6, 15, 'bgr8')
    assert msg.header.frame_id == 'cam0_optical_frame'
    assert np.array_equal(image_to_bgr(msg), bgr)


@pytest.mark.parametrize('encoding', ['rgb8', 'bgra8', 'mono8'])
def test_other_8bit_encodings_come_out_as_bgr(bgr, encoding):
    if encoding == 'rgb8':
        msg, want = bgr_to_image(bgr[:, :, ::-1], encoding='rgb8'), bgr
    elif encoding == 'bgra8':
        alpha = np.full(bgr.shape[:2] + (1,), 255, np.uint8)
        msg, want = bgr_to_image(np.concatenate([bgr, alpha], 2), encoding='bgra8'), bgr
    else:
        msg, want = bgr_to_image(bgr[:, :, 0], encoding='mono8'), np.repeat(bgr[:, :, :1], 3, 2)
    out = image_to_bgr(msg)
    assert out.shape == (6, 5, 3) and np.array_equal(out, want)


def test_padded_rows_are_cropped(bgr):
    msg = bgr_to_image(bgr)
    padded = np.zeros((6, 20), np.uint8)
    padded[:, :15] = bgr.reshape(6, 15)
    msg.step, msg.data = 20, padded.tobytes()
    assert np.array_equal(image_to_bgr(msg), bgr)


def test_bad_frames_raise_one_line_reasons(bgr):
    msg = bgr_to_image(bgr)
    msg.encoding = '16UC1'
    with pytest.raises(ImageError, match="unsupported encoding '16UC1'"):
        image_to_bgr(msg)
    msg = bgr_to_image(bgr)
    msg.data = msg.data[:-3]
    with pytest.raises(ImageError, match='87 data bytes, expected'):
        image_to_bgr(msg)
    msg = bgr_to_image(bgr)
    msg.step = 10
    with pytest.raises(ImageError, match='step 10 < width 5'):
        image_to_bgr(msg)
    with pytest.raises(ImageError, match='frame 5x6, expected 64x48'):
        image_to_bgr(bgr_to_image(bgr), expected_size=(64, 48))
    with pytest.raises(ImageError, match='does not fit'):
        bgr_to_image(bgr, encoding='mono8')
    with pytest.raises(ImageError, match='uint8'):
        bgr_to_image(bgr.astype(np.float32))


def test_full_frame_is_accepted_fast_with_ros_field_checks(monkeypatch):
    import time

    import sensor_msgs.msg._image as generated
    # What ROS_PYTHON_CHECK_FIELDS=1 sets when the message module is imported.
    monkeypatch.setattr(generated, 'ros_python_check_fields', '1')
    frame = np.random.default_rng(1).integers(0, 256, (960, 1280, 3), dtype=np.uint8)
    start = time.perf_counter()
    msg = bgr_to_image(frame[:, ::-1])                  # a non-contiguous view, too
    elapsed = time.perf_counter() - start
    assert msg._check_fields and msg.data.typecode == 'B'
    assert np.array_equal(image_to_bgr(msg), frame[:, ::-1])
    # bytes would be checked value by value (~0.25 s); the array.array is taken as is (~1 ms).
    assert elapsed < 0.1
