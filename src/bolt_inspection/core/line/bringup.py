"""Ordered bring-up of the line's lifecycle nodes: what to do next, given their states.

The line must come up in order — listeners, then the classifier, then the cameras, then the PLC
bridge — because the bridge starts turning the PLC's bolt counter into triggers as soon as it is
active: a bolt triggered before the cameras and the classifier listen would be rejected for a
missing view. :func:`next_step` is the rule the ``lifecycle_manager`` node applies on every pass
(nav2's lifecycle manager does the same for a robot's stack); it is pure so it is tested here.

States are the ROS 2 lifecycle primary-state labels (``unconfigured``, ``inactive``, ``active``,
``finalized``) or None for a node that does not answer (not started yet, or dead).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# The transition that moves a node from this state towards 'active'.
_FORWARD = {'unconfigured': 'configure', 'inactive': 'activate'}


@dataclass(frozen=True)
class Step:
    """What the manager does next.

    Attributes:
        node: The node concerned.
        action: ``'configure'`` / ``'activate'`` (request that transition), ``'wait'`` (the
            node does not answer yet: ask again later) or ``'blocked'`` (the node is finalized
            or in an error state: nothing after it may start; a person must act).
    """

    node: str
    action: str


def next_step(order: Sequence[str], states: Mapping[str, str | None]) -> Step | None:
    """The next bring-up step, or None when every node is active.

    Nodes are taken strictly in ``order``: the first one that is not active decides, so a
    later node is never activated before an earlier one is (a failing camera keeps the PLC bridge
    from triggering bolts nobody can inspect).

    Args:
        order: Node names in bring-up order.
        states: Node name -> primary state label, or None when the node does not answer.
    """
    for name in order:
        state = states.get(name)
        if state == 'active':
            continue
        if state is None:
            return Step(name, 'wait')
        if state in _FORWARD:
            return Step(name, _FORWARD[state])
        return Step(name, 'blocked')
    return None


def health(order: Sequence[str], states: Mapping[str, str | None]) -> tuple[bool, str]:
    """Whether the line is fully up, and a one-line summary for diagnostics and people.

    Returns:
        ``(all_active, message)``; the message names every node that is not active.
    """
    behind = [f'{name} {states.get(name) or "not answering"}' for name in order
              if states.get(name) != 'active']
    if not behind:
        return True, f'all {len(order)} nodes active'
    return False, 'not active: ' + ', '.join(behind)
