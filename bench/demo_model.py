"""The demo model's quality over training seeds: train it as ``make demo`` does, score it offline.

Each run trains the demo's VGG16 (``commands.demo.demo_config``: the default recipe, 15 + 8
epochs) on a rendered training set with one training seed, then sorts the demo line's bolts
(scenario seed 0, 640x480, defect rate 0.5) with the ``Inspector`` on the very frames the synthetic
cameras render, at the model's calibrated threshold, against the truth the PLC simulator scores
with. Training is not bit-reproducible across seeds or precisions, so one demo run is one draw:
this shows the spread.

    python bench/demo_model.py --data demo_out/data --out bench_out/demo_model --seeds 1 2
    python bench/demo_model.py --data DATA --out OUT --seeds 1 2 --cache-precision float32

``--cache-precision float32`` computes the stage-2 cache in float32 (what training did before
it used the stage-2 precision for the cache too). Writes ``demo_model.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import common

LINE_SEED, LINE_SIZE, DEFECT_RATE = 0, (640, 480), 0.5


def score(model_dir: Path, bolts: int) -> dict:
    """Sort bolts 1..``bolts`` of the demo line's scenario; count right, false pass / reject."""
    from bolt_inspection.core.line.inspector import Inspector
    from bolt_inspection.core.vision import synth

    inspector = Inspector.from_artifact(model_dir)
    right = false_pass = false_reject = 0
    for bolt in range(1, bolts + 1):
        spec = synth.bolt_spec(LINE_SEED, bolt, DEFECT_RATE)
        views = {cam: synth.render_view(spec, cam, LINE_SIZE).image for cam in range(4)}
        ok = inspector.inspect(views).verdict.ok
        if ok == (spec.label == 'OK'):
            right += 1
        elif ok:
            false_pass += 1
        else:
            false_reject += 1
    return {'bolts': bolts, 'right': right, 'false_pass': false_pass,
            'false_reject': false_reject, 'threshold': float(inspector.threshold)}


def train_one(data: Path, out: Path, seed: int, cache_precision: str | None) -> float:
    """Train the demo model with training seed ``seed``; seconds taken."""
    from bolt_inspection.commands import demo
    from bolt_inspection.core.study import train as training
    from bolt_inspection.core.vision.dataset import load_dataset

    args = argparse.Namespace(arch='vgg16', weights=None, epochs=None, input_size=None,
                              fine_tune_epochs=demo.DEMO_FINE_TUNE_EPOCHS, lr=None,
                              train_seed=seed, target_recall=demo.DEMO_TARGET_RECALL,
                              augment_copies=None)
    config = demo.demo_config(args)
    extract = training.extract_features
    if cache_precision is not None:
        def extract_in(*a, **kw):
            return extract(*a, **{**kw, 'precision': cache_precision})
        training.extract_features = extract_in
    try:
        start = time.perf_counter()
        training.train(load_dataset(data), config, out, progress=False)
        return time.perf_counter() - start
    finally:
        training.extract_features = extract


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--data', type=Path, required=True, help='a rendered training set')
    parser.add_argument('--out', type=Path, required=True)
    parser.add_argument('--seeds', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--bolts', type=int, default=60, help="the demo line's bolts")
    parser.add_argument('--cache-precision', choices=('float32', 'bfloat16'), default=None,
                        help="the stage-2 cache's precision (default: the recipe's)")
    args = parser.parse_args(argv)
    common.setup_env()
    rows = []
    for seed in args.seeds:
        model_dir = args.out / f'seed{seed}'
        common.log(f'demo model, training seed {seed}, data {args.data}')
        train_s = train_one(args.data, model_dir, seed, args.cache_precision)
        row = {'seed': seed, 'train_s': train_s, **score(model_dir, args.bolts)}
        common.log(f'seed {seed}: sorted {row["right"]}/{row["bolts"]} right, false pass '
                   f'{row["false_pass"]}, false reject {row["false_reject"]}, threshold '
                   f'{row["threshold"]:.3f}, trained in {train_s:.0f} s')
        rows.append(row)
    common.write_json(args.out / 'demo_model.json',
                      {'data': str(args.data), 'cache_precision': args.cache_precision or 'recipe',
                       'rows': rows, 'process': common.self_usage()})
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
