"""One bolt through the line, without ROS: joining its four views (``join``), the inspection
pipeline with its worker threads (``pipeline``), inspecting the views with a model
(``inspector``), fusing them into a verdict (``fusion``), the verdict's wire codec and its one
rule for OK (``verdict``), the lifecycle bring-up order (``bringup``) and latency statistics
(``latency``).

May import: ``core.model``, ``core.vision`` and the core's shared modules.
"""
