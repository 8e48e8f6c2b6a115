"""Shift statistics from the inspection log: counts, NG rate, reasons, latency, PLC delivery.

What a shift leader asks after a shift: how many bolts, how many NG and why, is the NG rate
drifting, did we stay inside the 0.9 s budget, and did every verdict reach the sorting gate.
Everything here works on :class:`~bolt_inspection.core.log.inspection_log.LoggedVerdict` lists, so
it is tested with constructed logs and used by ``bolt-inspection report`` (and the HMI).

Percentiles use the nearest-rank method (the smallest value with at least p% of the samples at
or below it): every reported latency is one that actually happened, and it can be checked by hand
from a sorted list.
"""

from __future__ import annotations

import csv
import json
import math
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from bolt_inspection.core.files import atomic_output
from bolt_inspection.core.log.inspection_log import LoggedVerdict

_RELATIVE = re.compile(r'^\s*-\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$')
_UNIT_S = {'s': 1, 'm': 60, 'h': 3600, 'd': 86400, 'w': 604800}
# Bin widths for the NG-rate chart, in minutes: the smallest that gives at most _MAX_BINS bins.
_BIN_MINUTES = (1, 2, 5, 10, 15, 30, 60, 120, 240, 480, 1440, 10080)
_MAX_BINS = 48
CLASSIFIER_REASON = 'classifier (p_ng >= threshold)'
# The log stores nanoseconds since 1970 in SQLite's signed 64-bit integers.
_MAX_NS = 2**63
_RANGE_TEXT = 'times must lie between 1970-01-01 and 2262-04-11 (UTC)'


def parse_time(text: str, now_ns: int | None = None) -> int:
    """Parse a report time bound into nanoseconds since the epoch.

    Accepts ``now``, a relative offset into the past (``-8h``, ``-30m``, ``-2d``, ``-1w``,
    ``-90s``) or an ISO 8601 date/time (``2026-11-29``, ``2026-11-29T06:00``,
    ``2026-11-29 06:00:00+01:00``); a time without a zone is local time.

    Raises:
        ValueError: One line saying what was expected, or that the time is out of range
            (before 1970 or past 2262: the log's nanosecond timestamps cannot hold it).
    """
    now_ns = time.time_ns() if now_ns is None else now_ns
    text = str(text).strip()
    if text == 'now':
        return now_ns
    match = _RELATIVE.match(text)
    try:
        if match:
            ns = now_ns - int(float(match.group(1)) * _UNIT_S[match.group(2)] * 1e9)
        else:
            when = datetime.fromisoformat(text)
            if when.tzinfo is None:
                when = when.astimezone()   # local time, as a shift leader reads the clock
            ns = int(round(when.timestamp() * 1e6)) * 1000
    except ValueError as exc:
        if match or 'out of range' in str(exc):
            raise ValueError(f'{text!r} is out of range: {_RANGE_TEXT}') from None
        raise ValueError(f'expected an ISO 8601 time (2026-11-29T06:00) or an offset such as '
                         f'-8h, -30m, -2d; got {text[:40]!r}') from None
    except (OverflowError, OSError):
        raise ValueError(f'{text!r} is out of range: {_RANGE_TEXT}') from None
    if not 0 <= ns < _MAX_NS:
        raise ValueError(f'{text[:40]!r} is out of range: {_RANGE_TEXT}')
    return ns


def format_time(ns: int | None) -> str:
    """Local time with offset, to the second (``2026-11-29T07:15:02+00:00``)."""
    if ns is None:
        return '-'
    return datetime.fromtimestamp(ns / 1e9).astimezone().isoformat(timespec='seconds')


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile: ``sorted(values)[ceil(p/100 * n) - 1]``; None when empty."""
    if not 0 < p <= 100:
        raise ValueError(f'percentile must be in (0, 100], got {p}')
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return float(ordered[rank - 1])


def reason_category(reason: str) -> str:
    """Group reasons that differ only in numbers: keep the camera, drop the values.

    ``'cam2: NG p=0.934'`` (fusion's classifier reason) -> ``'cam2: NG'``; other decimals become
    ``#`` (``'cam1: blur 0.31'`` -> ``'cam1: blur #'``).
    """
    text = re.sub(r'(?<![a-zA-Z])\d+\.\d+(e-?\d+)?', '#', reason.strip())
    text = re.sub(r'\s*\bp\s*=\s*#', '', text)
    return text or CLASSIFIER_REASON


def verdict_reasons(verdict: LoggedVerdict) -> list[str]:
    """Why a verdict is NG: its stored reasons, the message suffix, or the classifier."""
    if verdict.ok:
        return []
    if verdict.reasons:
        return [reason_category(r) for r in verdict.reasons]
    if verdict.message.startswith('NG:'):
        return [reason_category(verdict.message[3:])]
    return [CLASSIFIER_REASON]


@dataclass
class ShiftStats:
    """Statistics of the verdicts logged in ``[since_ns, until_ns)``."""

    since_ns: int
    until_ns: int
    bolts: int = 0
    ok: int = 0
    ng: int = 0
    ng_by_reason: dict[str, int] = field(default_factory=dict)
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_max_ms: float | None = None
    delivered: int = 0
    pending: int = 0
    undelivered: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    models: list[str] = field(default_factory=list)

    @property
    def ng_rate(self) -> float | None:
        """NG / bolts, None when no bolts."""
        return self.ng / self.bolts if self.bolts else None

    @property
    def throughput_per_h(self) -> float | None:
        """Bolts per hour between the first and the last verdict."""
        if self.bolts < 2 or self.first_ns is None or self.last_ns == self.first_ns:
            return None
        return (self.bolts - 1) / ((self.last_ns - self.first_ns) / 3.6e12)

    def as_dict(self) -> dict:
        out = dict(self.__dict__)
        out.update(ng_rate=self.ng_rate, throughput_per_h=self.throughput_per_h,
                   since=format_time(self.since_ns), until=format_time(self.until_ns))
        return out


def shift_stats(verdicts: Sequence[LoggedVerdict], since_ns: int, until_ns: int) -> ShiftStats:
    """Compute shift statistics from verdicts (those outside the window are ignored).

    A bolt inspected twice counts twice: each verdict was a sort decision at the gate.
    """
    rows = [v for v in verdicts if since_ns <= v.created_ns < until_ns]
    stats = ShiftStats(since_ns=since_ns, until_ns=until_ns, bolts=len(rows))
    if not rows:
        return stats
    stats.ok = sum(1 for v in rows if v.ok)
    stats.ng = stats.bolts - stats.ok
    reasons = Counter(r for v in rows for r in verdict_reasons(v))
    stats.ng_by_reason = dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
    latencies = [v.latency_ms for v in rows if v.latency_ms is not None]
    stats.latency_p50_ms = percentile(latencies, 50) if latencies else None
    stats.latency_p99_ms = percentile(latencies, 99) if latencies else None
    stats.latency_max_ms = max(latencies) if latencies else None
    states = Counter(v.plc_state for v in rows)
    stats.delivered, stats.pending, stats.undelivered = (
        states['delivered'], states['pending'], states['undelivered'])
    stats.first_ns = min(v.created_ns for v in rows)
    stats.last_ns = max(v.created_ns for v in rows)
    stats.models = sorted({v.model_id for v in rows if v.model_id})
    return stats


def _fmt(value: float | None, spec: str, unit: str = '') -> str:
    return '-' if value is None else f'{value:{spec}}{unit}'


def format_table(stats: ShiftStats) -> str:
    """The report as an aligned plain-text table."""
    lines = [('window', f'{format_time(stats.since_ns)} .. {format_time(stats.until_ns)}')]
    if not stats.bolts:
        lines.append(('bolts', '0 (no verdicts in this window)'))
    else:
        lines += [
            ('first / last verdict', f'{format_time(stats.first_ns)} / '
                                     f'{format_time(stats.last_ns)}'),
            ('bolts', str(stats.bolts)),
            ('OK', str(stats.ok)),
            ('NG', str(stats.ng)),
            ('NG rate', _fmt(None if stats.ng_rate is None else 100 * stats.ng_rate,
                             '.2f', ' %')),
            ('throughput', _fmt(stats.throughput_per_h, '.0f', ' bolts/h')),
            ('latency p50', _fmt(stats.latency_p50_ms, '.1f', ' ms')),
            ('latency p99', _fmt(stats.latency_p99_ms, '.1f', ' ms')),
            ('latency max', _fmt(stats.latency_max_ms, '.1f', ' ms')),
            ('PLC delivered', str(stats.delivered)),
            ('PLC undelivered', str(stats.undelivered)),
            ('PLC pending', str(stats.pending)),
            ('models', ', '.join(stats.models) or '-'),
        ]
    width = max(len(k) for k, _ in lines)
    out = [f'{k:<{width}}  {v}' for k, v in lines]
    if stats.ng_by_reason:
        out.append('')
        out.append('NG by reason')
        rwidth = max(len(r) for r in stats.ng_by_reason)
        for reason, count in stats.ng_by_reason.items():
            share = 100 * count / stats.ng if stats.ng else 0.0
            out.append(f'  {reason:<{rwidth}}  {count:>6}  {share:5.1f} %')
    return '\n'.join(out)


CSV_COLUMNS = ('created', 'created_ns', 'bolt_id', 'trigger_ns', 'verdict', 'message', 'reasons',
               'p_ng', 'max_p_ng', 'threshold', 'latency_ms', 'model_id', 'plc_state', 'images')


def write_csv(verdicts: Sequence[LoggedVerdict], out: str | Path) -> Path:
    """Write one row per verdict (traceability export for a spreadsheet).

    ``p_ng`` is a JSON object camera -> probability (null for a missing view); ``images`` lists
    the evidence files that still exist, separated by ``;``.
    """
    out = Path(out)
    with atomic_output(out) as tmp, open(tmp, 'w', newline='', encoding='utf-8') as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        for v in verdicts:
            probs = [p for p in v.p_ng.values() if p is not None]
            writer.writerow([
                format_time(v.created_ns), v.created_ns, v.bolt_id, v.trigger_ns,
                'OK' if v.ok else 'NG', v.message, '; '.join(v.reasons),
                json.dumps({str(k): p for k, p in sorted(v.p_ng.items())}),
                '' if not probs else f'{max(probs):.6g}',
                '' if v.threshold is None else f'{v.threshold:.6g}',
                '' if v.latency_ms is None else f'{v.latency_ms:.3f}',
                v.model_id, v.plc_state,
                ';'.join(str(i.path) for i in v.images if i.state == 'stored'),
            ])
    return out


def ng_rate_series(verdicts: Sequence[LoggedVerdict], since_ns: int, until_ns: int,
                   bin_minutes: int | None = None) -> tuple[list[int], list[int], list[int]]:
    """Bin verdicts over the window.

    Args:
        bin_minutes: Bin width; by default the smallest of 1, 2, 5, 10, 15, 30 min, 1, 2, 4, 8 h,
            1 d, 1 w that gives at most 48 bins.

    Returns:
        (bin start times ns, bolts per bin, NG per bin).
    """
    if until_ns <= since_ns:
        raise ValueError('the report window is empty (until <= since)')
    span_min = (until_ns - since_ns) / 60e9
    if bin_minutes is None:
        bin_minutes = next((m for m in _BIN_MINUTES if span_min / m <= _MAX_BINS),
                           _BIN_MINUTES[-1])
    width = int(bin_minutes * 60e9)
    n = max(1, math.ceil((until_ns - since_ns) / width))
    bolts, ng = [0] * n, [0] * n
    for v in verdicts:
        if since_ns <= v.created_ns < until_ns:
            i = min(n - 1, (v.created_ns - since_ns) // width)
            bolts[i] += 1
            ng[i] += 0 if v.ok else 1
    return [since_ns + i * width for i in range(n)], bolts, ng


def plot_ng_rate(verdicts: Sequence[LoggedVerdict], stats: ShiftStats, out: str | Path) -> Path:
    """Save a PNG: NG rate per time bin (line) over bolts per bin (bars)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    starts, bolts, ng = ng_rate_series(verdicts, stats.since_ns, stats.until_ns)
    width_ns = (starts[1] - starts[0]) if len(starts) > 1 else stats.until_ns - stats.since_ns
    tz = datetime.now().astimezone().tzinfo
    centres = [datetime.fromtimestamp((s + width_ns / 2) / 1e9, tz) for s in starts]
    rates = [100 * g / b if b else math.nan for g, b in zip(ng, bolts, strict=True)]

    fig, ax_bolts = plt.subplots(figsize=(10, 4.5), dpi=110)
    ax_rate = ax_bolts.twinx()
    # Rate on the left (what matters), volume as grey bars behind it on the right.
    ax_bolts.yaxis.tick_right()
    ax_bolts.yaxis.set_label_position('right')
    ax_rate.yaxis.tick_left()
    ax_rate.yaxis.set_label_position('left')
    ax_bolts.bar(centres, bolts, width=timedelta(microseconds=width_ns / 1e3 * 0.9),
                 color='0.85', label='bolts per bin')
    ax_bolts.set_ylabel('bolts per bin')
    ax_rate.plot(centres, rates, marker='o', color='tab:red', label='NG rate')
    if stats.ng_rate is not None:
        ax_rate.axhline(100 * stats.ng_rate, color='tab:red', linestyle='--', linewidth=1,
                        label=f'whole window {100 * stats.ng_rate:.1f} %')
    ax_rate.set_ylabel('NG rate (%)')
    finite = [r for r in rates if not math.isnan(r)]
    ax_rate.set_ylim(0, max(5.0, max(finite, default=0.0) * 1.15))
    ax_bolts.set_ylim(0, max(1, max(bolts)) * 1.15)
    ax_bolts.set_xlim(datetime.fromtimestamp(stats.since_ns / 1e9, tz),
                      datetime.fromtimestamp(stats.until_ns / 1e9, tz))
    ax_bolts.xaxis.set_major_formatter(mdates.DateFormatter('%m-%d %H:%M', tz=tz))
    fig.autofmt_xdate()
    minutes = round(width_ns / 60e9)
    ax_rate.set_title(f'NG rate per {minutes} min, {format_time(stats.since_ns)} .. '
                      f'{format_time(stats.until_ns)}  ({stats.bolts} bolts, {stats.ng} NG)',
                      fontsize=10)
    if not stats.bolts:
        ax_rate.text(0.5, 0.5, 'no verdicts in this window', transform=ax_rate.transAxes,
                     ha='center', va='center', fontsize=14, color='0.4')
    handles = ax_rate.get_legend_handles_labels()
    bars = ax_bolts.get_legend_handles_labels()
    ax_rate.legend(handles[0] + bars[0], handles[1] + bars[1], loc='upper left', fontsize=8)
    # Draw the rate above the bars.
    ax_rate.set_zorder(ax_bolts.get_zorder() + 1)
    ax_rate.patch.set_visible(False)
    ax_bolts.grid(axis='x', color='0.9')
    out = Path(out)
    fig.tight_layout()
    try:
        with atomic_output(out) as tmp:
            fig.savefig(tmp)
    finally:
        plt.close(fig)
    return out
