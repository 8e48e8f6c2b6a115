"""What a run of the line comes to: the verdicts' summary, the live tally and the sorting
gate's scored tally, printed and written as JSON (``--summary-out``)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bolt_inspection.core.line.latency import percentile


@dataclass
class LineSummary:
    """What a user checks after a run."""

    triggered: int
    verdicts: int
    ok: int
    ng: int
    ng_with_reason: int
    mean_ms: float
    p99_ms: float
    max_ms: float
    agreement: float | None = None
    compared: int = 0
    missing_ids: list[str] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    skipped_ids: list[str] = field(default_factory=list)
    bad_verdicts: int = 0

    def lines(self) -> list[str]:
        out = [f'bolts triggered: {self.triggered}, verdicts: {self.verdicts} '
               f'(OK {self.ok}, NG {self.ng}, of which {self.ng_with_reason} NG with a reason)',
               f'trigger -> verdict latency: mean {self.mean_ms:.1f} ms, '
               f'p99 {self.p99_ms:.1f} ms, max {self.max_ms:.1f} ms']
        if self.skipped:
            shown = ', '.join(self.skipped_ids[:10]) + (', ...' if self.skipped > 10 or
                                                       not self.skipped_ids else '')
            out.append(f'skipped by the PLC bridge: {self.skipped} bolts ({shown}): no trigger, '
                       'no verdict; the PLC rejects them (fail-safe)')
        if self.bad_verdicts:
            out.append(f'{self.bad_verdicts} malformed verdict messages dropped (their bolts '
                       'get no verdict: the PLC rejects them)')
        if self.agreement is not None:
            out.append(f'agreement with ground truth: {self.agreement:.1%} '
                       f'of {self.compared} bolts')
        for reason, n in sorted(self.reasons.items(), key=lambda kv: -kv[1])[:5]:
            out.append(f'  {n} x {reason}')
        if self.missing_ids:
            out.append(f'NO verdict for {len(self.missing_ids)} bolts: '
                       + ', '.join(self.missing_ids[:10]))
        return out


def summarize(records, triggered_ids: list[str],
              truth: Mapping[str, str] | None = None, *, skipped_ids=(),
              skipped: int | None = None, bad_verdicts: int = 0) -> LineSummary:
    """Summarise verdict records (``bolt_id``, ``ok``, ``message``, ``latency_ms``).

    Args:
        records: The decoded verdicts (:class:`bolt_inspection.nodes.line_driver.VerdictRecord`).
        triggered_ids: The bolts triggered.
        truth: Bolt id -> 'OK'/'NG' when known.
        skipped_ids: Bolts the PLC bridge saw pass unseen (a counter jump or an outage).
        skipped: How many there were (default ``len(skipped_ids)``; the bridge names only its
            last 200).
        bad_verdicts: Malformed verdict messages the driver dropped.
    """
    first = {}
    for rec in records:
        first.setdefault(rec.bolt_id, rec)
    latencies = [r.latency_ms for r in first.values() if r.latency_ms is not None]
    ok = sum(1 for r in first.values() if r.ok)
    agreement, compared = None, 0
    if truth:
        pairs = [(('OK' if r.ok else 'NG'), truth[b]) for b, r in first.items() if b in truth]
        compared = len(pairs)
        agreement = sum(a == b for a, b in pairs) / compared if compared else None
    return LineSummary(
        triggered=len(triggered_ids), verdicts=len(first), ok=ok, ng=len(first) - ok,
        ng_with_reason=sum(1 for r in first.values() if r.message.startswith('NG:')),
        mean_ms=sum(latencies) / len(latencies) if latencies else math.nan,
        p99_ms=percentile(latencies, 99), max_ms=max(latencies) if latencies else math.nan,
        agreement=agreement, compared=compared,
        reasons=dict(Counter(r.message for r in first.values() if r.message.startswith('NG:'))),
        missing_ids=[b for b in triggered_ids if b not in first],
        skipped=len(skipped_ids) if skipped is None else int(skipped),
        skipped_ids=[str(b) for b in skipped_ids],
        bad_verdicts=int(bad_verdicts))


def verdict_tally(driver) -> str:
    """Verdicts seen so far, as the live tally's second half."""
    summary = summarize(driver.verdicts(), [])
    text = f'verdicts {summary.verdicts} (OK {summary.ok} NG {summary.ng})'
    if summary.verdicts and not math.isnan(summary.mean_ms):
        text += f' latency mean {summary.mean_ms:.0f} ms max {summary.max_ms:.0f} ms'
    return text


def gate_lines(sim: Mapping[str, Any]) -> list[str]:
    """The sorting gate's scored tally (a simulator summary) for the final summary."""
    out = [f'sorting gate: {sim["sorted"]} bolts sorted (passed {sim["passed"]}, rejected '
           f'{sim["rejected"]}); fail-safe rejects (no verdict at the gate) '
           f'{sim["failsafe_rejects"]}, late verdicts {sim["late_verdicts"]}, still on the '
           f'belt {sim["in_transit"]}']
    if sim.get('scored'):
        out.append(f'  vs truth: true pass {sim["true_pass"]}, false pass {sim["false_pass"]}, '
                   f'true reject {sim["true_reject"]}, false reject {sim["false_reject"]} -> '
                   f'sorting accuracy {sim["accuracy"]:.1%} of {sim["scored"]} bolts')
    lat = sim.get('verdict_latency_ms') or {}
    if lat.get('n'):
        out.append(f'  camera station -> verdict at the PLC: p50 {lat["p50"]} ms, p95 '
                   f'{lat["p95"]} ms, max {lat["max"]} ms (gate at '
                   f'{sim["config"]["gate_delay_s"] * 1000:.0f} ms)')
    if sim.get('failsafe_bolt_ids'):
        out.append('  fail-safe rejected bolts: '
                   + ', '.join(str(b) for b in sim['failsafe_bolt_ids'][:10]))
    if sim.get('late_verdict_bolt_ids'):
        out.append('  late verdicts for bolts: '
                   + ', '.join(str(b) for b in sim['late_verdict_bolt_ids'][:10]))
    return out


def write_summary(path: Path, *, mode: str, summary: LineSummary, sim: dict | None,
                  breakdown: dict | None) -> Path:
    """The final summary as JSON: the line's verdicts and the sorting gate's scored tally."""
    import dataclasses
    import json

    from bolt_inspection.core.files import atomic_output
    path = Path(path)

    def clean(value):  # JSON has no NaN
        return None if isinstance(value, float) and math.isnan(value) else value
    line = {k: clean(v) for k, v in dataclasses.asdict(summary).items()}
    text = json.dumps({'mode': mode, 'line': line, 'plc': sim,
                       'latency_breakdown_ms': breakdown}, indent=2) + '\n'
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding='utf-8')
    return path
