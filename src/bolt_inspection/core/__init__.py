"""Everything the product decides, in pure Python (numpy / OpenCV / TensorFlow, no rclpy).

Nodes in :mod:`bolt_inspection.nodes` only convert messages, hold parameters and call into here.
"""
