"""Operator HMI: a web page with the latest bolt, counters, health, history and Start/Stop.

:mod:`.state` (pure, thread-safe) holds what the page shows; :mod:`.app` is the aiohttp app over
an injected state provider and control callbacks, plus a server thread to run it beside rclpy.
Importing this package does not import aiohttp; import :mod:`.app` for that.
"""
