"""Scaling at the Inspector level: cameras per bolt (1, 2, 4, 8) and model input size.

Both sweeps call the product's ``Inspector.inspect`` (ROI crop + ONE batched forward pass with
Grad-CAM + fusion) on 1280x960 synthetic frames, plus ``render_mosaic`` (the classifier's
image thread's job per bolt). No ROS: this isolates how the model side scales. Configurations
are timed round-robin (one bolt of each per round), so a change in machine load hits all of them
alike; each is also reported relative to the demo configuration (4 cameras, 112x224) of the same
run.

Throughput is what one classifier worker sustains: ``60 / p50(inspect)`` bolts/min, since the
classifier renders the mosaic on a second thread (it drops mosaics, never verdicts, when that
thread falls behind); ``60 / p50(inspect + mosaic)`` is also reported, the rate when both share
one core (the bound before the mosaic moved off the worker).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import common

CAMS = (1, 2, 4, 8)
SIZES = (common.DEMO_INPUT, (224, 224), (224, 448))


def build_inspector(input_size, n_cams: int, frame_size=common.FRAME_SIZE, model=None,
                    arch: str = 'vgg16'):
    from bolt_inspection.core.line.inspector import Inspector
    from bolt_inspection.core.model.artifact import ModelArtifact, ModelMetadata
    from bolt_inspection.core.model.network import build_tiny, build_vgg16
    from bolt_inspection.core.vision import synth
    from bolt_inspection.core.vision.roi import CameraConfig

    if model is None:
        model = (build_vgg16(tuple(input_size), weights='none', seed=0) if arch == 'vgg16'
                 else build_tiny(tuple(input_size), filters=(8, 16, 32), seed=0))
    boxes = synth.default_roi_boxes(frame_size, n_cams=n_cams)
    meta = ModelMetadata(input_size=tuple(input_size), roi_boxes=boxes, threshold=0.5,
                         gradcam_layer='block5_conv3' if arch == 'vgg16' else 'last_conv',
                         frame_size=tuple(frame_size))
    artifact = ModelArtifact(model=model, metadata=meta, path=Path('.'),
                             model_id=f'bench-{input_size[0]}x{input_size[1]}')
    inspector = Inspector(artifact, CameraConfig(frame_size=tuple(frame_size), boxes=boxes))
    inspector.warm_up()
    return inspector, model


def run(rounds: int, bolts: int = 2, frame_size=common.FRAME_SIZE, arch: str = 'vgg16') -> dict:
    from bolt_inspection.core.vision import synth

    common.log(f'scaling: rendering {bolts} bolts for 1-8 cameras')
    frames = {n: [{cam: synth.render_view(synth.bolt_spec(0, b), cam, frame_size,
                                          n_cams=n).image for cam in range(n)}
                  for b in range(bolts)] for n in CAMS}
    configs = {}
    base_model = None
    for n in CAMS:
        inspector, base_model = build_inspector(common.DEMO_INPUT, n, frame_size, base_model,
                                                arch)
        configs[f'cams{n}'] = {'sweep': 'cameras', 'cams': n,
                               'input_size': list(common.DEMO_INPUT), 'inspector': inspector,
                               'frames': frames[n]}
    for size in SIZES:
        if tuple(size) == common.DEMO_INPUT:
            continue   # the 4-camera configuration at the demo input is cams4
        inspector, _ = build_inspector(size, 4, frame_size, arch=arch)
        configs[f'size{size[0]}x{size[1]}'] = {'sweep': 'input_size', 'cams': 4,
                                               'input_size': list(size), 'inspector': inspector,
                                               'frames': frames[4]}
    samples = {name: {'inspect': [], 'inference': [], 'mosaic': []} for name in configs}
    # A plain forward pass on the demo batch: what Grad-CAM costs on top of classifying.
    import numpy as np

    from bolt_inspection.core.model.keras_backend import tf
    demo = configs['cams4']['inspector']
    forward = tf().function(lambda x: demo.gradcam.model(x, training=False), reduce_retracing=True)
    forward_ms = []
    common.log(f'scaling: {len(configs)} configurations x {rounds} rounds (round-robin)')
    for r in range(rounds):
        for name, cfg in configs.items():
            views = cfg['frames'][r % bolts]
            inspector = cfg['inspector']
            t0 = time.perf_counter()
            inspection = inspector.inspect(views)
            t1 = time.perf_counter()
            inspector.render_mosaic(inspection, r)
            t2 = time.perf_counter()
            samples[name]['inspect'].append((t1 - t0) * 1e3)
            samples[name]['inference'].append(inspection.timings_ms['inference'])
            samples[name]['mosaic'].append((t2 - t1) * 1e3)
            if name == 'cams4':
                batch = np.stack([inspection.crops[c][:, :, ::-1]
                                  for c in sorted(inspection.crops)]).astype(np.float32)
                if r == 0:
                    forward(tf().constant(batch))   # trace outside the timing
                t3 = time.perf_counter()
                forward(tf().constant(batch)).numpy()
                forward_ms.append((time.perf_counter() - t3) * 1e3)
    base = None
    out = {}
    for name, cfg in configs.items():
        s = samples[name]
        serial = [a + b for a, b in zip(s['inspect'], s['mosaic'], strict=True)]
        rec = {'sweep': cfg['sweep'], 'cams': cfg['cams'], 'input_size': cfg['input_size'],
               'inspect_ms': common.stats(s['inspect']),
               'inference_ms': common.stats(s['inference']),
               'mosaic_ms': common.stats(s['mosaic']),
               # The inference worker's own time per bolt (the mosaic is on the image thread).
               'worker_ms_per_bolt': common.stats(s['inspect']),
               'inspect_plus_mosaic_ms': common.stats(serial)}
        p50 = rec['worker_ms_per_bolt']['p50']
        p50_serial = rec['inspect_plus_mosaic_ms']['p50']
        rec['throughput_bolts_per_min'] = 60000.0 / p50 if p50 else None
        rec['throughput_views_per_s'] = cfg['cams'] * 1000.0 / p50 if p50 else None
        rec['throughput_one_core_bolts_per_min'] = 60000.0 / p50_serial if p50_serial else None
        rec['samples_inspect_ms'] = s['inspect']
        out[name] = rec
        if name == 'cams4':
            base = rec
    for rec in out.values():
        rec['inspect_p50_vs_demo'] = (rec['inspect_ms']['p50'] / base['inspect_ms']['p50']
                                      if base else None)
    grad = out['cams4']['inference_ms']['p50']
    fwd = common.stats(forward_ms)
    return {'forward_only_ms': fwd, 'gradcam_over_forward_p50': (grad / fwd['p50'] if
                                                                  fwd['p50'] else None),
            'level': 'Inspector (no ROS): inspect = ROI + batched forward pass with Grad-CAM '
                     '+ fusion; mosaic = render_mosaic (on the image thread in the line)',
            'frame_size': list(frame_size),
            'arch': arch, 'rounds': rounds, 'configs': out}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--out', type=Path, required=True)
    args = parser.parse_args(argv)
    common.setup_env()
    result = run(args.rounds)
    result['process'] = common.self_usage()
    common.write_json(args.out, result)
    for name, rec in result['configs'].items():
        common.log(f'scaling {name}: inspect p50 {rec["inspect_ms"]["p50"]:.0f} ms, '
                   f'{rec["throughput_bolts_per_min"]:.1f} bolts/min')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
