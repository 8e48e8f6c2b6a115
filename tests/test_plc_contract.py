"""The PLC register contract: config validation and the pure encoding (no sockets)."""

from __future__ import annotations

import pytest
import yaml

from bolt_inspection.core.config import load_yaml
from bolt_inspection.core.errors import ConfigError
from bolt_inspection.core.plc.contract import (
    PlcConfig,
    counter_delta,
    decode_status,
    decode_verdict,
    default_config_path,
    encode_status,
    encode_verdict,
    load_plc_config,
    parse_plc_config,
)


def shipped_params() -> dict:
    return load_yaml(default_config_path())['plc_bridge']['ros__parameters']


def write_config(tmp_path, **changes) -> str:
    """plc.yaml with dotted ``changes`` applied (``registers.status=9``); None deletes."""
    data = load_yaml(default_config_path())
    params = data['plc_bridge']['ros__parameters']
    for key, value in changes.items():
        node = params
        *path, last = key.split('.')
        for part in path:
            node = node[part]
        if value is None:
            del node[last]
        else:
            node[last] = value
    path = tmp_path / 'plc.yaml'
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_shipped_config_loads_with_one_based_wire_addresses():
    plc, sim = load_plc_config()
    assert isinstance(plc, PlcConfig)
    assert plc.addressing == 1
    # 1-based register numbers: register 1 is wire address 0.
    assert plc.registers['bolt_counter'] == plc.numbers['registers.bolt_counter'] - 1
    assert plc.registers['verdict_code'] == plc.registers['verdict_bolt_id'] + 1
    assert plc.host == '127.0.0.1'
    assert sim.rate_per_min > 0 and sim.gate_delay_s >= 0


def test_zero_based_addressing_uses_numbers_as_wire_addresses(tmp_path):
    plc, _ = load_plc_config(write_config(tmp_path, addressing=0))
    assert plc.registers['bolt_counter'] == shipped_params()['registers']['bolt_counter']
    assert plc.coils['conveyor_run'] == shipped_params()['coils']['conveyor_run']


def test_to_params_round_trips():
    plc, _ = load_plc_config()
    assert parse_plc_config(plc.to_params()) == plc


@pytest.mark.parametrize(('changes', 'key', 'why'), [
    ({'registers.status': -1}, 'registers.status', 'out of range'),
    ({'registers.status': 65537}, 'registers.status', 'out of range'),
    ({'registers.status': 'five'}, 'registers.status', 'whole number'),
    ({'registers.status': 5.5}, 'registers.status', 'whole number'),
    ({'registers.status': True}, 'registers.status', 'whole number'),
    ({'registers.pass_count': 1}, 'registers.pass_count', 'overlaps registers.bolt_counter'),
    ({'registers.verdict_code': 9}, 'registers.verdict_code', 'verdict_bolt_id + 1'),
    ({'registers.heartbeat': None}, 'registers.heartbeat', 'missing'),
    ({'port': 'http'}, 'port', 'expected a number'),
    ({'port': 70000}, 'port', 'out of range'),
    ({'timeout_s': 0}, 'timeout_s', 'out of range'),
    ({'addressing': 2}, 'addressing', 'expected 0'),
    ({'host': ''}, 'host', 'non-empty string'),
    ({'pol_period_s': 0.1}, 'pol_period_s', 'unknown PLC setting'),
])
def test_bad_config_gives_one_error_naming_the_key(tmp_path, changes, key, why):
    path = write_config(tmp_path, **changes)
    with pytest.raises(ConfigError) as err:
        load_plc_config(path)
    message = str(err.value)
    assert '\n' not in message
    assert message.startswith(f'{path}: {key}:')
    assert why in message


def test_address_65535_is_valid_zero_based_but_65536_only_one_based(tmp_path):
    plc, _ = load_plc_config(write_config(tmp_path, **{'registers.reject_count': 65536}))
    assert plc.registers['reject_count'] == 65535
    with pytest.raises(ConfigError, match='registers.reject_count: address 65536 out of range '
                                          '0..65535'):
        load_plc_config(write_config(tmp_path, addressing=0,
                                     **{'registers.reject_count': 65536}))


def test_coils_and_registers_live_in_separate_spaces(tmp_path):
    # Coil 1 and holding register 1 are different objects on a PLC: not an overlap.
    plc, _ = load_plc_config(write_config(tmp_path, **{'coils.conveyor_run': 1}))
    assert plc.coils['conveyor_run'] == plc.registers['bolt_counter'] == 0


def test_simulator_settings_are_validated(tmp_path):
    data = load_yaml(default_config_path())
    data['plc_sim']['ros__parameters']['rate_per_min'] = -3
    path = tmp_path / 'plc.yaml'
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match='rate_per_min: -3.0 out of range'):
        load_plc_config(path)


def test_overrides_replace_file_values():
    plc, sim = load_plc_config(overrides={'port': 1502, 'plc_sim.rate_per_min': 120})
    assert plc.port == 1502 and sim.rate_per_min == 120.0


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match='no such configuration file'):
        load_plc_config(tmp_path / 'nope.yaml')


def test_counter_delta_wraps_at_65536():
    assert counter_delta(10, 11) == 1
    assert counter_delta(65535, 0) == 1
    assert counter_delta(65534, 2) == 4
    assert counter_delta(7, 7) == 0
    assert counter_delta(10, 3) == 65529   # a decrease looks like a huge jump


def test_verdict_encoding():
    assert encode_verdict(42, 1) == [42, 1]
    assert encode_verdict(65536 + 5, 2) == [5, 2]   # only the low 16 bits fit the register
    assert decode_verdict([5, 2]) == (5, 2)
    for bad in (0, 3):
        with pytest.raises(ValueError):
            encode_verdict(1, bad)
    with pytest.raises(ValueError):
        decode_verdict([1, 7])
    with pytest.raises(ValueError):
        encode_verdict(-1, 1)


def test_status_bits_round_trip():
    assert encode_status() == 0
    word = encode_status(running=True, done=True)
    assert word == 0b1001
    assert decode_status(word) == {'running': True, 'heartbeat_stale': False,
                                   'failsafe_reject': False, 'done': True}
    assert decode_status(0xFFF0) == dict.fromkeys(decode_status(0), False)
