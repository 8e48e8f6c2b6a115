"""Thin rclpy adapters: convert messages, hold parameters, call :mod:`bolt_inspection.core`."""
