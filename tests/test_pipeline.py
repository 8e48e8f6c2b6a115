"""core.line.pipeline.InspectionPipeline without ROS: exactly one verdict per triggered bolt,
NG with the reason whatever goes wrong, pictures that never hold up a verdict."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from conftest import wait_for

from bolt_inspection.core.line.fusion import fuse
from bolt_inspection.core.line.pipeline import (
    InspectionPipeline,
    PipelineOutput,
    PipelineSettings,
)

CAMS = (0, 1, 2, 3)


class FakeInspection:
    def __init__(self, verdict):
        self.verdict, self.p_ng = verdict, verdict.p_ng


class FakeInspector:
    """p_ng of a view = its mean grey level / 255; optionally slow or blocked."""

    threshold, model_id = 0.5, 'fake'

    def __init__(self, delay_s: float = 0.0, gate: threading.Event | None = None):
        self.delay_s, self.gate = delay_s, gate

    def inspect(self, views, failures=None):
        if self.gate is not None:
            self.gate.wait(10.0)
        time.sleep(self.delay_s)
        p_ng = {c: float(v.mean()) / 255 for c, v in views.items() if v is not None}
        return FakeInspection(fuse(p_ng, self.threshold, CAMS, failures or {}))


class Recorder(PipelineOutput):
    def __init__(self, images: bool = False, image_delay_s: float = 0.0):
        self.verdicts: dict[str, object] = {}
        self.rendered: list[str] = []
        self.logs: list[tuple[str, str]] = []
        self._images, self.image_delay_s = images, image_delay_s
        self.lock = threading.Lock()

    def verdict(self, bundle, verdict):
        with self.lock:
            assert bundle.bolt_id not in self.verdicts, f'two verdicts for {bundle.bolt_id}'
            self.verdicts[bundle.bolt_id] = verdict
        return 1.0

    def wants_images(self):
        return self._images

    def images(self, bundle, inspection):
        time.sleep(self.image_delay_s)
        self.rendered.append(bundle.bolt_id)

    def log(self, level, text):
        self.logs.append((level, text))


def bolt(pipeline, bolt_id: int, level: int = 10, skip=()):
    stamp = bolt_id * 1_000_000_000     # a second apart, as bolts on the conveyor
    pipeline.trigger(stamp, str(bolt_id), time.monotonic())
    for cam in CAMS:
        if cam not in skip:
            pipeline.view(stamp, cam, time.monotonic(),
                          image=np.full((8, 8, 3), level, np.uint8))


@pytest.fixture
def make():
    made = []

    def build(inspector=None, output=None, **settings):
        settings = PipelineSettings(cams=CAMS, **{'view_timeout_s': 0.2, **settings})
        pipeline = InspectionPipeline(inspector or FakeInspector(), settings,
                                      output or Recorder())
        pipeline.start()
        made.append(pipeline)
        return pipeline, pipeline.output
    yield build
    for pipeline in made:
        pipeline.stop('test over')


def test_every_bolt_gets_one_verdict_by_its_views(make):
    pipeline, out = make()
    bolt(pipeline, 1, level=10)          # p_ng 0.04: OK
    bolt(pipeline, 2, level=200)         # p_ng 0.78: NG
    assert wait_for(lambda: len(out.verdicts) == 2)
    assert out.verdicts['1'].ok and not out.verdicts['2'].ok
    counts = pipeline.snapshot()
    assert (counts['verdicts'], counts['ok'], counts['ng']) == (2, 1, 1)
    assert pipeline.latency.count == 2 and pipeline.join_wait.count == 2


def test_a_late_view_makes_the_bolt_ng_missing_view(make):
    pipeline, out = make()
    bolt(pipeline, 3, skip=(2,))
    time.sleep(0.25)
    pipeline.expire(time.monotonic())
    assert wait_for(lambda: '3' in out.verdicts)
    assert out.verdicts['3'].message == 'NG: missing view cam2'
    assert pipeline.snapshot()['timed_out'] == 1


def test_a_full_queue_gives_ng_overloaded_never_silence(make):
    gate = threading.Event()
    pipeline, out = make(FakeInspector(gate=gate), queue_size=1)
    bolt(pipeline, 10)
    assert wait_for(lambda: pipeline.snapshot()['queue_depth'] == 0)   # the worker holds it
    for bolt_id in range(11, 14):    # the queue takes one, the rest overflow
        bolt(pipeline, bolt_id)
    assert wait_for(lambda: len(out.verdicts) >= 2)
    gate.set()
    assert wait_for(lambda: len(out.verdicts) == 4)
    overloaded = [b for b, v in out.verdicts.items() if 'overloaded' in v.message]
    assert len(overloaded) == 2 and pipeline.snapshot()['overloaded'] == 2


def test_stopping_answers_every_bolt_in_flight(make):
    pipeline, out = make()
    bolt(pipeline, 20, skip=(0, 1, 2, 3))        # triggered, no view yet
    pipeline.stop('classifier deactivated')
    assert 'classifier deactivated' in out.verdicts['20'].message
    assert not out.verdicts['20'].ok
    bolt(pipeline, 21)                           # stopped: inputs are ignored
    assert '21' not in out.verdicts


def test_an_inference_error_is_ng_with_the_reason_and_the_worker_carries_on(make):
    class Broken(FakeInspector):
        def inspect(self, views, failures=None):
            raise RuntimeError('graph exploded')
    pipeline, out = make(Broken())
    bolt(pipeline, 30)
    assert wait_for(lambda: '30' in out.verdicts)
    assert out.verdicts['30'].message.startswith('NG') and 'RuntimeError' in \
        out.verdicts['30'].message
    assert pipeline.working() and pipeline.snapshot()['errors'] == 1


def test_slow_pictures_never_delay_verdicts_and_drop_the_oldest(make):
    out = Recorder(images=True, image_delay_s=0.3)
    pipeline, _ = make(output=out, queue_size=8)
    for bolt_id in range(40, 45):
        bolt(pipeline, bolt_id)
    # Five verdicts long before five pictures could have been drawn (0.3 s each).
    assert wait_for(lambda: len(out.verdicts) == 5, timeout=1.0)
    assert wait_for(lambda: out.rendered and out.rendered[-1] == '44', timeout=3.0)
    assert pipeline.images_dropped >= 1
    assert len(out.rendered) + pipeline.images_dropped == 5


def test_a_worker_stuck_on_one_bolt_is_not_working(make):
    gate = threading.Event()
    pipeline, out = make(FakeInspector(gate=gate), stall_s=0.2)
    assert pipeline.working()
    bolt(pipeline, 50)
    assert wait_for(lambda: not pipeline.working(), timeout=2.0)
    gate.set()
    assert wait_for(lambda: '50' in out.verdicts) and wait_for(pipeline.working)


def test_settings_refuse_what_cannot_work():
    with pytest.raises(ValueError, match='cams'):
        PipelineSettings(cams=())
    with pytest.raises(ValueError, match='view_timeout_s'):
        PipelineSettings(view_timeout_s=0.0)
    with pytest.raises(ValueError, match='queue_size'):
        PipelineSettings(queue_size=0)


def test_a_fault_after_the_verdict_never_sends_a_second_one(make):
    class NoPictures(Recorder):
        def wants_images(self):
            raise RuntimeError('parameter store gone')
    pipeline, out = make(output=NoPictures())
    bolt(pipeline, 60)
    assert wait_for(lambda: any('no pictures' in text for _, text in out.logs))
    assert out.verdicts['60'].ok and pipeline.snapshot()['verdicts'] == 1


def test_classifier_params_refuse_in_one_line_what_a_descriptor_cannot():
    from bolt_inspection.core.errors import ConfigError
    from bolt_inspection.nodes.classifier_params import ClassifierParams

    params = ClassifierParams.from_mapping({'model': 'm', 'cams': [0, 1], 'frame_size': [0, 0],
                                            'unknown_extra': 1})
    assert params.cams == (0, 1) and params.frame_size is None
    assert params.pipeline_settings().cams == (0, 1)
    assert params.camera_topics() == {0: '/cam0/image_raw', 1: '/cam1/image_raw'}
    for changes, words in (({'model': ''}, 'no model'),
                           ({'image_reliability': 'sometimes'}, 'image_reliability'),
                           ({'drift_policy': 'panic'}, 'drift_policy'),
                           ({'engine': 'gpu'}, 'engine'),
                           ({'camera_topic': '/cam/image'}, 'camera_topic'),
                           ({'queue_size': 0}, 'queue_size')):
        with pytest.raises(ConfigError, match=words) as info:
            ClassifierParams.from_mapping({'model': 'm', **changes})
        assert '\n' not in str(info.value)
    assert params.with_values(view_timeout_s=0.5).view_timeout_s == 0.5
    with pytest.raises(ConfigError, match='read-only'):
        params.with_values(cams=(0,))
    with pytest.raises(ConfigError, match='view_timeout_s'):
        params.with_values(view_timeout_s=0.0)


def test_a_view_after_the_timeout_is_reported_as_late_not_lost(make):
    """The bolt goes NG 'missing view' at the timeout; the frame that comes afterwards is logged
    with its delay, so an operator can tell a slow camera or transport from a lost frame."""
    pipeline, out = make()
    bolt(pipeline, 5, skip=(3,))
    time.sleep(0.25)                     # past the 0.2-s view timeout
    pipeline.expire(time.monotonic())
    assert wait_for(lambda: '5' in out.verdicts)
    assert out.verdicts['5'].reasons[0] == 'missing view cam3'
    pipeline.view(5_000_000_000, 3, time.monotonic(), image=np.zeros((8, 8, 3), np.uint8))
    [(level, text)] = [entry for entry in out.logs if 'cam3 frame arrived' in entry[1]]
    assert level == 'warning' and text.startswith('bolt 5: cam3 frame arrived ')
    assert 'past the view timeout 0.20 s' in text
