"""Inspection log: round trip, delivery updates, pruning, schema, and survival of a SIGKILL."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import cv2
import numpy as np
import pytest

from bolt_inspection.core.log.inspection_log import (
    SCHEMA_VERSION,
    InspectionLog,
    LogError,
    VerdictRecord,
    connect_readonly,
    read_verdict,
    read_verdicts,
)


def _noise(seed: int, shape=(64, 32, 3)) -> np.ndarray:
    # Random pixels do not compress, so PNG sizes are predictable (~ raw size).
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _ng(bolt: int, **kw) -> VerdictRecord:
    fields = dict(bolt_id=str(bolt), trigger_ns=1_000_000 * bolt, code=2,
                  message='NG: missing view cam3', p_ng={0: 0.9, 1: 0.1, 2: 0.2, 3: None},
                  threshold=0.5, latency_ms=120.5, model_id='m1',
                  reasons=['missing view cam3'],
                  crops={cam: _noise(bolt * 10 + cam) for cam in range(3)},
                  mosaic=_noise(bolt, (64, 64, 3)))
    fields.update(kw)
    return VerdictRecord(**fields)


def _ok(bolt: int, **kw) -> VerdictRecord:
    fields = dict(bolt_id=str(bolt), trigger_ns=1_000_000 * bolt, code=1, message='OK',
                  p_ng={0: 0.01, 1: 0.02, 2: 0.03, 3: 0.04}, threshold=0.5, latency_ms=80.0,
                  model_id='m1', crops={0: _noise(bolt)}, mosaic=_noise(bolt, (64, 64, 3)))
    fields.update(kw)
    return VerdictRecord(**fields)


def test_round_trip_rows_and_ng_images(tmp_path):
    db = tmp_path / 'log' / 'inspection.db'
    ng = _ng(7)
    with InspectionLog(db) as log:
        log.record(_ok(6))
        log.record(ng)
        assert log.flush()
        assert log.stats()['written'] == 2
    rows = read_verdicts(db, with_images=True)
    assert [r.bolt_id for r in rows] == ['6', '7']
    ok, bad = rows
    assert ok.ok and ok.message == 'OK' and ok.images == []   # OK bolts keep no pictures
    assert not bad.ok and bad.code == 2 and bad.message == 'NG: missing view cam3'
    assert bad.reasons == ['missing view cam3']
    assert bad.p_ng == {0: 0.9, 1: 0.1, 2: 0.2, 3: None}
    assert (bad.threshold, bad.latency_ms, bad.model_id) == (0.5, 120.5, 'm1')
    assert bad.trigger_ns == 7_000_000 and bad.plc_state == 'pending'
    kinds = sorted((img.kind, img.cam) for img in bad.images)
    assert kinds == [('crop', 0), ('crop', 1), ('crop', 2), ('mosaic', None)]
    for img in bad.images:
        assert img.state == 'stored' and img.path.is_file()
        assert img.path.parent.parent == tmp_path / 'log' / 'inspection_images'
        expected = ng.mosaic if img.kind == 'mosaic' else ng.crops[img.cam]
        np.testing.assert_array_equal(cv2.imread(str(img.path)), expected)
    assert not list((tmp_path / 'log').rglob('*.tmp'))
    again = read_verdict(db, bad.id)
    assert again.images == bad.images and again.message == bad.message


def test_wal_mode_schema_version_and_reader_while_writing(tmp_path):
    db = tmp_path / 'inspection.db'
    log = InspectionLog(db)
    log.record(_ok(1))
    log.flush()
    conn = connect_readonly(db)
    assert conn.execute('PRAGMA journal_mode').fetchone()[0] == 'wal'
    assert conn.execute('PRAGMA user_version').fetchone()[0] == SCHEMA_VERSION
    with pytest.raises(sqlite3.OperationalError, match='readonly'):
        conn.execute("UPDATE verdicts SET message = 'x'")
    log.record(_ok(2))
    log.flush()
    assert conn.execute('SELECT COUNT(*) FROM verdicts').fetchone()[0] == 2
    conn.close()
    log.close()
    with pytest.raises(RuntimeError, match='closed'):
        log.record(_ok(3))


def test_delivery_state_updates_latest_row_and_early_reports(tmp_path):
    db = tmp_path / 'inspection.db'
    with InspectionLog(db) as log:
        log.record(_ok(5))
        log.record(_ok(5))                      # bolt ids restart when the PLC counter wraps
        log.record(_ng(6))
        log.set_delivery('5', 'delivered')
        log.set_delivery(6, 'undelivered')
        log.set_delivery('8', 'delivered')      # bridge faster than the log
        log.record(_ok(8))
        with pytest.raises(ValueError, match='delivery state'):
            log.set_delivery('5', 'lost')
    states = [(r.bolt_id, r.plc_state) for r in read_verdicts(db)]
    assert states == [('5', 'pending'), ('5', 'delivered'), ('6', 'undelivered'),
                      ('8', 'delivered')]


def test_time_window_and_newest_first(tmp_path):
    db = tmp_path / 'inspection.db'
    with InspectionLog(db) as log:
        for i in range(10):
            log.record(_ok(i, created_ns=1_000 + i))
    assert [r.bolt_id for r in read_verdicts(db, since_ns=1_003, until_ns=1_006)] == [
        '3', '4', '5']
    assert [r.bolt_id for r in read_verdicts(db, limit=3, newest_first=True)] == ['9', '8', '7']
    assert [r.created_ns for r in read_verdicts(db, bolt_id='4')] == [1_004]


def test_invalid_records_rejected(tmp_path):
    with InspectionLog(tmp_path / 'inspection.db') as log:
        with pytest.raises(ValueError, match='code'):
            log.record(_ok(1, code=0))
        with pytest.raises(ValueError, match='plc_state'):
            log.record(_ok(1, plc_state='sent'))


def test_pruning_keeps_rows_and_bounds_disk(tmp_path):
    db = tmp_path / 'inspection.db'
    one_bolt = 3 * 64 * 32 * 3 + 64 * 64 * 3      # ~ raw bytes of 3 crops + mosaic
    limit = int(2.5 * one_bolt)
    with InspectionLog(db, max_image_bytes=limit) as log:
        for bolt in range(8):
            log.record(_ng(bolt))
            log.flush()
        stats = log.stats()
    assert stats['image_bytes'] <= limit and stats['images_pruned'] > 0
    rows = read_verdicts(db, with_images=True)
    assert len(rows) == 8                                    # rows are never pruned
    on_disk = sum(p.stat().st_size for p in (tmp_path / 'inspection_images').rglob('*.png'))
    assert on_disk <= limit
    oldest, newest = rows[0], rows[-1]
    assert {img.state for img in oldest.images} == {'pruned'}
    assert all(not img.path.exists() for img in oldest.images)
    assert {img.state for img in newest.images} == {'stored'}
    for row in rows:
        for img in row.images:
            assert img.path.is_file() == (img.state == 'stored')
    # Reopening recomputes the budget from the database.
    with InspectionLog(db, max_image_bytes=limit) as log:
        assert log.stats()['image_bytes'] == stats['image_bytes']


def test_reader_errors_are_one_line(tmp_path):
    with pytest.raises(LogError, match='no such inspection log'):
        read_verdicts(tmp_path / 'missing.db')
    junk = tmp_path / 'junk.db'
    junk.write_bytes(b'this is not sqlite' * 100)
    with pytest.raises(LogError, match='not an inspection log'):
        read_verdicts(junk)
    other = tmp_path / 'other.db'
    sqlite3.connect(other).execute('CREATE TABLE t (x)').connection.commit()
    with pytest.raises(LogError, match='not an inspection log'):
        read_verdicts(other)


def test_newer_schema_refused(tmp_path):
    db = tmp_path / 'inspection.db'
    InspectionLog(db).close()
    conn = sqlite3.connect(db)
    conn.execute(f'PRAGMA user_version = {SCHEMA_VERSION + 1}')
    conn.close()
    with pytest.raises(LogError, match='newer'):
        InspectionLog(db)
    with pytest.raises(LogError, match='newer'):
        read_verdicts(db)


_WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from bolt_inspection.core.log.inspection_log import InspectionLog, VerdictRecord
    db, limit = sys.argv[1], int(sys.argv[2])
    rng = np.random.default_rng(0)
    log = InspectionLog(db, max_image_bytes=limit)
    bolt = 0
    while True:
        for _ in range(5):
            bolt += 1
            ng = bolt % 2 == 0
            crops = {c: rng.integers(0, 256, (96, 48, 3), dtype=np.uint8) for c in range(4)}
            log.record(VerdictRecord(
                bolt_id=str(bolt), trigger_ns=bolt, code=2 if ng else 1,
                message='NG' if ng else 'OK', p_ng={c: 0.1 for c in range(4)}, threshold=0.5,
                latency_ms=100.0, model_id='kill', crops=crops if ng else {},
                mosaic=rng.integers(0, 256, (96, 96, 3), dtype=np.uint8) if ng else None))
            log.set_delivery(bolt - 1, 'delivered')
        log.flush()
        print(bolt, flush=True)   # everything up to here is committed
""")


@pytest.mark.slow
def test_sigkill_mid_write_leaves_a_consistent_database(tmp_path):
    db = tmp_path / 'inspection.db'
    limit = 400_000          # forces pruning while it runs, so a kill can land mid-prune too
    proc = subprocess.Popen([sys.executable, '-c', _WRITER, str(db), str(limit)],
                            stdout=subprocess.PIPE, text=True)
    committed = 0
    deadline = time.monotonic() + 60
    try:
        while committed < 200 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, 'writer exited early'
            committed = int(line)
        # Land the kill at an arbitrary point of the next batches (encode, fsync, commit, prune).
        time.sleep(random.uniform(0.0, 0.05))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert committed >= 200

    conn = sqlite3.connect(db)
    assert conn.execute('PRAGMA integrity_check').fetchone()[0] == 'ok'
    assert conn.execute('PRAGMA foreign_key_check').fetchall() == []
    conn.close()
    rows = read_verdicts(db, with_images=True)
    bolts = [int(r.bolt_id) for r in rows]
    assert bolts == list(range(1, len(bolts) + 1))     # no gaps, no duplicates
    assert len(bolts) >= committed                     # every acknowledged row survived
    for row in rows:
        assert row.ok == (row.message == 'OK')
        if row.ok:
            assert row.images == []
        else:
            assert len(row.images) == 5                # 4 crops + mosaic, never partial
        for img in row.images:
            # 'writing': the kill landed between the verdict's commit and its pictures'.
            assert img.state in ('stored', 'pruned', 'writing')
            if img.state == 'stored':
                assert img.path.is_file() and cv2.imread(str(img.path)) is not None
    assert any(img.state == 'pruned' for row in rows for img in row.images)
    # Deliveries committed with the rows: everything but the last few is delivered.
    assert all(r.plc_state == 'delivered' for r in rows[:committed - 1])

    # The log reopens, settles what the kill left behind and keeps writing.
    with InspectionLog(db, max_image_bytes=limit) as log:
        log.record(_ok(10_000))
    rows = read_verdicts(db, with_images=True)
    assert rows[-1].bolt_id == '10000'
    assert {img.state for row in rows for img in row.images} <= {'stored', 'pruned', 'failed'}
    referenced = {img.path for row in rows for img in row.images if img.state == 'stored'}
    for path in referenced:
        assert cv2.imread(str(path)) is not None          # a stored image is a whole file
    on_disk = set((tmp_path / 'inspection_images').rglob('*'))
    assert {p for p in on_disk if p.is_file()} == referenced


def test_unwritable_image_is_marked_failed_and_row_kept(tmp_path):
    db = tmp_path / 'inspection.db'
    with InspectionLog(db) as log:
        log.record(_ng(1, crops={0: np.zeros((4, 4, 7), np.uint8)}))   # 7 channels: no PNG
        log.record(_ng(2))
        log.flush()
        stats = log.stats()
    assert stats['errors'] == 1 and 'bolt 1' in stats['last_error']
    first, second = read_verdicts(db, with_images=True)
    assert {(i.kind, i.state) for i in first.images} == {('crop', 'failed'), ('mosaic', 'stored')}
    assert {i.state for i in second.images} == {'stored'}


def test_record_from_a_decoded_verdict_message(tmp_path):
    from bolt_inspection.core.line.verdict import Decision, Verdict, ViewResult, ViewStatus

    verdict = Verdict('42', Decision.FAILSAFE_NG, ('missing view cam1', 'cam3: undecodable'),
                      (ViewResult(0, ViewStatus.SCORED, 0.91), ViewResult(1, ViewStatus.MISSING),
                       ViewResult(2, ViewStatus.SCORED, 0.01),
                       ViewResult(3, ViewStatus.CORRUPT, detail='undecodable')),
                      stamp_ns=5, latency_ms=231.5, threshold=0.5, model_id='vgg16-abc')
    rec = VerdictRecord.from_verdict(verdict, trigger_ns=verdict.stamp_ns)
    assert (rec.bolt_id, rec.code, rec.trigger_ns) == ('42', 2, 5)
    assert rec.p_ng == {0: 0.91, 1: None, 2: 0.01, 3: None}
    assert (rec.latency_ms, rec.threshold, rec.model_id) == (231.5, 0.5, 'vgg16-abc')
    assert rec.reasons == ['missing view cam1', 'cam3: undecodable']
    assert rec.message == 'NG: missing view cam1; cam3: undecodable'
    ok = VerdictRecord.from_verdict(Verdict('43', Decision.OK), trigger_ns=6)
    assert ok.code == 1 and ok.reasons == [] and ok.latency_ms is None
    with InspectionLog(tmp_path / 'inspection.db') as log:
        log.record(rec)
    assert read_verdicts(tmp_path / 'inspection.db')[0].p_ng == {0: 0.91, 1: None, 2: 0.01,
                                                                 3: None}


def test_second_writer_is_refused(tmp_path):
    db = tmp_path / 'inspection.db'
    first = InspectionLog(db)
    with pytest.raises(LogError, match=r'already open for writing by pid \d+'):
        InspectionLog(db)
    first.close()
    InspectionLog(db).close()                     # released on close
    probe = subprocess.run(
        [sys.executable, '-c', 'import sys\nfrom bolt_inspection.core.log.inspection_log import '
         'InspectionLog\nInspectionLog(sys.argv[1])\n', str(db)], capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr    # and by a process that exits without close()
    InspectionLog(db).close()


def test_queued_verdicts_written_at_exit_without_close(tmp_path):
    db = tmp_path / 'inspection.db'
    script = ('import sys\nfrom bolt_inspection.core.log.inspection_log import InspectionLog, '
              'VerdictRecord\nlog = InspectionLog(sys.argv[1])\nfor i in range(500):\n'
              '    log.record(VerdictRecord(bolt_id=str(i), trigger_ns=i, code=1, '
              "message='OK'))\n")
    probe = subprocess.run([sys.executable, '-c', script, str(db)], capture_output=True,
                           text=True)
    assert probe.returncode == 0, probe.stderr
    assert len(read_verdicts(db)) == 500


def test_record_from_a_real_inspection_and_report_reasons(tmp_path):
    """The classifier's Inspection (fusion verdict) goes into the log and the report unchanged."""
    from bolt_inspection.core.line.fusion import fuse
    from bolt_inspection.core.line.inspector import Inspection
    from bolt_inspection.core.log.shift_report import shift_stats

    crop = _noise(1)
    ng_view = Inspection(verdict=fuse({0: 0.97, 1: 0.1, 2: 0.2, 3: 0.1}, 0.5, range(4)),
                         p_ng={0: 0.97, 1: 0.1, 2: 0.2, 3: 0.1}, crops={k: crop for k in range(4)})
    missing = Inspection(verdict=fuse({0: 0.1, 1: 0.1, 2: None, 3: 0.1}, 0.5, range(4)),
                         p_ng={0: 0.1, 1: 0.1, 2: None, 3: 0.1}, crops={0: crop})
    ok = Inspection(verdict=fuse({k: 0.1 for k in range(4)}, 0.5, range(4)),
                    p_ng={k: 0.1 for k in range(4)}, crops={0: crop})
    db = tmp_path / 'inspection.db'
    with InspectionLog(db) as log:
        for n, insp in enumerate((ng_view, missing, ok)):
            log.record(VerdictRecord.from_inspection(n, 10 * n, insp, threshold=0.5,
                                                     model_id='m', latency_ms=100.0,
                                                     mosaic=_noise(9, (32, 32, 3))))
    rows = read_verdicts(db, with_images=True)
    assert [r.message for r in rows] == [ng_view.verdict.message, 'NG: missing view cam2', 'OK']
    assert len(rows[0].images) == 5 and len(rows[1].images) == 2 and rows[2].images == []
    stats = shift_stats(rows, 0, 2**63 - 1)
    assert stats.ng == 2
    assert stats.ng_by_reason == {'cam0: NG': 1, 'missing view cam2': 1}


def test_the_log_deletes_only_files_it_wrote_and_recorded(tmp_path):
    """Issue 17, defect 2: the open-time sweep used to delete every *.png under the image
    folder that its database did not reference: a user's files, another log's evidence, and
    whatever a symlink led to."""
    shared = tmp_path / 'images'
    outside = tmp_path / 'elsewhere'
    outside.mkdir()
    victim = outside / 'victim.png'
    victim.write_bytes(b'not ours')
    shared.mkdir()
    (shared / 'link').symlink_to(outside, target_is_directory=True)
    user = shared / 'photo.png'
    user.write_bytes(b'a user photo')
    (shared / 'keep' / 'deep').mkdir(parents=True)
    (shared / 'keep' / 'deep' / 'scan.png').write_bytes(b'another photo')
    (shared / 'notes.tmp').write_bytes(b'a user temp file')
    with InspectionLog(tmp_path / 'b.db', image_dir=shared) as other:
        other.record(_ng(1))
    theirs = [img.path for img in read_verdicts(tmp_path / 'b.db', with_images=True,
                                                image_dir=shared)[0].images]
    assert len(theirs) == 4 and all(p.is_file() for p in theirs)

    foreign = [victim, user, shared / 'keep' / 'deep' / 'scan.png', shared / 'notes.tmp',
               *theirs]
    with InspectionLog(tmp_path / 'a.db', image_dir=shared, max_image_bytes=0) as log:
        log.record(_ng(2))             # written, then pruned at once (budget 0)
        log.flush()
    assert [p for p in foreign if not p.is_file()] == []
    ours = read_verdicts(tmp_path / 'a.db', with_images=True, image_dir=shared)[0].images
    assert {img.state for img in ours} == {'pruned'} and not any(i.path.exists() for i in ours)

    # A row whose path leaves the image folder (a tampered or foreign database) deletes
    # nothing outside it: not on open, not when pruning.
    conn = sqlite3.connect(tmp_path / 'a.db')
    conn.execute("UPDATE images SET path = '../elsewhere/victim.png', state = 'pruned'")
    conn.execute("UPDATE images SET path = 'link/victim.png', state = 'stored' WHERE id = 1")
    conn.commit()
    conn.close()
    with InspectionLog(tmp_path / 'a.db', image_dir=shared, max_image_bytes=0) as log:
        log.record(_ok(3))
        log.flush()
    assert [p for p in foreign if not p.is_file()] == []


def test_a_version_1_log_is_migrated_in_place(tmp_path):
    from bolt_inspection.core.log.inspection_log import _SCHEMA_V1

    db = tmp_path / 'inspection.db'
    conn = sqlite3.connect(db)
    conn.executescript(_SCHEMA_V1 + 'PRAGMA user_version = 1;')
    conn.execute("INSERT INTO verdicts (bolt_id, trigger_ns, created_ns, code, message) "
                 "VALUES ('1', 1, 1, 2, 'NG')")
    conn.execute("INSERT INTO images (verdict_id, kind, cam, path, bytes, state) "
                 "VALUES (1, 'mosaic', NULL, 'd/x.png', 10, 'pruned')")
    conn.commit()
    conn.close()
    with InspectionLog(db) as log:
        log.record(_ng(2))
    conn = connect_readonly(db)
    assert conn.execute('PRAGMA user_version').fetchone()[0] == SCHEMA_VERSION == 2
    conn.close()
    rows = read_verdicts(db, with_images=True)
    assert [r.bolt_id for r in rows] == ['1', '2']
    assert [(i.kind, i.state) for i in rows[0].images] == [('mosaic', 'pruned')]
    assert {i.state for i in rows[1].images} == {'stored'}


def test_the_mosaic_is_added_to_a_verdict_already_committed(tmp_path):
    db = tmp_path / 'inspection.db'
    with InspectionLog(db) as log:
        log.record(_ng(4, mosaic=None))
        log.record(_ok(5, crops={}, mosaic=None))
        log.flush()
        first = read_verdicts(db, with_images=True)
        assert [i.kind for i in first[0].images] == ['crop'] * 3
        log.add_images('4', 4_000_000, mosaic=_noise(4, (64, 64, 3)))
        log.add_images('5', 5_000_000, mosaic=_noise(5, (64, 64, 3)))     # OK: not kept
        log.add_images('6', 6_000_000, mosaic=_noise(6, (64, 64, 3)))     # no such verdict
        log.flush()
        stats = log.stats()
    ng, ok = read_verdicts(db, with_images=True)
    assert sorted(i.kind for i in ng.images) == ['crop', 'crop', 'crop', 'mosaic']
    assert all(i.state == 'stored' and i.path.is_file() for i in ng.images)
    assert ok.images == []
    assert stats['errors'] == 1 and 'bolt 6' in stats['last_error']
