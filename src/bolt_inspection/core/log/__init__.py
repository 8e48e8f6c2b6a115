"""The inspection log (SQLite, one row per bolt: ``inspection_log``) and the shift statistics
drawn from it (``shift_report``).

May import: ``core.line`` (the verdict), ``core.vision`` and the core's shared modules.
"""
