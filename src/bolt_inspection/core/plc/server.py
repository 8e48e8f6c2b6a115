"""The line simulator as a real Modbus TCP server (pymodbus) around the pure conveyor model.

:class:`PlcSimulator` runs a pymodbus ``ModbusTcpServer`` on its own asyncio loop in a daemon
thread. The served register map is exactly ``config/plc.yaml``'s: only the configured addresses
exist (anything else answers ILLEGAL ADDRESS, as a PLC with a fixed map does) and the PLC-owned
registers are read-only. Every Modbus request first advances the model to "now", then reads see
the model's counter/status/tallies/coil and writes feed the model (heartbeat, verdict pair,
conveyor coil). A ticker also advances the model between requests, so bolts keep moving and the
gate keeps sorting when no PC is connected.

Used by ``bolt-inspection plc-sim``, by the tests, and in-process by ``bolt-inspection line``::

    sim = PlcSimulator(plc_config, sim_config, port=0).start()
    print(sim.port)          # the bound port
    ...
    sim.stop(); print(sim.summary())
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bolt_inspection.core.errors import PlcError
from bolt_inspection.core.plc.contract import (
    PLC_OWNED_REGISTERS,
    VERDICT_CODES,
    PlcConfig,
    SimConfig,
)
from bolt_inspection.core.plc.sim import ConveyorModel, SortEvent, synthetic_truth

_FC_COILS = (1, 5, 15)
_FC_WRITE = (5, 6, 15, 16, 22, 23)

log = logging.getLogger(__name__)


class PlcSimulator:
    """A simulated line PLC serving the contract over Modbus TCP.

    Args:
        plc: The address map and (default) host/port.
        sim: The conveyor model settings.
        host: Bind address; ``plc.host`` when None. Use 127.0.0.1.
        port: TCP port; ``plc.port`` when None; 0 picks a free port (see :attr:`port`).
        truth: ``bolt id -> 'OK'/'NG'``; 'auto' uses the synthetic scenario of ``sim.seed``
            when ``core.vision.synth`` is available; None scores nothing.
        clock: Monotonic clock in seconds (the model's time base).
        tick_s: How often the model advances between requests.
        on_sort: Called (in the server thread) for every bolt leaving the gate.
    """

    def __init__(self, plc: PlcConfig, sim: SimConfig, *, host: str | None = None,
                 port: int | None = None, truth: Any = 'auto',
                 clock: Callable[[], float] = time.monotonic, tick_s: float = 0.005,
                 on_sort: Callable[[SortEvent], None] | None = None) -> None:
        self.plc = plc
        self.sim = sim
        self.host = host or plc.host
        self.port = plc.port if port is None else int(port)
        if truth == 'auto':
            truth = synthetic_truth(sim.seed, sim.defect_rate)
        self.clock = clock
        self.tick_s = tick_s
        self.on_sort = on_sort
        self.lock = threading.RLock()
        self.model = ConveyorModel(sim, clock(), truth=truth)
        self.requests = 0
        self.exceptions_sent = 0
        self._faults: list[tuple[int, tuple[int, ...]]] = []   # (exception code, fcs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server = None
        self._ticker: asyncio.Task | None = None
        # We report every failure ourselves; pymodbus' own ERROR lines would only duplicate.
        logging.getLogger('pymodbus').setLevel(logging.CRITICAL)

    @classmethod
    def from_config(cls, path: str | Path | None = None, *, host: str | None = None,
                    port: int | None = None, truth: Any = 'auto', **sim_overrides: Any,
                    ) -> PlcSimulator:
        """Build a simulator from ``plc.yaml`` (the shipped one when ``path`` is None).

        ``sim_overrides`` are :class:`SimConfig` fields (``rate_per_min=120``...); None values
        keep the file's. Call :meth:`start` on the result.

        Raises:
            ConfigError: The file or an override is invalid.
        """
        from bolt_inspection.core.plc.contract import load_plc_config
        overrides = {f'plc_sim.{k}': v for k, v in sim_overrides.items() if v is not None}
        plc, sim = load_plc_config(path, overrides)
        return cls(plc, sim, host=host, port=port, truth=truth)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> PlcSimulator:
        """Start the loop thread, the model ticker and the Modbus server; return when listening.

        Raises:
            PlcError: The port cannot be bound.
        """
        if self._thread is not None:
            return self
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name='plc-sim',
                                        daemon=True)
        self._thread.start()
        try:
            self._call(self._start_ticker())
            self.resume()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server and the ticker, and join the thread (idempotent).

        The conveyor stops with the PLC; the model keeps its tally for :meth:`summary`.
        """
        if self._loop is None:
            return
        with self.lock:
            self.model.set_running(False, self.clock())
        if self._thread is not None and self._thread.is_alive():
            try:
                self._call(self._shutdown(), timeout=5.0)
            except Exception as exc:   # still stop the loop; report why the shutdown failed
                log.warning('plc-sim shutdown: %s', exc)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5.0)
        self._loop.close()
        self._loop = None
        self._thread = None

    def suspend(self) -> None:
        """Take the Modbus server down (connections drop) while the conveyor model keeps running.

        This is a communication outage: a pulled cable or a rebooting Ethernet module.
        """
        self._call(self._stop_server())

    def resume(self) -> None:
        """Bring the Modbus server (back) up on the same port.

        Raises:
            PlcError: The port cannot be bound.
        """
        self._call(self._start_server())

    @property
    def serving(self) -> bool:
        """True while the Modbus server accepts connections."""
        return self._server is not None

    def __enter__(self) -> PlcSimulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- in-process API --------------------------------------------------------------------

    def summary(self) -> dict:
        """The model's tally (see :meth:`ConveyorModel.summary`) plus server counters."""
        with self.lock:
            self.model.advance(self.clock())
            out = self.model.summary()
        out.update({'modbus_requests': self.requests, 'modbus_exceptions': self.exceptions_sent,
                    'host': self.host, 'port': self.port})
        return out

    def summary_line(self) -> str:
        with self.lock:
            self.model.advance(self.clock())
            return self.model.summary_line()

    def set_running(self, on: bool) -> None:
        """Press the start (True) or stop (False) button on the simulated panel."""
        with self.lock:
            self.model.set_running(on, self.clock())

    def registers(self) -> dict[str, int]:
        """Snapshot of the PLC-owned registers and the coil, as a PC would read them."""
        with self.lock:
            self.model.advance(self.clock())
            return self.model.registers()

    def inject_exception(self, code: int, function_codes: tuple[int, ...] = (16,),
                         count: int = 1) -> None:
        """Answer the next ``count`` requests with these function codes with exception ``code``.

        For fault tests: e.g. ``inject_exception(6)`` makes the next verdict write DEVICE BUSY.
        """
        with self.lock:
            self._faults.extend([(int(code), tuple(function_codes))] * count)

    def write_summary(self, path: str | Path) -> Path:
        """Write :meth:`summary` as JSON to ``path``."""
        from bolt_inspection.core.files import atomic_output

        path = Path(path)
        text = json.dumps(self.summary(), indent=2) + '\n'
        with atomic_output(path) as tmp:
            tmp.write_text(text, encoding='utf-8')
        return path

    # -- inside the loop -------------------------------------------------------------------

    def _call(self, coro, timeout: float = 10.0):
        if self._loop is None:
            coro.close()
            raise PlcError('plc-sim is not started')
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _start_ticker(self) -> None:
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            with self.lock:
                events = self.model.advance(self.clock())
            if self.on_sort:
                for event in events:
                    self.on_sort(event)
            await asyncio.sleep(self.tick_s)

    async def _start_server(self) -> None:
        if self._server is not None:
            return
        from pymodbus.server import ModbusTcpServer
        server = ModbusTcpServer(self._device(), address=(self.host, self.port))
        try:
            await server.serve_forever(background=True)
        except (OSError, RuntimeError) as exc:
            raise PlcError(f'plc-sim cannot listen on {self.host}:{self.port} (port in use or '
                           f'address not local? {exc})') from None
        sockets = getattr(server.transport, 'sockets', None)
        if sockets:
            self.port = sockets[0].getsockname()[1]
        self._server = server

    async def _stop_server(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()

    async def _shutdown(self) -> None:
        await self._stop_server()
        if self._ticker is not None:
            self._ticker.cancel()

    def _device(self):
        from pymodbus.simulator import DataType, SimData, SimDevice
        regs = self.plc.registers
        hr = [SimData(address, values=0, datatype=DataType.REGISTERS,
                      readonly=name in PLC_OWNED_REGISTERS)
              for name, address in sorted(regs.items(), key=lambda kv: kv[1])]
        # The coil block starts at 0 and spans every configured coil: pymodbus packs coils 16
        # to a register counted from the block start.
        top_coil = max(self.plc.coils.values())
        coils = [SimData(0, count=top_coil + 1, values=False, datatype=DataType.BITS)]
        return SimDevice(
            id=0,   # answer any unit id, as PLC Ethernet modules do
            simdata=(coils, [SimData(0, values=False, datatype=DataType.BITS)], hr,
                     [SimData(0, values=0, datatype=DataType.REGISTERS)]),
            action=self._action)

    async def _action(self, fc: int, start: int, address: int, count: int,
                      registers: list[int], values) -> int | None:
        """pymodbus calls this for every request, before it reads or writes ``registers``."""
        from pymodbus.constants import ExcCodes
        with self.lock:
            self.requests += 1
            for i, (code, fcs) in enumerate(self._faults):
                if fc in fcs:
                    del self._faults[i]
                    self.exceptions_sent += 1
                    return ExcCodes(code)
            now = self.clock()
            model = self.model
            events = model.advance(now)
            span = range(address, address + count)
            if fc in _FC_COILS:
                run = self.plc.coils['conveyor_run']
                if values is not None and fc in _FC_WRITE:
                    if run in span:
                        model.set_running(bool(values[run - address]), now)
                else:
                    reg, bit = run // 16 - start, run % 16
                    if model.running:
                        registers[reg] |= 1 << bit
                    else:
                        registers[reg] &= ~(1 << bit)
            elif values is not None and fc in _FC_WRITE:
                regs = self.plc.registers
                vid, vcode = regs['verdict_bolt_id'], regs['verdict_code']
                if (vid in span) != (vcode in span):
                    # Half a verdict (FC6, a one-register FC16, FC22): the contract writes the
                    # pair in one request. Refused whole, counted like a bad code.
                    model.refuse_verdict(now)
                    self.exceptions_sent += 1
                    return ExcCodes.ILLEGAL_VALUE
                if regs['heartbeat'] in span:
                    model.write_heartbeat(values[regs['heartbeat'] - address], now)
                if vid in span and vcode in span:
                    code = int(values[vcode - address])
                    if code not in VERDICT_CODES:
                        model.write_verdict(values[vid - address], code, now)
                        self.exceptions_sent += 1
                        return ExcCodes.ILLEGAL_VALUE
                    model.write_verdict(values[vid - address], code, now)
            else:
                current = model.registers()
                for name in PLC_OWNED_REGISTERS:
                    registers[self.plc.registers[name] - start] = current[name]
        if self.on_sort:
            for event in events:
                self.on_sort(event)
        return None


def sim_with(sim: SimConfig, **overrides: Any) -> SimConfig:
    """Return ``sim`` with the non-None ``overrides`` applied (CLI options)."""
    from dataclasses import replace
    return replace(sim, **{k: v for k, v in overrides.items() if v is not None})
