"""Running the line: the composed single process and the one-process-per-node shape.

:mod:`bolt_inspection.runtime.processes` starts the line the way ``ros2 launch`` does (one
process per node, from the installed executables, with launch_ros's command lines), for the
multi-process test tier, the bench and ``bolt-inspection line --processes`` on machines without
launch_ros. Imports flow one way: commands -> runtime -> nodes -> core.
"""
