"""Images and where they come from: the synthetic bolt rig (``synth``), camera sources (files,
devices, the synthetic rig: ``camera_source``), labelled view datasets on disk (``dataset``),
the thread ROI (``roi``) and camera drift statistics (``drift``).

May import: the core's shared modules (``errors``, ``config``, ``files``). Nothing else in core.
"""
