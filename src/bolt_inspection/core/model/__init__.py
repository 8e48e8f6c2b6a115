"""The network and what runs it: Keras in one place (``keras_backend``), the VGG16 / small CNN
builders (``network``, ``layers``), pretrained weights (``weights``), model artifacts on disk
(``artifact``), Grad-CAM (``gradcam``), inference engines and their export (``engine``,
``export``) and NG threshold calibration (``threshold``).

May import: ``core.vision`` and the core's shared modules.
"""
