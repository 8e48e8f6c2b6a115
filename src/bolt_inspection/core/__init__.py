"""Everything the product decides, in pure Python (numpy / OpenCV / TensorFlow, no rclpy).

Nodes in :mod:`bolt_inspection.nodes` only convert messages, hold parameters and call into here.
One subpackage per domain, each importing only the ones listed before it (enforced by
``tests/test_architecture.py``; see docs/architecture.md):

* the shared ground here: :mod:`errors`, :mod:`config` (YAML), :mod:`files`, :mod:`sysinfo`;
* :mod:`.vision` — images and where they come from;
* :mod:`.model` — the network, its weights, artifacts, Grad-CAM and inference engines;
* :mod:`.line` — one bolt through the line: join, inspect, fuse, the verdict, liveness;
* :mod:`.plc` — the PLC contract, the bridge's bookkeeping, the simulated PLC and its server;
* :mod:`.log` — the inspection log and shift reports;
* :mod:`.study` — training, evaluation, reproduction of the paper and robustness studies.
"""
