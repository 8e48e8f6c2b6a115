"""The PLC side: the register map and rules both ends agree on (``contract``), the bridge's
verdict bookkeeping (``bridge``), the Modbus client and its worker (``link``), the rule behind
the heartbeat, "the inspection path is alive" (``liveness``), the simulated PLC's conveyor model
(``sim``) and the real Modbus TCP server around it (``server``, pymodbus).

May import: ``core.vision`` (the simulator knows each bolt's ground truth) and the core's
shared modules.
"""
