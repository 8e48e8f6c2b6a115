"""One bolt through the line, without ROS: joining its four views (``join``), inspecting them
with a model (``inspector``), fusing the views into a verdict (``fusion``), the verdict's wire
codec and its one rule for OK (``verdict``), the inspection path's liveness (``liveness``), the
lifecycle bring-up order (``bringup``) and latency statistics (``latency``).

May import: ``core.model``, ``core.vision`` and the core's shared modules.
"""
