"""core.line.bringup: the lifecycle manager's rule, strictly in order, never past a failing
node."""

from __future__ import annotations

from bolt_inspection.core.line.bringup import Step, health, next_step

ORDER = ['classifier', 'cam0', 'cam1', 'plc_bridge']


def test_brings_nodes_up_one_at_a_time_in_order():
    states = dict.fromkeys(ORDER, 'unconfigured')
    seen = []
    while (step := next_step(ORDER, states)) is not None:
        seen.append((step.node, step.action))
        states[step.node] = {'configure': 'inactive', 'activate': 'active'}[step.action]
    assert seen == [(n, a) for n in ORDER for a in ('configure', 'activate')]
    assert health(ORDER, states) == (True, 'all 4 nodes active')


def test_a_node_that_does_not_answer_or_is_finalized_holds_back_the_rest():
    states = {'classifier': 'active', 'cam0': None, 'cam1': 'unconfigured',
              'plc_bridge': 'unconfigured'}
    assert next_step(ORDER, states) == Step('cam0', 'wait')
    states['cam0'] = 'finalized'
    assert next_step(ORDER, states) == Step('cam0', 'blocked')
    ok, message = health(ORDER, states)
    assert not ok and message == ('not active: cam0 finalized, cam1 unconfigured, '
                                  'plc_bridge unconfigured')


def test_a_node_that_fell_back_is_brought_up_again_before_later_ones():
    states = dict.fromkeys(ORDER, 'active')
    states['cam1'] = 'inactive'            # someone deactivated it, or it restarted
    states['plc_bridge'] = 'unconfigured'
    assert next_step(ORDER, states) == Step('cam1', 'activate')
    states['cam1'] = None                  # its process died
    assert next_step(ORDER, states) == Step('cam1', 'wait')
    assert health(ORDER, states)[1] == 'not active: cam1 not answering, plc_bridge unconfigured'
