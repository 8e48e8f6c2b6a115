"""The PC <-> PLC Modbus TCP contract: register map, validation, and pure encode/decode.

The address map lives in ``config/plc.yaml`` (the ``plc_bridge`` params block) and is read by
both the bridge node and the line simulator, so there is one source of truth. This module turns
that block into a validated :class:`PlcConfig` with *wire* (0-based) addresses, and holds the
pure encoding of every register: the wrapping bolt counter, the verdict pair, the status bits.
Nothing here opens a socket.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bolt_inspection.core.config import flatten, load_yaml, node_parameters
from bolt_inspection.core.errors import ConfigError

#: Registers are 16 bit: the counter, bolt id and tallies wrap here.
REGISTER_MODULO = 65536

#: Verdict codes written to ``verdict_code``.
VERDICT_OK = 1
VERDICT_NG = 2
VERDICT_CODES = {VERDICT_OK: 'OK', VERDICT_NG: 'NG'}

#: Bits of the ``status`` register (PLC -> PC).
STATUS_RUNNING = 1 << 0
STATUS_HEARTBEAT_STALE = 1 << 1
STATUS_FAILSAFE_REJECT = 1 << 2
STATUS_DONE = 1 << 3
STATUS_BITS = {
    'running': STATUS_RUNNING,
    'heartbeat_stale': STATUS_HEARTBEAT_STALE,
    'failsafe_reject': STATUS_FAILSAFE_REJECT,
    'done': STATUS_DONE,
}

#: Holding registers of the contract, in the order they are documented.
REGISTER_KEYS = ('bolt_counter', 'verdict_bolt_id', 'verdict_code', 'heartbeat', 'status',
                 'pass_count', 'reject_count')
#: Registers only the PLC writes (the simulator refuses PC writes to them).
PLC_OWNED_REGISTERS = ('bolt_counter', 'status', 'pass_count', 'reject_count')
COIL_KEYS = ('conveyor_run',)

# Connection settings: key -> (type, minimum, maximum); None = unbounded.
_SETTINGS: dict[str, tuple[type, float | None, float | None]] = {
    'host': (str, None, None),
    'port': (int, 1, 65535),
    'unit_id': (int, 0, 247),
    'timeout_s': (float, 0.001, 60.0),
    'poll_period_s': (float, 0.001, 10.0),
    'heartbeat_period_s': (float, 0.01, 60.0),
    'status_period_s': (float, 0.01, 60.0),
    'reconnect_min_s': (float, 0.001, 60.0),
    'reconnect_max_s': (float, 0.001, 600.0),
    'verdict_retries': (int, 0, 100),
    'verdict_max_age_s': (float, 0.0, 3600.0),
    'max_counter_jump': (int, 1, REGISTER_MODULO // 2),
}

_SIM_SETTINGS: dict[str, tuple[type, float | None, float | None]] = {
    'rate_per_min': (float, 0.001, 100000.0),
    'gate_delay_s': (float, 0.0, 3600.0),
    'heartbeat_timeout_s': (float, 0.0, 3600.0),
    'seed': (int, 0, None),
    'defect_rate': (float, 0.0, 1.0),
    'bolts': (int, 0, None),
    'summary_period_s': (float, 0.0, 3600.0),
}


@dataclass(frozen=True)
class PlcConfig:
    """The validated connection settings and address map.

    Attributes:
        host, port, unit_id: Where the PLC is and which Modbus unit id to address.
        timeout_s: Connect and per-request response timeout.
        poll_period_s: ``bolt_counter`` poll period.
        heartbeat_period_s: Heartbeat write period.
        status_period_s: Status / tallies / conveyor coil read period.
        reconnect_min_s, reconnect_max_s: Reconnect backoff bounds.
        verdict_retries: Extra attempts after a verdict write is answered with an exception.
        verdict_max_age_s: Verdicts older than this are not written after an outage.
        max_counter_jump: A larger forward counter jump is treated as a PLC restart.
        addressing: 0 or 1: how the configured numbers map to wire addresses.
        registers: Holding register key -> 0-based wire address.
        coils: Coil key -> 0-based wire address.
        numbers: Every address key (``registers.x`` / ``coils.x``) -> the number as configured,
            for messages in the PLC programmer's terms.
    """

    host: str = '127.0.0.1'
    port: int = 5020
    unit_id: int = 1
    timeout_s: float = 0.5
    poll_period_s: float = 0.02
    heartbeat_period_s: float = 0.5
    status_period_s: float = 0.5
    reconnect_min_s: float = 0.2
    reconnect_max_s: float = 5.0
    verdict_retries: int = 2
    verdict_max_age_s: float = 5.0
    max_counter_jump: int = 1000
    addressing: int = 1
    registers: dict[str, int] = field(default_factory=dict)
    coils: dict[str, int] = field(default_factory=dict)
    numbers: dict[str, int] = field(default_factory=dict)

    def to_params(self) -> dict[str, Any]:
        """Return the flat ROS parameter mapping (``registers.x`` keys) of this config."""
        params: dict[str, Any] = {key: getattr(self, key) for key in _SETTINGS}
        params['addressing'] = self.addressing
        params.update(self.numbers)
        return params


@dataclass(frozen=True)
class SimConfig:
    """Settings of the conveyor model (the ``plc_sim`` block)."""

    rate_per_min: float = 60.0
    gate_delay_s: float = 2.0
    heartbeat_timeout_s: float = 2.0
    seed: int = 0
    defect_rate: float = 0.5
    bolts: int = 0
    summary_period_s: float = 5.0


def _typed(key: str, value: Any, kind: type, low, high, where: str):
    # bool is an int subclass; a YAML `yes` where a number belongs is a mistake, not 1.
    if kind is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(f'{where}{key}: expected a non-empty string, got {value!r}')
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f'{where}{key}: expected a number, got {value!r}')
    if kind is int:
        if isinstance(value, float):
            if not value.is_integer():
                raise ConfigError(f'{where}{key}: expected a whole number, got {value!r}')
            value = int(value)
    else:
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f'{where}{key}: expected a finite number, got {value!r}')
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f'{low if low is not None else "-inf"}..{high if high is not None else "inf"}'
        raise ConfigError(f'{where}{key}: {value} out of range {bounds}')
    return value


def _address(key: str, value: Any, addressing: int, where: str) -> int:
    low, high = addressing, REGISTER_MODULO - 1 + addressing
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ConfigError(f'{where}{key}: address must be a whole number, got {value!r}')
    if not low <= value <= high:
        raise ConfigError(
            f'{where}{key}: address {value} out of range {low}..{high} '
            f'(addressing: {addressing})')
    return value - addressing


def parse_plc_config(params: dict[str, Any], where: str = '') -> PlcConfig:
    """Validate a ``plc_bridge`` parameter mapping (nested or dotted keys).

    Args:
        params: The ``ros__parameters`` of ``plc_bridge``; missing keys keep the defaults of
            :class:`PlcConfig` except addresses, which are all required.
        where: Prefix for error messages, e.g. ``'config/plc.yaml: '``.

    Returns:
        The validated config with 0-based wire addresses.

    Raises:
        ConfigError: One line naming the first offending key: an unknown key, a wrong type,
            a value out of range, an address outside the 16-bit space, two addresses that
            overlap, or a verdict pair that is not adjacent.
    """
    flat = flatten(params)
    known = set(_SETTINGS) | {'addressing'} | {f'registers.{k}' for k in REGISTER_KEYS} \
        | {f'coils.{k}' for k in COIL_KEYS}
    for key in flat:
        if key not in known:
            raise ConfigError(f'{where}{key}: unknown PLC setting (expected one of '
                              f'{", ".join(sorted(known))})')
    values: dict[str, Any] = {}
    for key, (kind, low, high) in _SETTINGS.items():
        if key in flat:
            values[key] = _typed(key, flat[key], kind, low, high, where)
    addressing = flat.get('addressing', 1)
    if isinstance(addressing, bool) or addressing not in (0, 1):
        raise ConfigError(f'{where}addressing: expected 0 (wire addresses) or 1 (1-based '
                          f'register numbers), got {addressing!r}')
    registers: dict[str, int] = {}
    coils: dict[str, int] = {}
    numbers: dict[str, int] = {}
    for group, keys, out in (('registers', REGISTER_KEYS, registers),
                             ('coils', COIL_KEYS, coils)):
        seen: dict[int, str] = {}
        for name in keys:
            key = f'{group}.{name}'
            if key not in flat:
                raise ConfigError(f'{where}{key}: missing address')
            wire = _address(key, flat[key], addressing, where)
            if wire in seen:
                raise ConfigError(f'{where}{key}: address {flat[key]} overlaps '
                                  f'{group}.{seen[wire]}')
            seen[wire] = name
            out[name] = wire
            numbers[key] = int(flat[key])
    if registers['verdict_code'] != registers['verdict_bolt_id'] + 1:
        raise ConfigError(
            f'{where}registers.verdict_code: must be registers.verdict_bolt_id + 1 '
            f'({numbers["registers.verdict_bolt_id"] + 1}) so one write_registers request '
            f'writes both, got {numbers["registers.verdict_code"]}')
    config = PlcConfig(addressing=addressing, registers=registers, coils=coils,
                       numbers=numbers, **values)
    if config.reconnect_max_s < config.reconnect_min_s:
        raise ConfigError(f'{where}reconnect_max_s: {config.reconnect_max_s} is below '
                          f'reconnect_min_s {config.reconnect_min_s}')
    return config


def parse_sim_config(params: dict[str, Any], where: str = '') -> SimConfig:
    """Validate the ``plc_sim`` parameter mapping.

    Raises:
        ConfigError: One line naming the offending key.
    """
    values = {}
    for key, value in params.items():
        if key not in _SIM_SETTINGS:
            raise ConfigError(f'{where}{key}: unknown simulator setting (expected one of '
                              f'{", ".join(sorted(_SIM_SETTINGS))})')
        kind, low, high = _SIM_SETTINGS[key]
        values[key] = _typed(key, value, kind, low, high, where)
    return SimConfig(**values)


def default_config_path() -> Path:
    """Return the shipped ``config/plc.yaml``."""
    from bolt_inspection.paths import config_path
    return config_path('plc.yaml')


def load_plc_config(path: str | Path | None = None,
                    overrides: dict[str, Any] | None = None) -> tuple[PlcConfig, SimConfig]:
    """Load and validate ``plc.yaml``.

    Args:
        path: The file; the shipped ``config/plc.yaml`` when omitted.
        overrides: Dotted ``plc_bridge`` keys (``port``, ``registers.status``...) or
            ``plc_sim.<key>`` keys that replace the file's values.

    Returns:
        ``(plc_config, sim_config)``.

    Raises:
        ConfigError: The file is missing or invalid; the message names the file and the key.
    """
    path = Path(path) if path is not None else default_config_path()
    data = load_yaml(path)
    where = f'{path}: '
    bridge = flatten(node_parameters(data, 'plc_bridge'))
    sim = dict(node_parameters(data, 'plc_sim'))
    for key, value in (overrides or {}).items():
        if key.startswith('plc_sim.'):
            sim[key.removeprefix('plc_sim.')] = value
        else:
            bridge[key] = value
    if not bridge:
        raise ConfigError(f'{where}no plc_bridge.ros__parameters block')
    return parse_plc_config(bridge, where), parse_sim_config(sim, where)


# ----------------------------------------------------------------------------------------------
# Encoding of the registers


def wrap16(value: int) -> int:
    """Return ``value`` reduced to a 16-bit register value."""
    return int(value) % REGISTER_MODULO


def counter_delta(previous: int, current: int) -> int:
    """Return how many increments take the counter from ``previous`` to ``current``.

    The counter wraps at 65536, so 65535 -> 2 is 3 increments. The result is in 0..65535; a
    decrease (PLC restart) therefore looks like a huge jump, which the caller bounds.
    """
    return (int(current) - int(previous)) % REGISTER_MODULO


def encode_verdict(bolt_id: int, code: int) -> list[int]:
    """Return the two register values ``[verdict_bolt_id, verdict_code]``.

    Args:
        bolt_id: The bolt number (any non-negative int; the low 16 bits are sent).
        code: :data:`VERDICT_OK` or :data:`VERDICT_NG`.

    Raises:
        ValueError: ``code`` is not a verdict code or ``bolt_id`` is negative.
    """
    if code not in VERDICT_CODES:
        raise ValueError(f'verdict code must be 1 (OK) or 2 (NG), got {code!r}')
    if bolt_id < 0:
        raise ValueError(f'bolt id must be >= 0, got {bolt_id}')
    return [wrap16(bolt_id), int(code)]


def decode_verdict(registers: list[int]) -> tuple[int, int]:
    """Inverse of :func:`encode_verdict`: ``(bolt id low 16 bits, code)``.

    Raises:
        ValueError: Not two registers, or the code is not 1 or 2.
    """
    if len(registers) != 2:
        raise ValueError(f'a verdict is 2 registers, got {len(registers)}')
    bolt, code = int(registers[0]), int(registers[1])
    if code not in VERDICT_CODES:
        raise ValueError(f'verdict code must be 1 (OK) or 2 (NG), got {code}')
    return bolt, code


def verdict_code(ok: bool) -> int:
    """Return the register code of a verdict."""
    return VERDICT_OK if ok else VERDICT_NG


def encode_status(*, running: bool = False, heartbeat_stale: bool = False,
                  failsafe_reject: bool = False, done: bool = False) -> int:
    """Pack the PLC state flags into the ``status`` register."""
    flags = {'running': running, 'heartbeat_stale': heartbeat_stale,
             'failsafe_reject': failsafe_reject, 'done': done}
    return sum(bit for name, bit in STATUS_BITS.items() if flags[name])


def decode_status(word: int) -> dict[str, bool]:
    """Unpack the ``status`` register into named flags (unknown bits are ignored)."""
    return {name: bool(int(word) & bit) for name, bit in STATUS_BITS.items()}
