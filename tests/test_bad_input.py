"""Bad input gets one clear line and a non-zero exit, never a traceback, and no output is left
looking complete (issue 17, defect 5)."""

from __future__ import annotations

import json
import shutil
import struct
import zlib

import numpy as np
import pytest
from fixtures_ml import tiny_artifact  # noqa: F401 (fixture)

from bolt_inspection import cli
from bolt_inspection.core.errors import ImageError, ModelError


def run_cli(capfd, *argv) -> tuple[int, str, str]:
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exc:           # argparse's own one-line errors
        code = exc.code
    out, err = capfd.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert 'Traceback' not in err, err
    errors = [line for line in lines if 'error:' in line]
    assert len(errors) == 1, err
    return errors[0]


@pytest.fixture
def log_db(tmp_path):
    from bolt_inspection.core.log.inspection_log import InspectionLog, VerdictRecord

    db = tmp_path / 'inspection.db'
    with InspectionLog(db) as log:
        log.record(VerdictRecord(bolt_id='1', trigger_ns=1, code=2, message='NG'))
    return db


def huge_png(path, width=40000, height=40000):
    """A valid PNG header for a 1.6 Gpx image (OpenCV's limit is 2^30 px), 1-bit grey."""
    def chunk(kind, data):
        return (struct.pack('>I', len(data)) + kind + data
                + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))
    ihdr = struct.pack('>IIBBBBB', width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr)
                     + chunk(b'IDAT', zlib.compress(b'\x00' * 64)) + chunk(b'IEND', b''))
    return path


# -- models ------------------------------------------------------------------------------------

def _copy_model(src, dst):
    shutil.copytree(src, dst)
    meta = json.loads((dst / 'metadata.json').read_text())
    meta['model_id'] = ''              # let the hash check pass, so the file itself is read
    (dst / 'metadata.json').write_text(json.dumps(meta))
    return dst, meta


def test_a_corrupt_model_file_is_called_corrupt_not_missing(tiny_artifact, tmp_path):  # noqa: F811
    from bolt_inspection.core.model.artifact import load_artifact

    model, _ = _copy_model(tiny_artifact, tmp_path / 'corrupt')
    data = (model / 'model.keras').read_bytes()
    (model / 'model.keras').write_bytes(data[:len(data) // 3])          # truncated copy
    with pytest.raises(ModelError) as info:
        load_artifact(model)
    text = str(info.value)
    assert 'not found' not in text.lower() and 'corrupt' in text and '\n' not in text
    (model / 'model.keras').write_bytes(b'PK\x03\x04' + b'\x00' * 200)   # zip magic, no zip
    with pytest.raises(ModelError, match='corrupt'):
        load_artifact(model)


@pytest.mark.parametrize('frame_size', [5, [320], [320, 240, 3], [0, 240], [-320, 240],
                                        ['a', 'b'], 'big', [320.5, 240], [True, 240]])
def test_a_wrong_frame_size_in_an_artifact_is_a_one_line_error(tiny_artifact, tmp_path,  # noqa: F811
                                                               capfd, frame_size):
    model, meta = _copy_model(tiny_artifact, tmp_path / 'model')
    meta['frame_size'] = frame_size
    (model / 'metadata.json').write_text(json.dumps(meta))
    image = tmp_path / 'x_cam0.png'
    import cv2
    cv2.imwrite(str(image), np.zeros((240, 320, 3), np.uint8))
    code, _, err = run_cli(capfd, 'gradcam', '--model', model, '--images', image,
                           '--out', tmp_path / 'out')
    assert code == 2
    assert 'frame_size' in one_line_error(err)


# -- images ------------------------------------------------------------------------------------

def test_an_image_above_a_gigapixel_is_an_image_error(tmp_path):
    from bolt_inspection.core.vision.dataset import read_image

    with pytest.raises(ImageError, match='40000x40000'):
        read_image(huge_png(tmp_path / 'huge.png'))


def test_a_huge_image_in_a_camera_folder_is_a_camera_error(tmp_path):
    from bolt_inspection.core.vision.camera_source import CameraSourceConfig, FolderSource

    huge_png(tmp_path / '1_cam0.png')
    source = FolderSource(CameraSourceConfig(source='folder', cam=0, folder=str(tmp_path)))
    source.open()
    with pytest.raises(ImageError):
        source.grab('1')


# -- report ------------------------------------------------------------------------------------

@pytest.mark.parametrize('since', ['0001-01-01', '-99999999999d', '0001-01-01T00:00+00:00',
                                   '9999-12-31T23:59:59+14:00', '-1e400h'])
def test_report_with_an_out_of_range_time_is_a_one_line_error(log_db, capfd, since):
    code, _, err = run_cli(capfd, 'report', '--db', log_db, f'--since={since}')
    assert code == 2, err
    one_line_error(err)


@pytest.mark.parametrize('option', ['--csv', '--plot'])
def test_report_checks_its_output_before_the_work(log_db, tmp_path, capfd, option):
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a folder')
    code, out, err = run_cli(capfd, 'report', '--db', log_db, '--since=-1000d', option,
                             blocker / 'out.x')
    assert code == 2
    assert option[2:] in one_line_error(err)
    assert out == ''                       # nothing printed as if the report had worked


def test_a_csv_is_never_left_half_written(log_db, tmp_path, capfd, monkeypatch):
    import csv as csv_module

    make_writer = csv_module.writer

    def failing_writer(fh, *a, **k):
        real = make_writer(fh, *a, **k)

        class Writer:
            rows = 0

            def writerow(self, row):
                Writer.rows += 1
                if Writer.rows == 2:
                    raise OSError(28, 'No space left on device')
                return real.writerow(row)
        return Writer()
    from bolt_inspection.core.log import shift_report
    monkeypatch.setattr(shift_report.csv, 'writer', failing_writer)
    code, _, err = run_cli(capfd, 'report', '--db', log_db, '--since=-1000d', '--csv',
                           tmp_path / 'out.csv')
    assert code == 2 and 'No space left' in one_line_error(err)
    assert list(tmp_path.glob('out.csv*')) == []


# -- gradcam, line, plc-sim, play, record ------------------------------------------------------

def test_gradcam_checks_its_output_folder_before_loading_the_model(tmp_path, capfd):
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a folder')
    image = tmp_path / 'x_cam0.png'
    image.write_bytes(b'')
    model = tmp_path / 'no_model_needed_to_fail'
    code, _, err = run_cli(capfd, 'gradcam', '--model', model, '--images', image,
                           '--out', blocker / 'out')
    assert code == 2 and '--out' in one_line_error(err)


def test_line_checks_summary_out_before_starting(tmp_path, capfd, ros_domain_id):
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a folder')
    code, out, err = run_cli(capfd, 'line', '--model', tmp_path, '--summary-out',
                             blocker / 's.json')
    assert code == 2 and '--summary-out' in one_line_error(err)
    assert 'line up' not in out


@pytest.mark.parametrize('argv', [
    ['line', '--rate', 'nan'], ['line', '--rate', 'inf'], ['line', '--rate', '-1'],
    ['line', '--view-timeout', 'nan'], ['line', '--drain', 'nan'],
    ['line', '--gate-delay', 'inf'], ['line', '--tally-period', 'nan'],
    ['plc-sim', '--rate', 'nan'], ['plc-sim', '--gate-delay', 'nan'],
    ['plc-sim', '--heartbeat-timeout', 'inf'], ['play', 'bag', '--rate', 'nan'],
    ['record', '--out', 'x', '--duration', 'nan'],
])
def test_non_finite_numbers_are_refused_by_the_parser(capfd, argv):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capfd.readouterr().err
    assert 'Traceback' not in err and 'error: argument' in err
