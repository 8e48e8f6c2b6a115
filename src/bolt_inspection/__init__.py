"""bolt_inspection: screening of anti-loosening-coated bolts (after Noh & Hong 2022)."""

__version__ = '0.1.0'
