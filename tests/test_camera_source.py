"""Camera frame sources (core, no ROS): synthetic, dataset folder, OpenCV device."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from bolt_inspection.core.errors import ConfigError, ImageError
from bolt_inspection.core.vision.camera_source import (
    CameraSourceConfig,
    DeviceSource,
    FolderSource,
    make_source,
    parse_device,
)


def _frame(value: int, size=(64, 48)) -> np.ndarray:
    img = np.zeros((size[1], size[0], 3), np.uint8)
    img[:] = value
    return img


@pytest.fixture
def video(tmp_path):
    """A 6-frame MJPG video whose frame k is uniformly grey level 40*k."""
    path = tmp_path / 'cam.avi'
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 10, (64, 48))
    assert writer.isOpened()
    for k in range(6):
        writer.write(_frame(40 * k))
    writer.release()
    return path


def test_config_validation_names_the_bad_field():
    with pytest.raises(ConfigError, match='source'):
        make_source(CameraSourceConfig(source='webcam'))
    with pytest.raises(ConfigError, match='camera index 4'):
        make_source(CameraSourceConfig(cam=4, n_cams=4))
    with pytest.raises(ConfigError, match='folder parameter'):
        make_source(CameraSourceConfig(source='folder'))
    with pytest.raises(ConfigError, match='device parameter'):
        make_source(CameraSourceConfig(source='device'))


def test_synthetic_source_renders_the_same_view_as_core():
    synth = pytest.importorskip('bolt_inspection.core.vision.synth')
    cfg = CameraSourceConfig(source='synthetic', cam=2, size=(160, 120), seed=3)
    src = make_source(cfg)
    src.open()
    frame = src.grab('17')
    expected = synth.render_view(synth.bolt_spec(3, 17, 0.5), 2, (160, 120)).image
    assert frame.shape == (120, 160, 3) and frame.dtype == np.uint8
    assert np.array_equal(frame, expected)
    with pytest.raises(ImageError, match='not a decimal'):
        src.grab('bolt-x')


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith('synthetic-prefetch')]


def test_synthetic_prefetch_gives_each_bolt_its_own_render_in_any_order():
    synth = pytest.importorskip('bolt_inspection.core.vision.synth')
    cfg = CameraSourceConfig(source='synthetic', cam=1, size=(160, 120), seed=4)
    src = make_source(cfg)
    src.open()
    # In order (prefetch hits), then skipped, repeated and backwards ids (prefetch misses).
    order = ['1', '2', '3', '7', '7', '5', '6', '2', '3']
    frames = [src.grab(bolt) for bolt in order]
    src.close()
    for bolt, frame in zip(order, frames, strict=True):
        expected = synth.render_view(synth.bolt_spec(4, int(bolt), 0.5), 1, (160, 120)).image
        assert np.array_equal(frame, expected), f'bolt {bolt}'
    # 1, 2, 3 follow 0 (the warm-up), 6 follows 5, 3 follows 2: served from the prefetch.
    assert (src.prefetch_hits, src.prefetch_misses) == (5, 4)
    assert not _prefetch_threads()
    # Frames handed out are independent arrays, never one buffer reused.
    assert not any(np.shares_memory(a, b) for i, a in enumerate(frames) for b in frames[i + 1:])


def test_synthetic_prefetch_on_request_renders_only_when_asked():
    # What the camera node does with the classifier's verdicts: nothing renders in the
    # background until prefetch_next(), so the render never competes with inference.
    cfg = CameraSourceConfig(source='synthetic', size=(160, 120), prefetch_on_grab=False)
    src = make_source(cfg)
    src.open()                                  # warm-up grab of 0, then bolt 1 on request
    src.grab('1')
    for thread in _prefetch_threads():
        thread.join()
    assert not _prefetch_threads()              # grab('1') started nothing by itself
    src.prefetch_next()
    src.prefetch_next()                         # idempotent: one render of bolt 2
    assert len(_prefetch_threads()) <= 1
    reference = make_source(CameraSourceConfig(source='synthetic', size=(160, 120),
                                               prefetch=False))
    reference.open()
    assert np.array_equal(src.grab('2'), reference.grab('2'))
    src.grab('3')                               # not asked for: rendered on the spot
    assert (src.prefetch_hits, src.prefetch_misses) == (2, 1)
    src.close()
    reference.close()
    src.prefetch_next()                         # after close: ignored, no thread
    assert not _prefetch_threads()


def test_synthetic_prefetch_off_and_close_leave_no_threads():
    cfg = CameraSourceConfig(source='synthetic', size=(160, 120), prefetch=False)
    src = make_source(cfg)
    src.open()
    src.grab('1')
    assert src.prefetch_hits == 0 and not _prefetch_threads()
    src.close()
    src = make_source(CameraSourceConfig(source='synthetic', size=(160, 120)))
    src.open()
    src.grab('1')
    src.close()                 # joins the prefetch of bolt 2 that is still rendering
    assert src.state == 'closed' and not _prefetch_threads()
    with pytest.raises(ImageError, match='not open'):
        src.grab('2')


def test_synthetic_grab_is_thread_safe():
    synth = pytest.importorskip('bolt_inspection.core.vision.synth')
    src = make_source(CameraSourceConfig(source='synthetic', size=(96, 72), seed=2))
    src.open()
    got: dict[int, list[np.ndarray]] = {k: [] for k in range(1, 9)}

    def worker():
        for bolt in range(1, 9):
            got[bolt].append(src.grab(str(bolt)))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    src.close()
    for bolt, frames in got.items():
        expected = synth.render_view(synth.bolt_spec(2, bolt, 0.5), 0, (96, 72)).image
        assert len(frames) == 3 and all(np.array_equal(f, expected) for f in frames)
    assert not _prefetch_threads()


def test_folder_source_replays_bolt_by_id_then_in_order(tmp_path):
    (tmp_path / 'images').mkdir()
    for bolt in (3, 5):
        for cam in (0, 1):
            cv2.imwrite(str(tmp_path / 'images' / f'{bolt:06d}_cam{cam}.png'),
                        _frame(10 * bolt + cam))
    src = FolderSource(CameraSourceConfig(source='folder', cam=1, folder=str(tmp_path)))
    src.open()
    assert src.grab('5')[0, 0, 0] == 51
    assert src.grab('3')[0, 0, 0] == 31
    # Unknown ids replay the folder in order, one bolt per trigger, wrapping around.
    assert [src.grab('999')[0, 0, 0] for _ in range(3)] == [31, 51, 31]


def test_folder_source_keras_layout_and_errors(tmp_path):
    for label, value in (('NG', 1), ('OK', 2)):
        (tmp_path / label).mkdir()
        cv2.imwrite(str(tmp_path / label / 'a.png'), _frame(value))
    src = FolderSource(CameraSourceConfig(source='folder', folder=str(tmp_path)))
    src.open()
    assert [src.grab('0')[0, 0, 0] for _ in range(2)] == [1, 2]
    with pytest.raises(ConfigError, match='does not exist'):
        FolderSource(CameraSourceConfig(source='folder', folder=str(tmp_path / 'x'))).open()
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ConfigError, match='no images'):
        FolderSource(CameraSourceConfig(source='folder', folder=str(tmp_path / 'empty'))).open()


def test_parse_device_spec():
    assert parse_device('0')[0] == 0
    assert parse_device('videotestsrc ! appsink')[1] == cv2.CAP_GSTREAMER
    assert parse_device('rtsp://127.0.0.1/cam')[0] == 'rtsp://127.0.0.1/cam'


def test_device_file_is_read_frame_by_frame_and_loops(video):
    src = DeviceSource(CameraSourceConfig(source='device', device=str(video)))
    src.open()
    levels = [int(src.grab()[0, 0, 0]) for _ in range(8)]
    src.close()
    # MJPG is lossy; the grey levels come back within a few units, and frame 6 is frame 0 again.
    assert np.allclose(levels, [0, 40, 80, 120, 160, 200, 0, 40], atol=4)


def test_device_reconnects_with_backoff_after_a_drop(video, tmp_path):
    now = [0.0]
    cfg = CameraSourceConfig(source='device', device=str(video), reconnect_min_s=1.0,
                             reconnect_max_s=4.0)
    src = DeviceSource(cfg, clock=lambda: now[0])
    src.open()
    for _ in range(6):
        src.grab()
    hidden = tmp_path / 'away.avi'
    video.rename(hidden)  # the "cable" is pulled: the end of the file cannot be reopened
    with pytest.raises(ImageError, match='reconnecting'):
        src.grab()
    assert src.state == 'reconnecting' and 'dropped' in src.last_error
    hidden.rename(video)
    now[0] = 0.5  # still inside the first backoff delay: no retry yet
    with pytest.raises(ImageError):
        src.grab()
    now[0] = 1.5
    assert src.grab().shape == (48, 64, 3)
    assert src.state == 'open' and src.reconnects == 1
    src.close()
    assert src.state == 'closed'


def test_device_threaded_reader_gives_only_new_frames(video):
    src = DeviceSource(CameraSourceConfig(source='device', device=str(video)), threaded=True)
    src.open()
    deadline = time.monotonic() + 5
    frame = None
    while frame is None and time.monotonic() < deadline:
        try:
            frame = src.grab()
        except ImageError:
            time.sleep(0.01)
    src.close()
    assert frame is not None and frame.shape == (48, 64, 3)


def test_device_that_cannot_open_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match='cannot open'):
        DeviceSource(CameraSourceConfig(source='device', device=str(tmp_path / 'none.avi'))).open()
