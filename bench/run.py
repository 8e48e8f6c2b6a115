"""``make bench``: latency, closed loop, training cost and scaling, measured side by side.

Modes:

* default (``make bench``): a few minutes; few bolts, short rate steps, ``reproduce`` skipped;
* ``--full``: >= 200 bolts per latency run, 45 s rate steps and a 2-minute run at the best rate,
  the stage-1 timing on 128 images, ``bolt-inspection reproduce --quick`` end to end;
* ``--smoke``: a tiny model on 320x240 frames, seconds per section (the test's configuration).

Sections (``--only``): ``latency`` (issue items 1 and 4), ``loop`` (2 and 3), ``loop_processes``
(the same closed loop with one process per node, as ``ros2 launch`` runs the line), ``training``
(5), ``scaling`` (6). Latency, training and scaling run in this process; the closed loop runs the
PLC simulator and the line in processes of their own (``bench/loop.py``), so their CPU and peak
RSS are per process. ``loop`` and ``loop_processes`` run the same rates one after the other.

The synthetic cameras prefetch the next bolt (the camera node's ``prefetch`` parameter, on by
default). The latency section also runs the first model again with prefetch off (fewer bolts,
``<kind>_no_prefetch``), so the table shows the camera stage with and without it;
``--no-prefetch`` turns it off for the whole run (latency and loop sections).

Writes ``bench_out/bench.json`` (every number), ``bench_out/*.png`` and
``bench_out/RESULTS.md`` (the table printed at the end; ``--results FILE`` writes it there too).
Every process: ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``, a private ``ROS_DOMAIN_ID``
(215-232, or ``BENCH_ROS_DOMAIN_ID``), Modbus on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402
import report  # noqa: E402

SECTIONS = ('latency', 'loop', 'loop_processes', 'training', 'scaling')

MODES = {
    'quick': {
        'latency': {'demo': 20, 'vgg16_224': 10}, 'latency_no_prefetch': {'demo': 10},
        'warm': 2, 'frame_size': common.FRAME_SIZE,
        'loop_model': 'demo', 'loop_fractions': (0.5, 0.75, 1.0), 'loop_step_s': 25.0,
        'loop_capacity_gate_s': 4.0, 'loop_stop_on_fail': False,
        'loop_confirm_s': 0.0, 'train_arch': 'vgg16', 'train_input': common.DEMO_INPUT,
        'train_images': 32, 'reproduce': False, 'scaling_rounds': 3, 'scaling_arch': 'vgg16',
    },
    'full': {
        'latency': {'demo': 200, 'vgg16_224': 200}, 'latency_no_prefetch': {'demo': 50},
        'warm': 3,
        'frame_size': common.FRAME_SIZE, 'loop_model': 'demo',
        'loop_fractions': (0.4, 0.55, 0.7, 0.85, 1.0, 1.15), 'loop_step_s': 45.0,
        'loop_capacity_gate_s': 4.0, 'loop_stop_on_fail': False,
        'loop_confirm_s': 120.0, 'train_arch': 'vgg16', 'train_input': common.DEMO_INPUT,
        'train_images': 128, 'reproduce': True, 'scaling_rounds': 15, 'scaling_arch': 'vgg16',
    },
    'smoke': {
        'latency': {'tiny': 4}, 'latency_no_prefetch': {'tiny': 3}, 'warm': 1,
        'frame_size': (320, 240), 'loop_model': 'tiny',
        'loop_rates': (90.0,), 'loop_step_s': 6.0, 'loop_confirm_s': 0.0,
        'train_arch': 'tiny', 'train_input': (32, 64), 'train_images': 32, 'reproduce': False,
        'scaling_rounds': 1, 'scaling_arch': 'tiny',
    },
}


def artifact_dir(out: Path, kind: str, frame_size) -> Path:
    return out / 'models' / f'{kind}_{frame_size[0]}x{frame_size[1]}'


def section_latency(cfg: dict, out: Path) -> dict:
    import latency
    prefetch = cfg.get('prefetch', True)
    # The runs of the table, then (prefetch on only) the same models with the cameras'
    # prefetch off: the camera stage with and without it, on the same machine and day.
    runs = [(kind, kind, bolts, prefetch) for kind, bolts in cfg['latency'].items()]
    if prefetch:
        runs += [(f'{kind}_no_prefetch', kind, bolts, False)
                 for kind, bolts in (cfg.get('latency_no_prefetch') or {}).items()]
    results = {}
    for key, kind, bolts, on in runs:
        arch, input_size = common.MODEL_KINDS[kind]
        common.log(f'latency: {kind} ({arch} {input_size[0]}x{input_size[1]}), {bolts} bolts '
                   f'+ {cfg["warm"]} warm-up, camera prefetch {"on" if on else "off"}')
        try:
            artifact = common.make_artifact(artifact_dir(out, kind, cfg['frame_size']), arch,
                                            input_size, cfg['frame_size'])
            r = latency.run(artifact, bolts=bolts, warm=cfg['warm'],
                            frame_size=cfg['frame_size'], label=kind, prefetch=on)
            r['arch'] = arch
            lp, raw = r['latency_published_ms'], r['raw_gradcam_ms']
            grab = r['stages_ms'].get('camera_grab') or {}
            common.log(f'  line p50 {lp["p50"]:.0f} / p99 {lp["p99"]:.0f} ms, raw Grad-CAM p50 '
                       f'{raw["p50"]:.0f} ms, ratio {r["overhead_ratio_p50"]:.2f}, camera grab '
                       f'p50 {grab.get("p50") or 0:.1f} ms')
        except Exception as exc:  # noqa: BLE001 - one failed run must not lose the others
            traceback.print_exc()
            r = {'label': kind, 'prefetch': on, 'error': f'{type(exc).__name__}: {exc}'}
        results[key] = r
    return results


def section_loop(cfg: dict, out: Path, latency: dict | None, shape: str = 'composed',
                 rates: list[float] | None = None) -> dict:
    kind = cfg['loop_model']
    arch, input_size = common.MODEL_KINDS[kind]
    # Built here (TensorFlow is loaded in this process anyway); loop.py finds it by path.
    common.make_artifact(artifact_dir(out, kind, cfg['frame_size']), arch, input_size,
                         cfg['frame_size'])
    rates = rates or cfg.get('loop_rates')
    if not rates:
        # Around what one worker can do: the line's inference worker per bolt in the latency
        # run (the mosaic is on the classifier's image thread, no longer on the worker; the
        # worker time includes competing with the cameras' prefetch renders, as at capacity).
        base = (latency or {}).get(kind) or {}
        worker_ms = (base.get('stages_ms', {}).get('worker_busy') or {}).get('p50')
        if not worker_ms and base.get('raw_inspect_ms', {}).get('p50'):
            worker_ms = base['raw_inspect_ms']['p50']
        estimate = 60000.0 / worker_ms if worker_ms else 30.0
        rates = [round(f * estimate, 1) for f in cfg['loop_fractions']]
        cfg = {**cfg, 'loop_latency_rate': round(0.3 * estimate, 1)}
    common.log(f'loop ({shape}): {kind}, rates {rates} bolts/min, {cfg["loop_step_s"]:.0f} s '
               'each' + (f', then {cfg["loop_confirm_s"]:.0f} s at the best'
                         if cfg['loop_confirm_s'] else ''))
    json_path = out / ('loop.json' if shape == 'composed' else f'loop_{shape}.json')
    cmd = [sys.executable, str(HERE / 'loop.py'), 'ladder', '--model-kind', kind,
           '--shape', shape,
           '--rates', *[str(r) for r in rates], '--step-s', str(cfg['loop_step_s']),
           '--confirm-s', str(cfg['loop_confirm_s']),
           '--capacity-gate-s', str(cfg.get('loop_capacity_gate_s', 4.0)), '--frame-size',
           str(cfg['frame_size'][0]), str(cfg['frame_size'][1]), '--out', str(json_path)]
    if not cfg.get('loop_stop_on_fail', True):
        cmd.append('--keep-going')
    if cfg.get('loop_latency_rate'):
        cmd += ['--latency-rate', str(cfg['loop_latency_rate'])]
    if not cfg.get('prefetch', True):
        cmd.append('--no-prefetch')
    proc = subprocess.run(cmd, env=os.environ.copy(), check=False)
    if proc.returncode != 0 or not json_path.is_file():
        return {'error': f'loop.py --shape {shape} exited {proc.returncode} (see the logs '
                         f'in {out})'}
    result = json.loads(json_path.read_text())
    result['rates_requested'] = rates
    return result


def section_training(cfg: dict, out: Path) -> dict:
    import training
    common.log(f'training: stage-1 epoch cached vs recomputed ({cfg["train_arch"]} '
               f'{cfg["train_input"]}, {cfg["train_images"]} images)')
    result = {'stage1': training.stage1_timing(cfg['train_images'], cfg['train_input'],
                                               cfg['train_arch'])}
    s = result['stage1']
    common.log(f'  cached {s["cached_epoch_s"]:.3f} s vs recomputed {s["recompute_epoch_s"]:.3f}'
               f' s -> {s["speedup"]:.1f}x')
    if cfg['train_arch'] == 'vgg16':
        common.log('training: stage-2 epoch on cached outputs of the frozen blocks vs recomputed')
        s = result['stage2'] = training.stage2_timing(cfg['train_images'], cfg['train_input'])
        common.log(f'  cached {s["cached_epoch_s"]:.3f} s ({s["precision"]}) vs recomputed '
                   f'{s["recompute_epoch_s"]:.3f} s -> {s["speedup"]:.1f}x')
    if cfg['reproduce']:
        common.log('training: bolt-inspection reproduce --quick, end to end')
        result['reproduce_quick'] = training.reproduce_quick(out / 'reproduce_quick')
        common.log(f'  {result["reproduce_quick"]["wall_s"]:.0f} s wall')
    return result


def section_scaling(cfg: dict, out: Path) -> dict:
    import scaling
    frame = cfg['frame_size']
    return scaling.run(cfg['scaling_rounds'], frame_size=frame, arch=cfg['scaling_arch'])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--full', action='store_true', help='the long runs (about an hour)')
    mode.add_argument('--smoke', action='store_true', help='tiny model, under a minute')
    parser.add_argument('--only', default=','.join(SECTIONS),
                        help=f'comma-separated sections ({",".join(SECTIONS)})')
    parser.add_argument('--reproduce', action='store_true',
                        help='also time `bolt-inspection reproduce --quick` (on in --full)')
    parser.add_argument('--bolts', type=int, help='bolts per latency run (overrides the mode)')
    parser.add_argument('--rates', type=float, nargs='+',
                        help='closed-loop rates in bolts/min (default: from the latency run); '
                             'the lowest also runs first at the configured gate')
    parser.add_argument('--no-prefetch', action='store_true',
                        help="synthetic cameras render on the trigger (the cameras' prefetch "
                             'parameter off) in the latency and loop sections')
    parser.add_argument('--out', type=Path, default=common.DEFAULT_OUT)
    parser.add_argument('--results', type=Path, help='also write the markdown table here')
    parser.add_argument('--no-plots', action='store_true')
    parser.add_argument('--from-json', type=Path,
                        help='only redraw the plots and the table of an earlier bench.json')
    args = parser.parse_args(argv)
    if args.from_json:
        result = json.loads(args.from_json.read_text())
        out = args.from_json.resolve().parent
        result['plots'] = [] if args.no_plots else draw_plots(result, out)
        return write_report(result, out, args.results)
    name = 'full' if args.full else 'smoke' if args.smoke else 'quick'
    cfg = dict(MODES[name])
    if args.reproduce:
        cfg['reproduce'] = True
    if args.bolts:
        cfg['latency'] = dict.fromkeys(cfg['latency'], args.bolts)
    if args.no_prefetch:
        cfg['prefetch'] = False
    if args.rates:
        rates = sorted(args.rates)
        cfg.update(loop_rates=tuple(rates), loop_latency_rate=rates[0])
    only = [s.strip() for s in args.only.split(',') if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f'unknown section(s) {", ".join(sorted(unknown))}')
    domain = common.setup_env()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    command = 'python bench/run.py' + (' ' + ' '.join(shlex.quote(a) for a in (
        argv if argv is not None else sys.argv[1:])) if (argv or sys.argv[1:]) else '')
    started = time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())
    t0 = time.perf_counter()
    machine = common.machine()
    common.log(f'{name} run: sections {only}, ROS_DOMAIN_ID {domain}, out {out}')
    result = {'mode': name, 'command': command, 'started': started, 'machine': machine,
              'config': {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
              'sections': {}, 'errors': []}
    runners = {
        'latency': lambda: section_latency(cfg, out),
        'loop': lambda: section_loop(cfg, out, result['sections'].get('latency')),
        # The same rates as the composed run, so the two shapes compare side by side.
        'loop_processes': lambda: section_loop(
            cfg, out, result['sections'].get('latency'), shape='processes',
            rates=(result['sections'].get('loop') or {}).get('rates_requested')),
        'training': lambda: section_training(cfg, out),
        'scaling': lambda: section_scaling(cfg, out),
    }
    for section in SECTIONS:
        if section not in only:
            continue
        try:
            result['sections'][section] = runners[section]()
        except Exception as exc:  # noqa: BLE001 - report what failed, keep the other sections
            traceback.print_exc()
            result['sections'][section] = {'error': f'{type(exc).__name__}: {exc}'}
        if 'error' in result['sections'][section]:
            result['errors'].append(f'{section}: {result["sections"][section]["error"]}')
    # Machine versions once TensorFlow is imported (the sections imported it).
    result['machine'] = {**common.machine(), 'load_avg': machine['load_avg']}
    result['load_avg_end'] = [round(x, 2) for x in os.getloadavg()]
    result['wall_s'] = time.perf_counter() - t0
    result['process'] = common.self_usage(result['wall_s'])
    result['plots'] = [] if args.no_plots else draw_plots(result, out)
    common.write_json(out / 'bench.json', result)
    return write_report(result, out, args.results)


def draw_plots(result: dict, out: Path) -> list[str]:
    plots = []
    s = result['sections']
    for fn, data, file in ((report.plot_latency, s.get('latency'), 'latency.png'),
                           (report.plot_loop, s.get('loop'), 'loop.png'),
                           (report.plot_loop, s.get('loop_processes'), 'loop_processes.png'),
                           (report.plot_training, s.get('training'), 'training.png'),
                           (report.plot_scaling, s.get('scaling'), 'scaling.png')):
        if data and 'error' not in data:
            try:
                path = fn(data, out / file)
            except Exception as exc:  # noqa: BLE001 - a plot must not lose the numbers
                result['errors'].append(f'plot {file}: {exc}')
                continue
            if path:
                plots.append(str(Path(path).relative_to(out.parent))
                             if out.parent in Path(path).parents else str(path))
    return plots


def write_report(result: dict, out: Path, results: Path | None) -> int:
    text = report.markdown(result)
    (out / 'RESULTS.md').write_text(text + '\n', encoding='utf-8')
    if results:
        results.write_text(text + '\n', encoding='utf-8')
    print(text)
    common.log(f'{out / "bench.json"}, {out / "RESULTS.md"} ({result["wall_s"] / 60:.1f} min)')
    return 1 if result['errors'] else 0


if __name__ == '__main__':
    raise SystemExit(main())
