"""Decision latency of the composed line against the raw model time, with a stage breakdown.

The line is the product's own composition (``graph.line_nodes`` +
``runtime.composed.ComposedLine``: 4 synthetic camera nodes and the classifier on one
MultiThreadedExecutor) and a ``LineDriver`` that publishes ``/line/trigger``. Bolts are triggered
one at a time (the next trigger after the previous verdict), and after each verdict the SAME 4
frames go through the classifier's own Inspector in this thread (``inspect``; its
``timings_ms['inference']`` is the one Grad-CAM call on the 4-view batch). Each bolt therefore
gives a paired sample (line latency, raw model time) taken under the same machine load, which is
what makes the overhead ratio meaningful on a shared, noisy machine.

The line has background work of its own after a verdict: each synthetic camera renders the
next bolt on a prefetch thread, and the classifier renders the Grad-CAM mosaic on its image
thread. Before every raw pass (and so before every next trigger) the bench waits until that work
is done (joins the cameras' ``synthetic-prefetch-*`` threads, waits for the bolt's mosaic to be
published), so the raw pass, the limit of the ratio, never competes with the line's own work:
competing would inflate it and flatter the ratio. The line side is timed as the product runs:
its inference does compete with the prefetch renders of the next bolt (a real cost of
prefetching), which shows as ``inference_gradcam`` above the raw pass. Each bolt also starts
from the same state (its frames prefetched, nothing in flight), i.e. a rate below capacity; the
closed loop (``loop.py``) measures what happens when bolts come faster than the renders.
``prefetch=False`` (``--no-prefetch``) runs the cameras without prefetch, for comparison.

Stage timings come from wrappers installed around the product's functions in THIS process only
(no source change): camera grab (with prefetch: the handoff of the frame rendered in the
background, or a render on a miss) / convert / publish, classifier decode, join, queue, the
Inspector's own ``timings_ms`` (roi, inference incl. Grad-CAM, fusion), verdict publish, the
worker's time per bolt, the image thread's mosaic render and publish, and the verdict's arrival
at the driver. The stamp -> bolt map that attributes each image to its bolt is filled by the
camera's ``capture`` wrapper from the trigger it received, before the image is published, so no
view can reach the classifier ahead of its entry (with prefetch a frame goes out within a
millisecond or two of the trigger). Every clock is ``time.perf_counter``.

Run alone: ``python bench/latency.py --model-kind demo --bolts 30 --out bench_out/x.json``.
"""

from __future__ import annotations

import argparse
import functools
import threading
import time
from collections import defaultdict
from pathlib import Path

import common
import numpy as np


class Probe:
    """Thread-safe per-bolt event recorder (perf_counter seconds / durations)."""

    _shared: Probe | None = None

    @classmethod
    def shared(cls) -> Probe:
        """The process's one probe: the wrappers are installed once, the state reset per run."""
        if cls._shared is None:
            cls._shared = cls()
            cls._shared.install()
        cls._shared.reset()
        return cls._shared

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tls = threading.local()
        self.reset()

    def reset(self) -> None:
        self.events: dict[str, dict] = defaultdict(dict)      # bolt -> name -> value
        self.views: dict[str, dict] = defaultdict(dict)       # bolt -> cam -> event dict
        self.frames: dict[str, dict[int, np.ndarray]] = defaultdict(dict)
        self.stamp_to_bolt: dict[int, str] = {}
        self.keep_frames = True
        self.current_bolt: str | None = None

    def put(self, bolt, name, value) -> None:
        with self.lock:
            self.events[str(bolt)][name] = value

    def view(self, bolt, cam, **values) -> None:
        with self.lock:
            self.views[str(bolt)].setdefault(int(cam), {}).update(values)

    def install(self) -> None:
        """Wrap the product's hot-path functions (this process only)."""
        import bolt_inspection.nodes.camera_node as camera_node
        import bolt_inspection.nodes.classifier_node as classifier_node
        from bolt_inspection.core.line.inspector import Inspector
        from bolt_inspection.core.line.pipeline import InspectionPipeline
        from bolt_inspection.core.vision import camera_source
        from bolt_inspection.nodes.line_driver import LineDriver

        probe = self
        pc = time.perf_counter

        grab = camera_source.SyntheticSource.grab

        @functools.wraps(grab)
        def timed_grab(src, bolt_id):
            hits = getattr(src, 'prefetch_hits', 0)
            t0 = pc()
            frame = grab(src, bolt_id)
            # With prefetch on, grab is the handoff of a frame rendered in the background (or
            # a render on the spot on a miss): say which, per view.
            probe.view(bolt_id, src.config.cam, grab=pc() - t0,
                       prefetch_hit=getattr(src, 'prefetch_hits', 0) > hits)
            if probe.keep_frames:
                with probe.lock:
                    probe.frames[str(bolt_id)][src.config.cam] = frame
            return frame
        camera_source.SyntheticSource.grab = timed_grab

        capture = camera_node.CameraNode.capture

        @functools.wraps(capture)
        def timed_capture(node, stamp, bolt_id):
            cam = node._params['camera_index']
            # The stamp -> bolt map, filled before this camera can publish the image: the
            # classifier's decode wrapper never sees a stamp the map does not know yet.
            with probe.lock:
                probe.stamp_to_bolt[int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)] = (
                    str(bolt_id))
            probe.tls.where = (bolt_id, cam)
            t0 = pc()
            ok = capture(node, stamp, bolt_id)
            probe.view(bolt_id, cam, capture_start=t0, capture_end=pc())
            return ok
        camera_node.CameraNode.capture = timed_capture

        to_image = camera_node.bgr_to_image

        @functools.wraps(to_image)
        def timed_to_image(*a, **kw):
            t0 = pc()
            msg = to_image(*a, **kw)
            where = getattr(probe.tls, 'where', None)
            if where:
                probe.view(where[0], where[1], convert=pc() - t0)
            return msg
        camera_node.bgr_to_image = timed_to_image

        decode = classifier_node.image_to_bgr

        @functools.wraps(decode)
        def timed_decode(msg, *a, **kw):
            t0 = pc()
            try:
                return decode(msg, *a, **kw)
            finally:
                stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                bolt = probe.stamp_to_bolt.get(stamp)
                cam = msg.header.frame_id.removeprefix('cam').split('_')[0]
                if bolt is not None and cam.isdigit():
                    probe.view(bolt, int(cam), received=t0, decode=pc() - t0)
        classifier_node.image_to_bgr = timed_decode

        node_cls = classifier_node.ClassifierNode
        pipeline_cls = InspectionPipeline
        dispatch = pipeline_cls._dispatch

        @functools.wraps(dispatch)
        def timed_dispatch(pipeline, bundles):
            now = pc()
            for bundle in bundles:
                probe.put(bundle.bolt_id, 'joined', now)
            return dispatch(pipeline, bundles)
        pipeline_cls._dispatch = timed_dispatch

        process = pipeline_cls._process

        @functools.wraps(process)
        def timed_process(pipeline, bundle):
            probe.put(bundle.bolt_id, 'process_start', pc())
            try:
                return process(pipeline, bundle)
            finally:
                probe.put(bundle.bolt_id, 'process_end', pc())
        pipeline_cls._process = timed_process

        publish_verdict = node_cls._publish_verdict

        @functools.wraps(publish_verdict)
        def timed_publish_verdict(node, bundle, verdict, *args):
            t0 = pc()
            latency_ms = publish_verdict(node, bundle, verdict, *args)
            t1 = pc()
            probe.put(bundle.bolt_id, 'verdict_start', t0)
            probe.put(bundle.bolt_id, 'verdict_published', t1)
            probe.put(bundle.bolt_id, 'message', verdict.message)
            return latency_ms
        node_cls._publish_verdict = timed_publish_verdict

        publish_images = node_cls._publish_images

        @functools.wraps(publish_images)
        def timed_publish_images(node, bundle, inspection):
            # Runs on the classifier's image thread, after the verdict.
            t0 = pc()
            publish_images(node, bundle, inspection)
            t1 = pc()
            probe.put(bundle.bolt_id, 'images', t1 - t0)
            probe.put(bundle.bolt_id, 'images_end', t1)
        node_cls._publish_images = timed_publish_images

        inspect = Inspector.inspect

        @functools.wraps(inspect)
        def timed_inspect(inspector, views, failures=None):
            result = inspect(inspector, views, failures)
            # One bolt is in flight at a time, so the worker's call belongs to current_bolt.
            bolt = getattr(probe, 'current_bolt', None)
            if threading.current_thread().name == 'classifier-worker' and bolt is not None:
                probe.put(bolt, 'timings', dict(result.timings_ms))
            return result
        Inspector.inspect = timed_inspect

        mosaic = Inspector.render_mosaic

        @functools.wraps(mosaic)
        def timed_mosaic(inspector, inspection, bolt_id):
            t0 = pc()
            out = mosaic(inspector, inspection, bolt_id)
            probe.put(bolt_id, 'mosaic', pc() - t0)
            return out
        Inspector.render_mosaic = timed_mosaic

        on_verdict = LineDriver._on_verdict

        @functools.wraps(on_verdict)
        def timed_on_verdict(driver, msg):
            probe.put(msg.bolt_id, 'received', pc())
            return on_verdict(driver, msg)
        LineDriver._on_verdict = timed_on_verdict


def bolt_breakdown(ev: dict, views: dict, cams) -> dict[str, float] | None:
    """Per-stage durations (seconds) of one bolt; None when the bolt is incomplete."""
    need = ('trigger', 'joined', 'process_start', 'verdict_start', 'verdict_published')
    if any(k not in ev for k in need) or any(c not in views for c in cams):
        return None
    vs = [views[c] for c in cams]
    if any(k not in v for v in vs for k in ('capture_start', 'grab', 'convert', 'received',
                                              'decode')):
        return None
    t = ev['trigger']
    timings = ev.get('timings', {})
    inner = sum(timings.values()) / 1000.0
    out = {
        'trigger_to_camera': min(v['capture_start'] for v in vs) - t,
        # The camera stages below are the worst camera's each; this one shows how late the
        # last camera starts its capture (the executor's threads, the GIL).
        'trigger_to_last_camera': max(v['capture_start'] for v in vs) - t,
        'camera_grab': max(v['grab'] for v in vs),
        'camera_convert': max(v['convert'] for v in vs),
        'image_publish_transport': max(v['received'] - (v['capture_start'] + v['grab']
                                                         + v['convert']) for v in vs),
        'decode': max(v['decode'] for v in vs),
        'views_joined': ev['joined'] - t,
        'queue_wait': ev['process_start'] - ev['joined'],
        'roi': timings.get('roi', 0.0) / 1000.0,
        'inference_gradcam': timings.get('inference', 0.0) / 1000.0,
        'fusion': timings.get('fusion', 0.0) / 1000.0,
        'worker_other': ev['verdict_start'] - ev['process_start'] - inner,
        'verdict_publish': ev['verdict_published'] - ev['verdict_start'],
        'latency_published': ev['verdict_published'] - t,
    }
    if 'process_end' in ev:
        # The inference worker's time per bolt (the mosaic is no longer part of it).
        out['worker_busy'] = ev['process_end'] - ev['process_start']
    if 'received' in ev:
        out['verdict_transport'] = ev['received'] - ev['verdict_published']
        out['latency_received'] = ev['received'] - t
    if 'mosaic' in ev:
        out['mosaic_render'] = ev['mosaic']
    if 'images' in ev and 'mosaic' in ev:
        out['gradcam_image_publish'] = ev['images'] - ev['mosaic']
    if 'images_end' in ev:
        # When people see the picture: the image thread's queue wait + render + publish.
        out['mosaic_published_after_verdict'] = ev['images_end'] - ev['verdict_published']
    return out


PREFETCH_THREAD = 'synthetic-prefetch'   # core.vision.camera_source names its render threads so


def settle(probe: Probe, bolt: str, classifier, *, images: bool,
           timeout_s: float = 10.0) -> dict:
    """Wait until the line's background work after ``bolt``'s verdict is done.

    That work is the cameras' prefetch renders of the next bolt (threads named
    ``synthetic-prefetch-cam<k>``, started inside ``grab``, so all of them exist once the
    verdict is out) and, with ``images``, the classifier image thread's mosaic of ``bolt``.
    Returns what was still in flight when called and how long the wait took.
    """
    pc = time.perf_counter
    t0 = pc()
    deadline = t0 + timeout_s
    renders = [t for t in threading.enumerate()
               if t.name.startswith(PREFETCH_THREAD) and t.is_alive()]
    mosaic_pending = images and 'images_end' not in probe.events[bolt]
    for thread in renders:
        thread.join(max(0.0, deadline - pc()))
    while images and 'images_end' not in probe.events[bolt] and pc() < deadline:
        time.sleep(0.002)
    # Nothing else queued for the image thread either (one bolt in flight: normally empty).
    while getattr(classifier, '_images', None) and pc() < deadline:
        time.sleep(0.002)
    busy = (any(t.is_alive() for t in renders)
            or (images and 'images_end' not in probe.events[bolt]))
    return {'prefetch_in_flight': len(renders), 'mosaic_in_flight': bool(mosaic_pending),
            'wait_s': pc() - t0, 'timed_out': bool(busy)}


def run(artifact: Path, *, bolts: int, warm: int = 3, frame_size=common.FRAME_SIZE,
        label: str = 'line', timeout_s: float = 30.0, view_timeout_s: float | None = None,
        publish_gradcam: bool = True, prefetch: bool = True,
        engines: list[str] | None = None) -> dict:
    """Run the composed line bolt by bolt and time the raw model on the same frames.

    ``prefetch`` is the camera nodes' parameter: False renders each frame on the trigger.
    ``engines`` (issue 19): the classifier's Inspector runs bolt ``i`` on
    ``engines[i % len(engines)]`` (swapped between bolts, one bolt in flight), and after every
    verdict EVERY engine makes a raw pass over the same frames (in an order rotating per bolt),
    compared with the ``'tf'`` reference's pass: each engine's line latency, raw time and
    agreement come from the same run, the same bolts and the same machine load. The result
    gets an ``engines`` section; the rest is over all bolts.
    """
    domain = common.setup_env()
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from bolt_inspection import paths
    from bolt_inspection.core.config import load_yaml
    from bolt_inspection.graph import line_nodes
    from bolt_inspection.nodes.line_driver import LineDriver
    from bolt_inspection.runtime.composed import ComposedLine, wait_for_subscribers

    probe = Probe.shared()
    # This run drives /line/trigger itself: no PLC bridge even if the node list grows one.
    specs = [s for s in line_nodes(source='synthetic', model=str(artifact))
             if s.executable != 'plc_bridge_node']
    camera_names = [s.name for s in specs if s.executable == 'camera_node']
    overrides = {name: {'size': list(frame_size), 'prefetch': bool(prefetch)}
                 for name in camera_names}
    overrides['classifier'] = {'frame_size': list(frame_size),
                               'publish_gradcam': publish_gradcam}
    if view_timeout_s is not None:
        overrides['classifier']['view_timeout_s'] = float(view_timeout_s)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain,
               signal_handler_options=SignalHandlerOptions.NO)
    line = None
    cpu = common.CpuWindow()
    pairs = []
    try:
        line = ComposedLine(specs, load_yaml(paths.config_path('line.yaml')), context=context,
                            overrides=overrides)
        driver = LineDriver('bench_driver', context=context)
        line.add_node(driver)
        t_up = time.perf_counter()
        line.start()
        bring_up_s = time.perf_counter() - t_up
        wait_for_subscribers(driver.trigger_pub, len(specs))
        time.sleep(0.5)
        classifier = line.nodes['classifier']
        inspector = classifier.inspector
        cams = tuple(inspector.cams)
        engine_notes: dict = {}
        built = build_engines(inspector, engines, engine_notes) if engines else {}
        if built:
            warm = max(warm, len(built))
        images = bool(classifier._params.get('publish_gradcam')
                      or classifier._params.get('publish_heatmaps'))
        settles = []
        cpu.start()
        for i in range(warm + bolts):
            bolt = str(1000 + i)
            probe.current_bolt = bolt
            if built:
                name = engines[i % len(engines)]
                inspector.use_engine(built[name])
                probe.put(bolt, 'engine', name)
            with probe.lock:
                probe.events[bolt]['trigger'] = time.perf_counter()
            count = len(driver.verdicts())
            # The stamp -> bolt entry is made by the cameras' capture wrapper before they
            # publish (see the module docstring); nothing to map here after the fact.
            driver.trigger(bolt)
            driver.wait_for_verdicts(count + 1, timeout_s=timeout_s)
            deadline = time.perf_counter() + 2.0
            while 'received' not in probe.events[bolt] and time.perf_counter() < deadline:
                time.sleep(0.002)
            while ('process_end' not in probe.events[bolt]
                   and time.perf_counter() < deadline):
                time.sleep(0.002)
            # The next bolt's prefetch renders and this bolt's mosaic run after the verdict:
            # let them finish before the raw pass (and the next trigger), every bolt alike.
            state = settle(probe, bolt, classifier, images=images)
            frames = probe.frames.pop(bolt, {})
            if len(frames) != len(cams) or i < warm:
                continue
            settles.append(state)
            # The same Inspector on the same 4 frames, in this thread: 'inference' of its own
            # timings is the one GradCAM call on the 4-view batch (the raw model time).
            t0 = time.perf_counter()
            inspection = inspector.inspect(frames)
            t1 = time.perf_counter()
            pairs.append({'bolt': bolt, 'raw_inspect': t1 - t0,
                          'raw_gradcam': inspection.timings_ms['inference'] / 1e3})
            if built:
                pairs[-1]['engines'] = raw_engine_passes(inspector, built, frames, i)
                inspector.use_engine(built[engines[i % len(engines)]])
        window = cpu.stop()
        counts = dict(classifier.counts)
        joiner = classifier.joiner
        join_stats = ({'stale_views': joiner.stats.stale,
                       'duplicate_views': joiner.stats.duplicate_views} if joiner else {})
        model_id = inspector.model_id
        threshold = inspector.threshold
        input_size = list(inspector.input_size)
        mosaics_dropped = getattr(classifier, 'images_dropped', None)
        sources = {name: line.nodes[name].source for name in camera_names}
        prefetch_counts = {name: {'hits': getattr(src, 'prefetch_hits', None),
                                  'misses': getattr(src, 'prefetch_misses', None)}
                           for name, src in sources.items() if src is not None}
    finally:
        if line is not None:
            line.stop()
        context.try_shutdown()

    measured = [p['bolt'] for p in pairs]
    rows = {b: bolt_breakdown(probe.events[b], probe.views[b], cams) for b in measured}
    complete = [b for b in measured if rows[b] is not None]
    names = list(dict.fromkeys(name for b in complete for name in rows[b]))
    stages = {name: common.stats([rows[b][name] for b in complete if name in rows[b]], 1e3)
              for name in names}
    lat = [rows[b]['latency_published'] for b in complete]
    raw = {b['bolt']: b for b in pairs}
    ratios = [rows[b]['latency_published'] / raw[b]['raw_gradcam'] for b in complete]
    ratios_inspect = [rows[b]['latency_published'] / raw[b]['raw_inspect'] for b in complete]
    excl_cam = [rows[b]['latency_published'] - rows[b]['camera_grab'] for b in complete]
    lat_s = common.stats(lat, 1e3)
    raw_s = common.stats([raw[b]['raw_gradcam'] for b in complete], 1e3)
    raw_i = common.stats([raw[b]['raw_inspect'] for b in complete], 1e3)
    line_inf = stages.get('inference_gradcam') or {}
    messages = defaultdict(int)
    for b in measured:
        msg = probe.events[b].get('message', 'NO VERDICT')
        messages[msg if msg.startswith('NG:') or msg == 'NO VERDICT' else msg[:2]] += 1
    hit_views = sum(bool(probe.views[b][c].get('prefetch_hit')) for b in complete for c in cams)
    return {
        'label': label, 'artifact': str(artifact), 'model_id': model_id,
        'input_size': input_size, 'frame_size': list(frame_size), 'cams': list(cams),
        'bolts_requested': bolts, 'bolts_measured': len(complete), 'warm_up_bolts': warm,
        'mode': 'one bolt in flight at a time (next trigger after the verdict and the raw '
                'pass); background work (prefetch renders, mosaic) drained before each raw pass',
        'prefetch': bool(prefetch),
        'latency_published_ms': lat_s,
        'latency_received_ms': stages.get('latency_received'),
        'raw_gradcam_ms': raw_s, 'raw_inspect_ms': raw_i,
        'overhead_ratio_p50': (lat_s['p50'] / raw_s['p50']) if complete else None,
        'overhead_ratio_p50_vs_inspect': (lat_s['p50'] / raw_i['p50']) if complete else None,
        'overhead_ratio_per_bolt': common.stats(ratios),
        'overhead_ratio_per_bolt_vs_inspect': common.stats(ratios_inspect),
        # The line's Grad-CAM pass over the raw one: > 1 when the line's own background work
        # (the next bolt's prefetch renders) competes with its inference.
        'line_vs_raw_inference_p50': (line_inf['p50'] / raw_s['p50']
                                      if complete and line_inf.get('p50') else None),
        # Trigger -> verdict minus the camera grab (with prefetch: the handoff of a frame
        # rendered in the background; without: the synthetic render on the trigger).
        'latency_excl_camera_grab_ms': common.stats(excl_cam, 1e3),
        'overhead_ratio_p50_excl_camera_grab': (
            common.stats(excl_cam)['p50'] / raw_s['p50'] * 1e3 if complete else None),
        'camera_views_from_prefetch': {'views': hit_views, 'of': len(complete) * len(cams)},
        'camera_prefetch_counts': prefetch_counts,
        'mosaics_dropped': mosaics_dropped,
        'raw_pass_settle': {
            'prefetch_renders_in_flight_at_verdict': common.stats(
                [st['prefetch_in_flight'] for st in settles]),
            'bolts_with_mosaic_in_flight_at_verdict': sum(st['mosaic_in_flight']
                                                          for st in settles),
            'wait_ms': common.stats([st['wait_s'] for st in settles], 1e3),
            'timed_out': sum(st['timed_out'] for st in settles)},
        'stages_ms': stages, 'verdict_messages': dict(messages),
        'classifier_counts': counts, 'join_stats': join_stats,
        'bring_up_s': bring_up_s, 'cpu_window': window,
        'samples': {'latency_published_ms': [x * 1e3 for x in lat],
                    'raw_gradcam_ms': [raw[b]['raw_gradcam'] * 1e3 for b in complete],
                    'raw_inspect_ms': [raw[b]['raw_inspect'] * 1e3 for b in complete]},
        'process': common.self_usage(),
        **({'engines': engine_summary(engines, probe, rows, complete, raw,
                                                   threshold),
            'engine_notes': engine_notes} if built else {}),
    }


def build_engines(inspector, names: list[str], notes: dict | None = None) -> dict:
    """Every named engine of the Inspector's artifact, for comparison.

    An engine the product would refuse because it failed validation is built anyway (the bench
    measures it; ``notes`` gets why the line would not run it). One that cannot be built at all
    is an error: a silent fallback to 'tf' would compare tf with itself.
    """
    from bolt_inspection.core.model.engine import (
        GradCamTail,
        build_split_engine,
        load_engine,
        read_export,
    )

    built = {}
    for name in dict.fromkeys(['tf', *names]):
        selection = load_engine(inspector.artifact, name, threshold=inspector.threshold)
        if selection.engine.name != name:
            manifest, problem = read_export(inspector.artifact)
            if manifest is None or name not in manifest['engines']:
                raise RuntimeError(f'engine {name} cannot run: {problem or "not exported"}')
            reference = built.get('tf') or load_engine(inspector.artifact, 'tf').engine
            selection.engine = build_split_engine(inspector.artifact, manifest, name, reference,
                                                  GradCamTail(reference.gradcam))
            if notes is not None:
                notes[name] = ('measured only; the line refuses it: '
                               + '; '.join(selection.warnings))
        built[name] = selection.engine
    return built


def raw_engine_passes(inspector, built: dict, frames: dict, index: int) -> dict:
    """Every engine's Inspector pass over the same frames; agreement with the 'tf' pass."""
    from bolt_inspection.core.model.engine import compare_views

    names = list(built)
    order = names[index % len(names):] + names[:index % len(names)]
    out, results = {}, {}
    for name in order:
        inspector.use_engine(built[name])
        t0 = time.perf_counter()
        results[name] = inspector.inspect(frames)
        out[name] = {'raw_inspect': time.perf_counter() - t0,
                     'raw_gradcam': results[name].timings_ms['inference'] / 1e3,
                     'backbone_ms': built[name].last_ms.get('backbone'),
                     'head_ms': built[name].last_ms.get('head')}
    ref = results['tf']
    cams = sorted(c for c in ref.p_ng if ref.p_ng[c] is not None)
    for name, result in results.items():
        cmp = compare_views(
            np.array([[1 - ref.p_ng[c], ref.p_ng[c]] for c in cams]),
            np.stack([ref.heatmaps[c] for c in cams]),
            np.array([[1 - result.p_ng[c], result.p_ng[c]] for c in cams]),
            np.stack([result.heatmaps[c] for c in cams]), 1, built[name].grid_hw)
        out[name].update({'p_ref': cmp['p_ref'].tolist(), 'p': cmp['p'].tolist(),
                          'peak_same': cmp['peak_same'].tolist(), 'corr': cmp['corr'].tolist(),
                          'bolt_ok_ref': bool(ref.verdict.ok), 'bolt_ok': bool(result.verdict.ok)})
    return out


def engine_summary(engines: list[str], probe: Probe, rows: dict, complete: list,
                   raw: dict, threshold: float) -> dict:
    """Per engine: line latency (its own bolts), raw pass (every bolt), agreement with tf."""
    from bolt_inspection.core.model.engine import agreement

    out = {}
    for name in dict.fromkeys(engines):
        own = [b for b in complete if probe.events[b].get('engine') == name]
        passes = [raw[b]['engines'][name] for b in complete if 'engines' in raw[b]]
        out[name] = {
            'bolts': len(own),
            'latency_published_ms': common.stats(
                [rows[b]['latency_published'] for b in own], 1e3),
            'inference_gradcam_line_ms': common.stats(
                [rows[b]['inference_gradcam'] for b in own], 1e3),
            'views_joined_ms': common.stats([rows[b]['views_joined'] for b in own], 1e3),
            'raw_gradcam_ms': common.stats([p['raw_gradcam'] for p in passes], 1e3),
            'raw_backbone_ms': common.stats([p['backbone_ms'] for p in passes]),
            'raw_head_ms': common.stats([p['head_ms'] for p in passes]),
            'samples_ms': [rows[b]['latency_published'] * 1e3 for b in own],
        }
        if passes:
            cat = {k: np.concatenate([p[k] for p in passes]) for k in
                   ('p_ref', 'p', 'peak_same', 'corr')}
            agree = agreement(cat['p_ref'], cat['p'], cat['peak_same'].astype(bool),
                              cat['corr'], threshold)
            agree['bolt_verdict_agreement'] = float(np.mean(
                [p['bolt_ok'] == p['bolt_ok_ref'] for p in passes]))
            out[name]['agreement_vs_tf'] = agree
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model-kind', choices=sorted(common.MODEL_KINDS), default='demo')
    parser.add_argument('--artifact', type=Path, help='use this artifact instead')
    parser.add_argument('--bolts', type=int, default=30)
    parser.add_argument('--warm', type=int, default=3)
    parser.add_argument('--frame-size', type=int, nargs=2, default=list(common.FRAME_SIZE))
    parser.add_argument('--no-prefetch', action='store_true',
                        help='synthetic cameras render each frame on the trigger (comparison)')
    parser.add_argument('--engines', nargs='+', metavar='ENGINE',
                        help='rotate the classifier over these engines bolt by bolt and time '
                             'every engine on every bolt (needs an artifact with an export)')
    parser.add_argument('--out', type=Path, required=True)
    args = parser.parse_args(argv)
    common.setup_env()
    arch, input_size = common.MODEL_KINDS[args.model_kind]
    artifact = args.artifact or common.make_artifact(
        args.out.parent / 'models' / f'{args.model_kind}_{args.frame_size[0]}x'
        f'{args.frame_size[1]}', arch, input_size, tuple(args.frame_size))
    common.log(f'latency: {args.model_kind} {input_size} frames {args.frame_size}, '
               f'{args.bolts} bolts, prefetch {"off" if args.no_prefetch else "on"}')
    result = run(artifact, bolts=args.bolts, warm=args.warm,
                 frame_size=tuple(args.frame_size), label=args.model_kind,
                 prefetch=not args.no_prefetch, engines=args.engines)
    result['model_kind'] = args.model_kind
    result['arch'] = arch
    common.write_json(args.out, result)
    lat, raw = result['latency_published_ms'], result['raw_gradcam_ms']
    common.log(f'latency {args.model_kind}: p50 {lat["p50"]:.0f} ms p99 {lat["p99"]:.0f} ms, '
               f'raw p50 {raw["p50"]:.0f} ms, ratio {result["overhead_ratio_p50"]:.2f}')
    for name, e in (result.get('engines') or {}).items():
        common.log(f'  {name}: line p50 {e["latency_published_ms"]["p50"]:.0f} / p99 '
                   f'{e["latency_published_ms"]["p99"]:.0f} ms over {e["bolts"]} bolts, raw '
                   f'{e["raw_gradcam_ms"]["p50"]:.0f} ms')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
