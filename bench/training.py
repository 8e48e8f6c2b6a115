"""Training cost: stage-1 and stage-2 epochs on cached frozen features vs recomputing them, the
cache itself in float32 and bfloat16, and the wall time of ``bolt-inspection reproduce --quick``.

The epoch comparison calls the product's own helper, ``core.study.train.measure_epoch_times`` (a
clone of the model; the second of two epochs is timed so tracing is excluded), on VGG16 in the
default recipe (``core.study.train.RECIPE``: input, head, fine-tuned blocks, stage-2 precision)
with real synthetic ROI crops. The variants run back to back in this process, so the speed-ups are
ratios under the same machine load.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import time
from pathlib import Path

import common


def _crops(images: int, input_size):
    """``images`` real synthetic ROI crops at ``input_size`` and their labels."""
    import numpy as np

    from bolt_inspection.core.vision import synth
    from bolt_inspection.core.vision.roi import prepare_batch

    size = (640, 480)   # crops are resized to the input anyway; rendering is not what we time
    boxes = synth.default_roi_boxes(size)
    frames, cams, labels = [], [], []
    bolt = 0
    while len(frames) < images:
        spec = synth.bolt_spec(0, bolt)
        for cam, view in enumerate(synth.render_bolt(spec, size)):
            frames.append(view.image)
            cams.append(cam)
            labels.append(int(view.defect_visible))
        bolt += 1
    frames, cams, labels = frames[:images], cams[:images], labels[:images]
    x = prepare_batch(frames, [boxes[c] for c in cams], tuple(input_size))
    return x, np.asarray(labels, np.int64)


def stage1_timing(images: int, input_size=common.DEMO_INPUT, arch: str = 'vgg16',
                  repeats: int = 1, stage: str = 'stage1', blocks: int | None = None) -> dict:
    """One ``stage`` epoch cached vs recomputed (``repeats`` times; the least favourable run
    is reported). ``blocks``: VGG16 blocks fine-tuned in stage 2 (default: the recipe's; 1 is
    the paper's block 5 on cached block-4 outputs)."""
    from bolt_inspection.core.model.network import build_tiny, build_vgg16
    from bolt_inspection.core.study.train import RECIPE, measure_epoch_times, stage2_precision

    x, y = _crops(images, input_size)
    if arch == 'vgg16':
        # Timing does not depend on the weights: random init, the recipe's head.
        model = build_vgg16(tuple(input_size), weights='none', seed=0, head=RECIPE['head'],
                            dense_units=RECIPE['dense_units'])
        blocks = blocks or RECIPE['fine_tune_blocks']
    else:
        model = build_tiny(tuple(input_size), filters=(8, 16, 32), seed=0)
        blocks = 1
    precision = stage2_precision(RECIPE['stage2_precision']) if stage == 'stage2' \
        else 'float32'
    runs = [measure_epoch_times(model, x, y, stage, batch_size=32, max_images=images,
                                blocks=blocks, precision=precision)
            for _ in range(repeats)]
    best = min(runs, key=lambda r: r['speedup'])   # the least favourable run is reported
    return {'arch': arch, 'input_size': list(input_size), 'images': images,
            'runs': runs, **best}


def stage2_timing(images: int, input_size=common.DEMO_INPUT, arch: str = 'vgg16',
                  repeats: int = 1, blocks: int | None = None) -> dict:
    """One stage-2 epoch on cached outputs of the frozen blocks vs recomputing them."""
    return stage1_timing(images, input_size, arch, repeats, stage='stage2', blocks=blocks)


def cache_timing(images: int, input_size=common.DEMO_INPUT, repeats: int = 2) -> dict:
    """Build the stage-2 cache (VGG16 up to the recipe's cut) over the same crops in float32 and
    in bfloat16, alternately ``repeats`` times after one untimed pass each: ms per view (best)."""
    from bolt_inspection.core.model.network import build_vgg16
    from bolt_inspection.core.study.train import (
        RECIPE,
        extract_features,
        split_at,
        stage2_cut_layer,
    )

    x, _ = _crops(images, input_size)
    model = build_vgg16(tuple(input_size), weights='none', seed=0, head=RECIPE['head'],
                        dense_units=RECIPE['dense_units'])
    cut = stage2_cut_layer(model, RECIPE['fine_tune_blocks'])
    front, _ = split_at(model, cut)
    times: dict[str, list[float]] = {'float32': [], 'bfloat16': []}
    for precision in times:
        extract_features(front, x[:32], precision=precision)     # tracing, oneDNN set-up
    for _ in range(repeats):
        for precision, runs in times.items():
            start = time.perf_counter()
            extract_features(front, x, precision=precision)
            runs.append((time.perf_counter() - start) * 1000.0 / len(x))
    best = {p: min(runs) for p, runs in times.items()}
    return {'layer': cut.name, 'input_size': list(input_size), 'images': images,
            'ms_per_view': best, 'runs_ms_per_view': times,
            'speedup': best['float32'] / best['bfloat16']}


def reproduce_quick(out_dir: Path) -> dict:
    """Run ``bolt-inspection reproduce --quick`` and time it (wall, CPU, peak RSS)."""
    exe = Path(common.ROOT / '.venv' / 'bin' / 'bolt-inspection')
    cmd = [str(exe) if exe.exists() else 'bolt-inspection', 'reproduce', '--quick', '--out',
           str(out_dir), '--no-progress']
    shutil.rmtree(out_dir, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    tail = (proc.stdout.strip().splitlines() or [''])[-3:]
    return {'command': ' '.join(cmd[1:]).replace(str(common.ROOT) + '/', ''),
            'returncode': proc.returncode, 'wall_s': wall, 'cpu_s': cpu,
            'cpu_cores_avg': cpu / wall if wall else None,
            'peak_rss_mb': after.ru_maxrss / 1024.0, 'stdout_tail': tail,
            'stderr_tail': proc.stderr.strip().splitlines()[-3:] if proc.returncode else []}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--images', type=int, default=64)
    parser.add_argument('--arch', choices=('vgg16', 'tiny'), default='vgg16')
    parser.add_argument('--input-size', type=int, nargs=2, default=list(common.DEMO_INPUT))
    parser.add_argument('--reproduce', action='store_true',
                        help='also time `bolt-inspection reproduce --quick`')
    parser.add_argument('--blocks', type=int, choices=(1, 2, 3, 4), default=None,
                        help="VGG16 blocks fine-tuned in stage 2 (default: the recipe's; 1 = the "
                             "paper's block 5 on cached block-4 outputs)")
    parser.add_argument('--out', type=Path, required=True)
    args = parser.parse_args(argv)
    common.setup_env()
    common.log(f'training: stage-1 epoch cached vs recomputed, {args.arch} '
               f'{tuple(args.input_size)}, {args.images} images')
    result = {'stage1': stage1_timing(args.images, tuple(args.input_size), args.arch),
              'stage2': stage2_timing(args.images, tuple(args.input_size), args.arch,
                                      blocks=args.blocks)}
    for stage in ('stage1', 'stage2'):
        s = result[stage]
        common.log(f'{stage} epoch: cached {s["cached_epoch_s"]:.3f} s, recomputed '
                   f'{s["recompute_epoch_s"]:.3f} s -> {s["speedup"]:.1f}x')
    if args.arch == 'vgg16':
        c = result['cache'] = cache_timing(args.images, tuple(args.input_size))
        common.log(f'cache ({c["layer"]} outputs): float32 {c["ms_per_view"]["float32"]:.1f} '
                   f'ms a view, bfloat16 {c["ms_per_view"]["bfloat16"]:.1f} ms -> '
                   f'{c["speedup"]:.1f}x')
    if args.reproduce:
        common.log('training: bolt-inspection reproduce --quick (end to end)')
        result['reproduce_quick'] = reproduce_quick(args.out.parent / 'reproduce_quick')
        common.log(f'reproduce --quick: {result["reproduce_quick"]["wall_s"]:.0f} s wall, '
                   f'rc {result["reproduce_quick"]["returncode"]}')
    result['process'] = common.self_usage()
    common.write_json(args.out, result)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
