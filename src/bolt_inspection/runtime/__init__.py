"""Running the line, for ``bolt-inspection line`` / ``demo``, the bench and the tests.

* :mod:`~bolt_inspection.runtime.line` — :class:`LineOptions` and :func:`run_line`: bring the
  line up in one of its modes (closed loop with the PLC simulator, an external PLC, no PLC, a
  bag), run it, summarise it;
* :mod:`~bolt_inspection.runtime.composed` — every node in this process on one executor;
* :mod:`~bolt_inspection.runtime.processes` — one process per node, started the way
  ``ros2 launch`` starts them (launch_ros's command lines);
* :mod:`~bolt_inspection.runtime.summary` — the run's summary, live tally and gate score.

Imports flow one way: commands -> runtime -> nodes -> core.
"""
