"""Is the inspection path alive? The rule behind the PLC heartbeat.

The heartbeat the PC writes to the PLC means "the inspection path is alive": cameras, classifier
and bridge all making progress. The PLC stops the conveyor when it goes stale, so a dead or
stalled stage must stop the heartbeat — a bridge that kept beating from its own timer while the
classifier was dead let the conveyor carry bolts past a blind line.

:class:`PathWatchdog` decides from two kinds of evidence:

* **signs of life** — every required stage (the classifier, each camera) reports on
  ``/inspection/alive`` every fraction of a second, and only while it can do its job (the
  classifier's worker is running and not stuck on one bolt; the camera's source is open). A
  stage silent for ``stage_timeout_s`` is dead or stalled.
* **progress** — every bolt the bridge triggered must get its verdict within
  ``verdict_timeout_s``. A bolt that does not is overdue: the path is stalled somewhere the
  signs of life do not see (a lost subscription, a wedged callback).
* **reach** — when the caller reports it (:meth:`PathWatchdog.listeners`), the trigger
  publisher has matched a subscription for every stage. DDS matches the two ends of a topic
  separately: a stage that hears the trigger publisher may not be matched by it yet, and a
  trigger published in that moment never reaches the stage (its bolt goes NG, missing views).

The bridge asks :meth:`PathWatchdog.check` on every heartbeat: while the path is not alive it
writes no heartbeat and asks the PLC to stop the conveyor, and rejects the bolts in flight (the
overdue ones and those still waiting), so none of them passes the gate uninspected.

Pure: times are the caller's monotonic seconds; no ROS, no sockets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class PathHealth:
    """One verdict of the watchdog.

    Attributes:
        alive: Every stage reported recently and no bolt is overdue.
        reason: Why not, in words an operator reads ('' when alive).
        overdue: Bolts triggered more than ``verdict_timeout_s`` ago with no verdict; the
            watchdog forgets them once reported (the caller rejects them).
    """

    alive: bool
    reason: str = ''
    overdue: tuple[int, ...] = ()


class PathWatchdog:
    """Tracks signs of life of the inspection stages and the verdict of every triggered bolt.

    Args:
        stages: Names of the stages that must report (``classifier``, ``cam0`` ...).
        stage_timeout_s: A stage silent for longer is dead or stalled.
        verdict_timeout_s: A triggered bolt without a verdict for longer is overdue.

    Raises:
        ValueError: A non-positive timeout.
    """

    def __init__(self, stages: Iterable[str], stage_timeout_s: float = 0.75,
                 verdict_timeout_s: float = 3.0) -> None:
        if not stage_timeout_s > 0 or not verdict_timeout_s > 0:
            raise ValueError('stage_timeout_s and verdict_timeout_s must be > 0, got '
                             f'{stage_timeout_s} and {verdict_timeout_s}')
        self.stages = tuple(dict.fromkeys(str(s) for s in stages))
        self.stage_timeout_s = float(stage_timeout_s)
        self.verdict_timeout_s = float(verdict_timeout_s)
        self._last: dict[str, float] = {}
        self._pending: dict[int, float] = {}   # bolt id -> trigger time, oldest first
        self._listeners: int | None = None     # trigger subscriptions matched; None = unknown

    def beat(self, stage: str, now: float) -> bool:
        """A sign of life from ``stage``; False (ignored) for a stage that is not required."""
        if stage not in self.stages:
            return False
        self._last[stage] = now
        return True

    def listeners(self, matched: int) -> None:
        """The trigger publisher has matched ``matched`` subscriptions; the path needs one per
        stage (a camera or classifier the trigger cannot reach yet would miss the bolt)."""
        self._listeners = int(matched)

    def triggered(self, bolt_id: int, now: float) -> None:
        """The bridge triggered ``bolt_id``: its verdict is due within ``verdict_timeout_s``."""
        self._pending.setdefault(int(bolt_id), now)

    def answered(self, bolt_id: int) -> None:
        """The verdict of ``bolt_id`` arrived."""
        self._pending.pop(int(bolt_id), None)

    def in_flight(self) -> list[int]:
        """Bolts triggered and not answered yet, oldest first."""
        return list(self._pending)

    def forget_in_flight(self) -> list[int]:
        """Hand over every bolt still waiting (the caller rejects them) and forget them."""
        bolts, self._pending = list(self._pending), {}
        return bolts

    def silent_stages(self, now: float) -> list[tuple[str, float | None]]:
        """Stages past their timeout: ``(name, seconds silent)``, None if never heard."""
        out = []
        for stage in self.stages:
            last = self._last.get(stage)
            if last is None:
                out.append((stage, None))
            elif now - last > self.stage_timeout_s:
                out.append((stage, now - last))
        return out

    def check(self, now: float) -> PathHealth:
        """Decide whether the path is alive now; overdue bolts are reported once."""
        reasons = []
        for stage, silent in self.silent_stages(now):
            reasons.append(f'no sign of life from {stage}' if silent is None
                           else f'{stage} silent for {silent:.1f} s')
        if self._listeners is not None and self._listeners < len(self.stages):
            reasons.append(f'the trigger reaches {self._listeners} of {len(self.stages)} stages')
        overdue = tuple(b for b, t in self._pending.items() if now - t > self.verdict_timeout_s)
        for bolt in overdue:
            del self._pending[bolt]
        if overdue:
            ids = ', '.join(str(b) for b in overdue[:5]) + (' ...' if len(overdue) > 5 else '')
            reasons.append(f'no verdict within {self.verdict_timeout_s:g} s for bolt '
                           f'{ids}')
        return PathHealth(alive=not reasons, reason='; '.join(reasons), overdue=overdue)
