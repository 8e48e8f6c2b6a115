"""Camera drift monitoring (issue 21): false alarms on clean bolts, detection delay per family.

The reference comes from ``--train-bolts`` rendered bolts of one seed (what training saw); the
monitor (core.vision.drift, the classifier's default bands) then watches

* ``--clean-bolts`` bolts of an unseen seed on all four cameras: every WARN/ERROR is a false
  alarm, and the largest |score| per statistic says how much margin the bands leave;
* each drift family at moderate severity (``apply_drift`` severity 1.0) on every camera with
  three random draws: after how many bolts the camera is flagged (target: within 10), and at
  which level.

    python bench/drift_monitor.py --out bench_out/drift_monitor      # ~4 min at 640x480

Writes ``drift_monitor.json``, ``drift_monitor.md`` and ``drift_monitor.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402

from bolt_inspection.core.vision import synth  # noqa: E402
from bolt_inspection.core.vision.drift import (  # noqa: E402
    DRIFT_FAMILIES,
    STATS,
    DriftBands,
    DriftMonitor,
    DriftReference,
    apply_drift,
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', type=Path, default=common.DEFAULT_OUT / 'drift_monitor')
    parser.add_argument('--size', default='640x480')
    parser.add_argument('--train-bolts', type=int, default=200)
    parser.add_argument('--clean-bolts', type=int, default=1000)
    parser.add_argument('--drift-bolts', type=int, default=12)
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.lower().split('x'))
    boxes = synth.default_roi_boxes(size)
    bands = DriftBands()
    t0 = time.perf_counter()
    common.log(f'reference from {args.train_bolts} bolts (seed 1) at {size[0]}x{size[1]}')
    reference = DriftReference.from_views(
        ((cam, v.image) for b in range(args.train_bolts)
         for cam, v in enumerate(synth.render_bolt(synth.bolt_spec(1, b), size))), boxes)
    monitor = DriftMonitor(reference, boxes, bands)
    max_score = dict.fromkeys(STATS, 0.0)
    alarms, checks = 0, 0
    first = {cam: [] for cam in range(4)}
    common.log(f'{args.clean_bolts} clean bolts (seed 11)')
    for b in range(args.clean_bolts):
        for cam, view in enumerate(synth.render_bolt(synth.bolt_spec(11, b), size)):
            state = monitor.add(cam, view.image)
            checks += 1
            alarms += state.level != 'ok'
            for stat, value in state.scores.items():
                max_score[stat] = max(max_score[stat], abs(value))
            if b < args.drift_bolts:
                first[cam].append(view.image)
    rows = []
    for family in DRIFT_FAMILIES:
        delays, levels, reasons = [], [], []
        for cam in range(4):
            for draw in range(3):
                m = DriftMonitor(reference, boxes, bands)
                flagged, level, reason = None, 'ok', ''
                for i, frame in enumerate(first[cam]):
                    state = m.add(cam, apply_drift(frame, family, 1.0,
                                                   np.random.default_rng(draw)))
                    if state.level != 'ok' and flagged is None:
                        flagged, reason = i + 1, state.reason
                    level = max(level, state.level, key=['ok', 'warn', 'error'].index)
                delays.append(flagged)
                levels.append(level)
                reasons.append(reason)
        rows.append({'family': family, 'delays': delays, 'levels': levels,
                     'flagged': sum(d is not None for d in delays), 'runs': len(delays),
                     'within_10': sum(d is not None and d <= 10 for d in delays),
                     'reason': next((r for r in reasons if r), '')})
        common.log(f'  {family}: flagged {rows[-1]["flagged"]}/{len(delays)}, delays {delays}')
    result = {'machine': common.machine(), 'size': size, 'bands': bands.__dict__,
              'train_bolts': args.train_bolts, 'clean_bolts': args.clean_bolts,
              'clean_checks': checks, 'false_alarms': alarms, 'max_clean_score': max_score,
              'families': rows, 'wall_s': time.perf_counter() - t0}
    args.out.mkdir(parents=True, exist_ok=True)
    common.write_json(args.out / 'drift_monitor.json', result)
    lines = [f'Reference: {args.train_bolts} bolts (seed 1), {size[0]}x{size[1]}; bands: window '
             f'{bands.window} bolts, WARN |z| >= {bands.warn_z:g} / shift >= '
             f'{bands.warn_shift:.1%}, ERROR |z| >= {bands.error_z:g} / shift >= '
             f'{bands.error_shift:.1%}.', '',
             f'Clean: {args.clean_bolts} bolts of an unseen seed x 4 cameras ({checks} checks): '
             f'**{alarms} false alarms**; largest |score| '
             + ', '.join(f'{k} {v:.3g}' for k, v in max_score.items()) + '.', '',
             '| family (severity 1.0) | flagged | within 10 bolts | bolts until flagged | '
             'worst level | first reason |', '|---|---:|---:|---|---|---|']
    for r in rows:
        lines.append(f'| {r["family"]} | {r["flagged"]}/{r["runs"]} | {r["within_10"]}/'
                     f'{r["runs"]} | {", ".join(str(d) if d else "-" for d in r["delays"])} | '
                     f'{max(r["levels"], key=["ok", "warn", "error"].index)} | {r["reason"]} |')
    text = '\n'.join(lines) + '\n'
    (args.out / 'drift_monitor.md').write_text(text, encoding='utf-8')
    _plot(result, args.out / 'drift_monitor.png')
    print(text)
    return 0


def _plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows = result['families']
    fig, ax = plt.subplots(figsize=(8, 4))
    names = [r['family'] for r in rows]
    ax.bar(names, [100 * r['within_10'] / r['runs'] for r in rows], color='tab:blue')
    ax.set_ylabel('cameras flagged within 10 bolts (%)')
    ax.set_ylim(0, 105)
    ax.set_title(f'Drift monitor: moderate drift per family; {result["false_alarms"]} false '
                 f'alarms on {result["clean_bolts"]} clean bolts')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == '__main__':
    sys.exit(main())
