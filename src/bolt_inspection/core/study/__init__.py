"""Offline work on models: training (``train``), evaluation with Table 2 metrics and Grad-CAM
localisation (``evaluate``, ``figures``), the paper's reproduction (``reproduce``) and the camera
drift study (``robustness``).

May import: ``core.model``, ``core.vision``, ``core.line`` and the core's shared modules.
"""
