"""Recipe search for the pretrained VGG16: many training recipes on the same cached features.

Each recipe is the product's own two-stage training (``core.study.train.fit`` on cached block-4
outputs, ``save_trained``'s threshold calibration) from ``--weights``; what changes between
recipes is the head, epochs, learning rates, augmentation copies and training-set size. The
expensive part, blocks 1-4 over every crop, runs once per (data, input size, copies) and is
kept on disk, so a recipe costs stage 1 + stage 2 + a test pass through block 5 only.

The test evaluation runs on the cached block-4 outputs of the held-out bolts: the tail of the
network (block 5 + head) gives the probabilities and Grad-CAM of ``block5_conv3`` (upsampled
to the input as :class:`~bolt_inspection.core.model.gradcam.GradCAM` does), and
``core.study.evaluate``'s ``LocalisationTally`` / ``compute_metrics`` score them, i.e. the numbers
of ``bolt-inspection evaluate`` without reading the images again. ``bench/classifier.py --model``
re-evaluates a saved recipe the product's way.

    python bench/recipe.py --train DATA/train --test DATA/test --out bench_out/recipe \\
        --input 128x256 --recipe 'name=gap,head=gap,dense_units=0' --recipe 'name=flat'

Every run appends one JSON line to ``OUT/runs.jsonl`` and prints a table row.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402

BASE = dict(arch='vgg16', weights='hed', head='flatten', dense_units=256, epochs1=15,
            epochs2=8, lr1=1e-3, lr2=1e-4, patience=0, measure_timings=False)


def parse_recipe(text: str) -> tuple[str, dict]:
    """``'name=x,head=gap,epochs2=10'`` -> ``('x', {...})`` typed like ``TrainConfig``."""
    from bolt_inspection.core.study.train import TrainConfig

    types = {f.name: f.type for f in fields(TrainConfig)}
    out: dict = {}
    name = None
    extra = {}
    for part in filter(None, (p.strip() for p in text.split(','))):
        key, _, value = part.partition('=')
        if key == 'name':
            name = value
        elif key in ('train_bolts', 'bolts'):
            extra['train_bolts'] = int(value)
        elif key not in types:
            raise SystemExit(f'unknown recipe key {key!r}')
        elif 'bool' in str(types[key]):
            out[key] = value.lower() in ('1', 'true', 'yes')
        elif 'int' in str(types[key]) and 'tuple' not in str(types[key]):
            out[key] = int(value)
        elif 'float' in str(types[key]):
            out[key] = float(value)
        else:
            out[key] = value
    return name or text, {**out, **extra}


def subset(dataset, bolts: int | None):
    """The dataset restricted to its first ``bolts`` bolts (by id)."""
    import copy

    if not bolts:
        return dataset
    keep = sorted({r.bolt_id for r in dataset.records}, key=lambda b: int(b))[:bolts]
    keep = set(keep)
    out = copy.copy(dataset)
    out.records = [r for r in dataset.records if r.bolt_id in keep]
    return out


def _key(*parts) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:12]


def cached_array(path: Path, make, *args, **kwargs):
    """``np.load(path)``, or ``make(*args, **kwargs)`` saved to ``path`` first."""
    if path.is_file():
        return np.load(path)
    value = make(*args, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix('.tmp.npy')
    np.save(tmp, value)
    tmp.replace(path)
    return value


def fast_eval(model, f4_test, records, boxes, input_size, threshold, x_test=None,
              gallery=None, cut: str = 'block4_pool') -> dict:
    """Table 2 + localisation on the held-out views from their cached block-4 outputs; with
    ``x_test`` and ``gallery`` (a PNG path) also the Grad-CAM gallery of NG views."""
    import cv2

    from bolt_inspection.core.model.gradcam import GradCAM
    from bolt_inspection.core.model.keras_backend import keras
    from bolt_inspection.core.study.evaluate import (
        LocalisationTally,
        ViewPrediction,
        compute_metrics,
        region_box,
    )
    from bolt_inspection.core.study.train import chain

    k = keras()
    tail = chain(model, after=model.get_layer(cut))
    clone = k.models.clone_model(tail)       # its own graph, so Grad-CAM can tap block5_conv3
    clone.set_weights(tail.get_weights())
    w, h = input_size
    explainer = GradCAM(clone, 'block5_conv3', 1, heatmap_hw=(h, w))
    grid = explainer.grid_hw[::-1]
    tally = LocalisationTally(tolerance_px=4, grid_wh=grid)
    preds = []
    views = []
    frame = None
    for start in range(0, len(records), 32):
        probs, heat = explainer(f4_test[start:start + 32].astype(np.float32))
        for i, rec in enumerate(records[start:start + 32]):
            if frame is None:
                img = cv2.imread(str(rec.image_path), cv2.IMREAD_UNCHANGED)
                frame = (img.shape[1], img.shape[0])
            region = region_box(boxes, rec.cam, frame)
            mask = None
            if rec.label == 'NG' and rec.mask_path is not None:
                mask = cv2.imread(str(rec.mask_path), cv2.IMREAD_GRAYSCALE)
            check = tally.add(heat[i], label=rec.label, region=region, roi_box=region,
                              thread_box=tuple(rec.thread_box) if rec.thread_box else None,
                              mask=mask, input_size=(w, h), defect=rec.defect)
            preds.append(ViewPrediction(str(rec.bolt_id), int(rec.cam), rec.label,
                                        rec.bolt_label, float(probs[i, 1]), rec.defect, check))
            if gallery is not None and check is not None:
                from bolt_inspection.core.study.evaluate import crop_region
                from bolt_inspection.core.study.figures import HeatmapView

                size = (2 * w, 2 * h)
                crop = cv2.resize(x_test[start + i][:, :, ::-1], size)
                mask_crop = (cv2.resize((crop_region(mask, region) > 0).astype(np.float32),
                                        size, interpolation=cv2.INTER_AREA) > 0)
                views.append(HeatmapView(crop, heat[i], mask_crop.astype(np.uint8),
                                         f'{rec.defect} {rec.bolt_id}/{rec.cam} '
                                         f'p={probs[i, 1]:.2f}', hit=check.located))
    if gallery is not None:
        from bolt_inspection.core.study.evaluate import pick_gallery
        from bolt_inspection.core.study.figures import plot_gradcam_gallery

        plot_gradcam_gallery(pick_gallery(views, 24), gallery, title=f'{gallery.parent.name}')
    if gallery is not None:
        from bolt_inspection.core.study.evaluate import write_predictions

        write_predictions(preds, threshold, gallery.parent / 'predictions.csv')
    out = compute_metrics(preds, threshold)
    out['at_0.5'] = compute_metrics(preds, 0.5)
    out['localisation'] = tally.summary()
    missed = [p for p in preds if p.label == 'NG' and p.p_ng < threshold]
    out['missed_ng_views'] = {kind: sum(p.defect == kind for p in missed)
                              for kind in sorted({p.defect for p in missed})}
    return out


def row(result: dict) -> str:
    t = result['test']
    loc = t['localisation']
    b, v = t['bolt'], t['view']
    return (f'| {result["name"]} | {result["train_bolts"]} | {result["input"]} | '
            f'{result["config"]["head"]}{"+fc" + str(result["config"]["dense_units"]) if result["config"]["dense_units"] else ""} | '  # noqa: E501
            f'{result["config"]["epochs1"]}+{result["config"]["epochs2"]} | '
            f'{result["train_s"] / 60:.1f} | {result["threshold"]:.3f} | '
            f'{b["NG"]["f1"]:.3f} / {b["NG"]["recall"]:.3f} | '
            f'{t["at_0.5"]["bolt"]["NG"]["f1"]:.3f} | {v["NG"]["f1"]:.3f} | '
            f'{v["roc_auc"]:.4f} | {loc["peak_in_mask"]:.1%} ({loc["ng_views_located"]}/'
            f'{loc["ng_views_scored"]}) | {loc["peak_in_mask_ceiling"]:.1%} |')


HEADER = ('| recipe | train bolts | input | head | epochs 1+2 | train min | threshold | '
          'bolt F1 NG / NG recall (calibrated) | bolt F1 NG at 0.5 | view F1 NG | view AUC | '
          'peak in mask | ceiling |\n|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|'
          '---:|')


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--train', type=Path, required=True)
    parser.add_argument('--test', type=Path, required=True)
    parser.add_argument('--out', type=Path, required=True)
    parser.add_argument('--input', default='128x256')
    parser.add_argument('--recipe', action='append', required=True,
                        help='name=...,key=value,... (TrainConfig fields, train_bolts)')
    parser.add_argument('--keep-models', action='store_true')
    args = parser.parse_args(argv)
    common.setup_env()
    from bolt_inspection.core.model.keras_backend import keras
    from bolt_inspection.core.study.train import (
        CachedFeatures,
        TrainConfig,
        TrainingData,
        build_model,
        extract_features,
        fit,
        labels_of,
        load_views,
        prepare,
        resolve_roi,
        save_trained,
        split_at,
        stage2_cut_layer,
    )
    from bolt_inspection.core.vision.dataset import load_dataset, split_by_bolt

    k = keras()
    w, h = (int(v) for v in args.input.split('x'))
    cache = args.out / 'cache'
    full_train = load_dataset(args.train)
    test = load_dataset(args.test)
    test_records = list(test.records)
    for spec in args.recipe:
        name, options = parse_recipe(spec)
        bolts = options.pop('train_bolts', None)
        config = TrainConfig(**{**BASE, 'input_size': (w, h), **options})
        dataset = subset(full_train, bolts)
        n_bolts = len({r.bolt_id for r in dataset.records})
        common.log(f'recipe {name}: {n_bolts} bolts, {config}')
        k.backend.clear_session()
        t0 = time.perf_counter()
        model, layer, winfo = build_model(config)
        dkey = _key(str(args.train), n_bolts, w, h, config.seed, config.val_fraction)
        # Crops: cached per (data, bolts, input, split seed).
        xt_path, xv_path = cache / f'{dkey}_xtrain.npy', cache / f'{dkey}_xval.npy'
        if xt_path.is_file() and xv_path.is_file():
            tr, va = split_by_bolt(list(dataset.records), config.val_fraction, config.seed)
            frame = tuple(json.loads((args.train / 'synth.json').read_text())['size'])
            boxes, roi_frame, roi_source = resolve_roi(dataset, config, frame)
            data = TrainingData(tr, va, np.load(xt_path), np.load(xv_path), labels_of(tr),
                                labels_of(va), boxes, roi_frame, roi_source, frame)
        else:
            data = prepare(dataset, config, progress=True)
            cache.mkdir(parents=True, exist_ok=True)
            np.save(xt_path, data.x_train)
            np.save(xv_path, data.x_val)
        cut = stage2_cut_layer(model, config.fine_tune_blocks)
        front, _ = split_at(model, cut)
        fkey = _key(dkey, config.weights, config.augment_copies, config.seed) + \
            ('' if cut.name == 'block4_pool' else f'_{cut.name}')
        ft_path, fv_path = cache / f'{fkey}_f4train.npy', cache / f'{fkey}_f4val.npy'
        t_cache = time.perf_counter()
        f_train = cached_array(ft_path, extract_features, front, data.x_train,
                               copies=config.augment_copies, seed=config.seed, progress=True,
                               desc='block4 train')
        f_val = cached_array(fv_path, extract_features, front, data.x_val, progress=True,
                             desc='block4 val')[0]
        cache_s = time.perf_counter() - t_cache
        features = CachedFeatures(f_train, f_val, cut.name, cache_s)
        t_fit = time.perf_counter()
        history, timings = fit(model, data, config, log=common.log, progress=False,
                               features=features)
        fit_s = time.perf_counter() - t_fit
        model_dir = args.out / 'models' / name
        save_trained(model, data, config, dataset, model_dir, history=history, timings=timings,
                     gradcam_layer=layer, weight_info=winfo, t_start=t0, log=common.log)
        threshold = json.loads((model_dir / 'metadata.json').read_text())['threshold']
        tkey = _key(str(args.test), w, h)
        x_test = cached_array(cache / f'{tkey}_xtest.npy', load_views, test_records,
                              data.boxes, (w, h), True, 'test views')
        tfkey = _key(tkey, config.weights) + ('' if cut.name == 'block4_pool' else
                                              f'_{cut.name}')
        f_test = cached_array(cache / f'{tfkey}_f4test.npy', extract_features, front, x_test,
                              progress=True, desc='block4 test')[0]
        t_eval = time.perf_counter()
        result = {
            'name': name, 'spec': spec, 'train_bolts': n_bolts, 'input': f'{w}x{h}',
            'config': config.to_json(), 'weights': winfo.name, 'threshold': threshold,
            'train_s': fit_s, 'cache_s': cache_s, 'timings': timings,
            'history': {s: {k2: v for k2, v in hh.items() if k2 != 'seconds'}
                        for s, hh in history.items()},
            'test': fast_eval(model, f_test, test_records, data.boxes, (w, h), threshold,
                              x_test, model_dir / 'gradcam_gallery.png', cut=cut.name),
            'date': time.strftime('%Y-%m-%d %H:%M'), 'load': list(__import__('os').getloadavg()),
        }
        result['eval_s'] = time.perf_counter() - t_eval
        with open(args.out / 'runs.jsonl', 'a') as fh:
            fh.write(json.dumps(result, default=str) + '\n')
        print(HEADER)
        print(row(result), flush=True)
        loc = result['test']['localisation']
        print('   by defect:', {d: f'{v["located"]}/{v["scored"]}'
                                for d, v in loc['peak_in_mask_by_defect'].items()},
              'missed NG views:', result['test']['missed_ng_views'], flush=True)
        if not args.keep_models:
            (model_dir / 'model.keras').unlink(missing_ok=True)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
