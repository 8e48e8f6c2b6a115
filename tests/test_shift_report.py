"""Shift report: numbers checked by hand against a constructed log, CSV, chart, bad inputs."""

from __future__ import annotations

import csv
import json
import re
from datetime import UTC, datetime

import cv2
import numpy as np
import pytest

from bolt_inspection.cli import main
from bolt_inspection.core.log.inspection_log import InspectionLog, VerdictRecord, read_verdicts
from bolt_inspection.core.log.shift_report import (
    CLASSIFIER_REASON,
    ng_rate_series,
    parse_time,
    percentile,
    reason_category,
    shift_stats,
)

START = '2026-11-29T06:00:00+00:00'
END = '2026-11-29T08:00:00+00:00'
T0 = int(datetime(2026, 11, 29, 6, tzinfo=UTC).timestamp()) * 10**9
MIN = 60 * 10**9


@pytest.fixture(scope='module')
def shift_db(tmp_path_factory):
    """100 bolts, one a minute from 06:00 UTC, plus rows just outside the window.

    Bolt i: latency i + 1 ms; NG when i % 10 == 0 (10 NG); of those, i % 20 == 0 has reason
    'missing view cam3' (5) and the rest are classifier NG (5); PLC undelivered when
    i % 25 == 0 (0, 25, 50, 75), pending for bolt 99, delivered otherwise.
    """
    db = tmp_path_factory.mktemp('shift') / 'inspection.db'
    crop = np.full((40, 20, 3), 128, np.uint8)
    with InspectionLog(db) as log:
        # Outside [06:00, 08:00): must not count (their latency would wreck p99).
        log.record(VerdictRecord(bolt_id='-1', trigger_ns=0, code=2, message='NG',
                                 latency_ms=9999.0, created_ns=T0 - 1))
        for i in range(100):
            ng = i % 10 == 0
            reasons = ['missing view cam3'] if i % 20 == 0 else []
            state = ('undelivered' if i % 25 == 0 else 'pending' if i == 99 else 'delivered')
            log.record(VerdictRecord(
                bolt_id=str(i), trigger_ns=T0 + i * MIN - 5_000_000, code=2 if ng else 1,
                message=('NG: missing view cam3' if reasons else 'NG') if ng else 'OK',
                reasons=reasons, p_ng={0: 0.9 if ng else 0.1, 1: 0.2, 2: 0.3, 3: None},
                threshold=0.5, latency_ms=float(i + 1), model_id='vgg16-a',
                plc_state=state, created_ns=T0 + i * MIN,
                crops={0: crop} if ng else {}))
        log.record(VerdictRecord(bolt_id='1000', trigger_ns=0, code=2, message='NG',
                                 latency_ms=9999.0, created_ns=T0 + 120 * MIN))
    return db


def test_percentile_nearest_rank_by_hand():
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7.0
    assert percentile([3, 1, 2], 50) == 2        # unsorted input
    assert percentile([], 50) is None


def test_parse_time_forms():
    now = T0
    assert parse_time('-8h', now) == now - 8 * 3600 * 10**9
    assert parse_time('-30m', now) == now - 30 * MIN
    assert parse_time('-1.5d', now) == now - 36 * 3600 * 10**9
    assert parse_time('now', now) == now
    assert parse_time(START) == T0
    assert parse_time('2026-11-29T07:00Z') == T0 + 60 * MIN
    local = datetime(2026, 11, 29, 6, 30).astimezone()
    assert parse_time('2026-11-29 06:30') == int(local.timestamp()) * 10**9
    for bad in ('yesterday', '8h', '-8x', '2026-13-01', ''):
        with pytest.raises(ValueError, match='ISO 8601'):
            parse_time(bad, now)


def test_reason_categories():
    assert reason_category('cam2: NG p=0.934') == 'cam2: NG'
    assert reason_category('cam2: p_ng 0.93 >= 0.5') == 'cam2: p_ng # >= #'
    assert reason_category('missing view cam3') == 'missing view cam3'
    assert reason_category('  ') == CLASSIFIER_REASON


def test_stats_match_hand_computation(shift_db):
    since, until = parse_time(START), parse_time(END)
    stats = shift_stats(read_verdicts(shift_db), since, until)
    assert (stats.bolts, stats.ok, stats.ng) == (100, 90, 10)
    assert stats.ng_rate == pytest.approx(0.10)
    assert stats.ng_by_reason == {'missing view cam3': 5, CLASSIFIER_REASON: 5}
    assert (stats.latency_p50_ms, stats.latency_p99_ms, stats.latency_max_ms) == (50, 99, 100)
    assert (stats.delivered, stats.undelivered, stats.pending) == (95, 4, 1)
    assert stats.first_ns == T0 and stats.last_ns == T0 + 99 * MIN
    assert stats.throughput_per_h == pytest.approx(60.0)
    assert stats.models == ['vgg16-a']


def test_ng_rate_series_bins():
    class V:
        def __init__(self, minute, ok):
            self.created_ns, self.ok = T0 + minute * MIN, ok

    verdicts = [V(m, m % 4 != 0) for m in range(120)]      # NG at minutes 0, 4, 8, ...
    starts, bolts, ng = ng_rate_series(verdicts, T0, T0 + 120 * MIN)
    assert len(starts) == 24 and starts[1] - starts[0] == 5 * MIN   # 2 h -> 5-min bins
    assert sum(bolts) == 120 and sum(ng) == 30
    assert bolts[0] == 5 and ng[0] == 2                     # minutes 0..4: NG at 0 and 4
    with pytest.raises(ValueError, match='empty'):
        ng_rate_series(verdicts, T0, T0)


def test_report_command_table_csv_plot(shift_db, tmp_path, capsys):
    out_csv, out_png = tmp_path / 'shift.csv', tmp_path / 'plots' / 'shift.png'
    code = main(['report', '--db', str(shift_db), '--since', START, '--until', END,
                 '--csv', str(out_csv), '--plot', str(out_png)])
    assert code == 0
    text = capsys.readouterr().out
    table = dict(re.split(r'\s{2,}', line, maxsplit=1) for line in text.splitlines()
                 if line and not line.startswith((' ', 'NG by', 'wrote')))
    assert (table['bolts'], table['OK'], table['NG']) == ('100', '90', '10')
    assert table['NG rate'] == '10.00 %'
    assert (table['latency p50'], table['latency p99']) == ('50.0 ms', '99.0 ms')
    assert (table['PLC undelivered'], table['PLC pending']) == ('4', '1')
    assert 'missing view cam3' in text and CLASSIFIER_REASON in text

    with open(out_csv, newline='') as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 100
    assert [r['bolt_id'] for r in rows[:3]] == ['0', '1', '2']
    first = rows[0]
    assert first['verdict'] == 'NG' and first['message'] == 'NG: missing view cam3'
    assert first['reasons'] == 'missing view cam3' and first['plc_state'] == 'undelivered'
    assert json.loads(first['p_ng']) == {'0': 0.9, '1': 0.2, '2': 0.3, '3': None}
    assert first['max_p_ng'] == '0.9' and first['latency_ms'] == '1.000'
    assert first['images'] and all(p.endswith('.png') for p in first['images'].split(';'))
    assert rows[1]['verdict'] == 'OK' and rows[1]['images'] == ''
    assert sum(r['verdict'] == 'NG' for r in rows) == 10

    image = cv2.imread(str(out_png))
    assert image is not None and image.shape[1] > 600
    # The chart is not blank: the NG-rate line is drawn in red.
    red = (image[:, :, 2] > 150) & (image[:, :, 1] < 90) & (image[:, :, 0] < 90)
    assert red.sum() > 500


def test_report_json_and_empty_window(shift_db, capsys):
    assert main(['report', '--db', str(shift_db), '--since', START, '--until', END,
                 '--json']) == 0
    data = json.loads(capsys.readouterr().out)
    assert data['bolts'] == 100 and data['ng_rate'] == pytest.approx(0.1)
    assert main(['report', '--db', str(shift_db), '--since', '2020-01-01',
                 '--until', '2020-01-02']) == 0
    assert 'no verdicts in this window' in capsys.readouterr().out
    # Offsets are written as the brief shows them, with a leading minus and a space.
    assert main(['report', '--db', str(shift_db), '--since', '-8h', '--until', '-1.5d']) == 2
    assert "--until '-1.5d' is not after --since '-8h'" in capsys.readouterr().err
    assert main(['report', '--db', str(shift_db), '--since', '-30m']) == 0


def test_report_bad_inputs_are_one_line_errors(shift_db, tmp_path, capsys):
    assert main(['report', '--db', str(tmp_path / 'nope.db')]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and 'no such inspection log' in err
    assert err.count('\n') == 1
    (tmp_path / 'junk.db').write_text('not a database')
    assert main(['report', '--db', str(tmp_path / 'junk.db')]) == 2
    assert 'not an inspection log' in capsys.readouterr().err
    assert main(['report', '--db', str(shift_db), '--since', END, '--until', START]) == 2
    assert 'is not after' in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(['report', '--db', str(shift_db), '--since', 'last tuesday'])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert 'argument --since: expected an ISO 8601 time' in err and 'last tuesday' in err
