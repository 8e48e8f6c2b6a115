"""The classifier node's parameters as one validated value (no rclpy: unit-tested without ROS).

The node declares each parameter with its description and range (``classifier_node``); at
``configure`` it builds :class:`ClassifierParams` from their values, which checks what a
descriptor cannot (a choice among names, a model to load, frame sizes) and raises
:class:`~bolt_inspection.core.errors.ConfigError` with one line naming the parameter. The node
then reads typed attributes instead of a dict, and hands the pipeline and the drift monitor
their own settings from here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bolt_inspection.core.errors import ConfigError
from bolt_inspection.core.line.pipeline import PipelineSettings
from bolt_inspection.core.model.engine import ENGINE_CHOICES
from bolt_inspection.core.vision.drift import DRIFT_POLICIES, DriftBands

IMAGE_RELIABILITIES = ('reliable', 'best_effort')
#: Parameters that may change while the node runs (the others are read-only).
DYNAMIC = ('model', 'view_timeout_s', 'publish_gradcam', 'publish_heatmaps')


@dataclass(frozen=True)
class ClassifierParams:
    """Every parameter of the classifier node (see ``classifier_node`` for what each means)."""

    model: str = ''
    camera_config: str = ''
    cams: tuple[int, ...] = (0, 1, 2, 3)
    camera_topic: str = '/cam{}/image_raw'
    trigger_topic: str = '/line/trigger'
    view_timeout_s: float = 0.8
    queue_size: int = 4
    max_pending: int = 64
    frame_size: tuple[int, int] | None = None
    publish_gradcam: bool = True
    publish_heatmaps: bool = False
    image_reliability: str = 'reliable'
    diagnostics_period_s: float = 1.0
    drift_policy: str = 'reject'
    drift_window: int = 8
    drift_warn_z: float = 5.0
    drift_error_z: float = 8.0
    drift_warn_shift: float = 0.01
    drift_error_shift: float = 0.015
    stall_s: float = 5.0
    engine: str = 'auto'

    def __post_init__(self) -> None:
        for name, value, choices in (('image_reliability', self.image_reliability,
                                      IMAGE_RELIABILITIES),
                                     ('drift_policy', self.drift_policy, DRIFT_POLICIES),
                                     ('engine', self.engine, ENGINE_CHOICES)):
            if value not in choices:
                raise ConfigError(f'{name} {value!r}: expected one of {", ".join(choices)}')
        if not self.model:
            raise ConfigError('no model: set the "model" parameter to an artifact directory '
                              '(bolt-inspection train --out DIR)')
        if '{}' not in self.camera_topic:
            raise ConfigError(f'camera_topic {self.camera_topic!r}: needs {{}} for the camera '
                              'index')
        try:
            self.pipeline_settings()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ClassifierParams:
        """From the declared parameters' values; ``frame_size`` [0, 0] means any size.

        Raises:
            ConfigError: A value the node cannot run with (one line, naming the parameter).
        """
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in known}
        if 'cams' in kwargs:
            kwargs['cams'] = tuple(int(c) for c in kwargs['cams'])
        if 'frame_size' in kwargs:
            size = [int(v) for v in kwargs['frame_size']]
            kwargs['frame_size'] = tuple(size) if len(size) == 2 and min(size) > 0 else None
        return cls(**kwargs)

    def with_values(self, **changes: Any) -> ClassifierParams:
        """A copy with dynamic parameters changed (validated again)."""
        bad = sorted(set(changes) - set(DYNAMIC))
        if bad:
            raise ConfigError(f'read-only parameter(s): {", ".join(bad)}')
        return dataclasses.replace(self, **changes)

    def pipeline_settings(self) -> PipelineSettings:
        return PipelineSettings(cams=self.cams, view_timeout_s=self.view_timeout_s,
                                queue_size=self.queue_size, max_pending=self.max_pending,
                                stall_s=self.stall_s)

    def drift_bands(self) -> DriftBands:
        return DriftBands(window=self.drift_window, warn_z=self.drift_warn_z,
                          error_z=self.drift_error_z, warn_shift=self.drift_warn_shift,
                          error_shift=self.drift_error_shift)

    def camera_topics(self) -> dict[int, str]:
        """Camera index -> its image topic."""
        return {cam: self.camera_topic.format(cam) for cam in self.cams}
