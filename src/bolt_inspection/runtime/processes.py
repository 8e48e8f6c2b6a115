"""The line as ``ros2 launch`` runs it: one process per node, started like launch_ros does.

Each :class:`~bolt_inspection.graph.NodeSpec` becomes the command line launch_ros builds for a
``Node`` / ``LifecycleNode`` action of ``launch/line.launch.py``::

    <prefix>/lib/bolt_inspection/<executable> --ros-args -r __node:=<name> -r __ns:=/
        --params-file <share>/config/<extra>.yaml ... --params-file <params_file>
        --params-file <overrides.yaml>     # {'/<name>': {'ros__parameters': {...}}}
        -r <from>:=<to> ...

so the processes, their parameters and their bring-up (the ``lifecycle_manager`` node) are the
launch file's. What launch_ros adds on top — event handlers that log the transitions, rqt, rviz —
is not needed to run the line. Used by the multi-process test tier, the bench and
``bolt-inspection line --processes`` on machines without launch_ros (the PyPI wheels).

Every process gets the caller's environment (``ROS_DOMAIN_ID``,
``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``...) and writes its output to ``<log_dir>/<name>.log``.
:meth:`ProcessLine.stop` sends SIGINT to every process at once, as launch does on Ctrl-C, then
SIGTERM and SIGKILL to those that outlive their grace period.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bolt_inspection import paths
from bolt_inspection.core.errors import ConfigError
from bolt_inspection.graph import NodeSpec


@dataclass
class NodeProcess:
    """One running node executable."""

    spec: NodeSpec
    command: list[str]
    log_path: Path
    popen: subprocess.Popen
    returncode: int | None = None
    signals: list[str] = field(default_factory=list)   # what stop() had to send

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding='utf-8', errors='replace')
        except OSError:
            return ''


def node_command(spec: NodeSpec, params_file: Path | None,
                 overrides_file: Path | None) -> list[str]:
    """The command line launch_ros runs for ``spec`` (see the module docstring).

    Raises:
        FileNotFoundError: The executable is not installed.
    """
    cmd = [str(paths.executable(spec.executable)), '--ros-args', '-r', f'__node:={spec.name}',
           '-r', '__ns:=/']
    for name in spec.params_files:
        cmd += ['--params-file', str(paths.config_path(name))]
    if params_file is not None:
        cmd += ['--params-file', str(params_file)]
    if overrides_file is not None:
        cmd += ['--params-file', str(overrides_file)]
    for src, dst in spec.remappings:
        cmd += ['-r', f'{src}:={dst}']
    return cmd


def write_overrides(path: Path, name: str, values: Mapping[str, Any]) -> Path:
    """Write a node's parameter overrides as a params file, as launch_ros does for a dict."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open('w', encoding='utf-8') as fh:
        yaml.safe_dump({f'/{name}': {'ros__parameters': dict(values)}}, fh,
                       default_flow_style=False)
    return path


class ProcessLine:
    """Starts and stops the line's nodes as separate processes.

    Args:
        specs: The node list (:func:`bolt_inspection.graph.line_nodes`, ``manager=True``).
        params_file: The line's params file (``config/line.yaml`` or the user's).
        log_dir: Where each process's output and the override files go.
        overrides: Node name -> parameter overrides on top of the spec's.
        env: Extra environment variables for every process.
    """

    def __init__(self, specs: list[NodeSpec], params_file: Path | None, log_dir: Path, *,
                 overrides: Mapping[str, Mapping[str, Any]] | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.specs = list(specs)
        self.params_file = Path(params_file) if params_file else None
        self.log_dir = Path(log_dir)
        self.overrides = {k: dict(v) for k, v in (overrides or {}).items()}
        self.env = dict(env or {})
        self.processes: dict[str, NodeProcess] = {}

    def commands(self) -> dict[str, list[str]]:
        """Each node's command line (writes the override files)."""
        out = {}
        for spec in self.specs:
            values = dict(spec.parameters)
            values.update(self.overrides.get(spec.name, {}))
            overrides = write_overrides(self.log_dir / f'{spec.name}.params.yaml', spec.name,
                                        values) if values else None
            out[spec.name] = node_command(spec, self.params_file, overrides)
        return out

    def start(self) -> ProcessLine:
        """Start every node in list order (the launch file's order).

        Raises:
            ConfigError: An executable is missing (nothing is left running).
        """
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            commands = self.commands()
        except FileNotFoundError as exc:
            raise ConfigError(str(exc)) from None
        env = {**os.environ, **self.env, 'PYTHONUNBUFFERED': '1'}
        for spec in self.specs:
            log_path = self.log_dir / f'{spec.name}.log'
            with log_path.open('w', encoding='utf-8') as log:
                popen = subprocess.Popen(commands[spec.name], stdout=log,
                                         stderr=subprocess.STDOUT, env=env,
                                         stdin=subprocess.DEVNULL)
            self.processes[spec.name] = NodeProcess(spec, commands[spec.name], log_path, popen)
        return self

    def restart(self, name: str) -> NodeProcess:
        """Start node ``name`` again after it exited (what launch's ``respawn`` does)."""
        old = self.processes[name]
        if old.alive:
            raise RuntimeError(f'{name} is still running')
        env = {**os.environ, **self.env, 'PYTHONUNBUFFERED': '1'}
        with old.log_path.open('a', encoding='utf-8') as log:
            popen = subprocess.Popen(old.command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     stdin=subprocess.DEVNULL)
        self.processes[name] = NodeProcess(old.spec, old.command, old.log_path, popen)
        return self.processes[name]

    def dead(self) -> dict[str, int]:
        """Processes that have exited on their own: name -> exit status."""
        return {name: p.popen.returncode for name, p in self.processes.items()
                if p.popen.poll() is not None}

    def stop(self, grace_s: float = 15.0) -> dict[str, int]:
        """SIGINT every process at once (launch's Ctrl-C), escalate after ``grace_s``.

        Returns:
            Name -> exit status (negative: killed by that signal).
        """
        for proc in self.processes.values():
            if proc.alive:
                proc.popen.send_signal(signal.SIGINT)
                proc.signals.append('SIGINT')
        deadline = time.monotonic() + grace_s
        for proc in self.processes.values():
            try:
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.terminate()
                proc.signals.append('SIGTERM')
                try:
                    proc.popen.wait(timeout=5.0)
                except subprocess.TimeoutExpired:
                    proc.popen.kill()
                    proc.signals.append('SIGKILL')
                    proc.popen.wait()
            proc.returncode = proc.popen.returncode
        return {name: p.returncode for name, p in self.processes.items()}

    def __enter__(self) -> ProcessLine:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class LaunchedLine:
    """The line as node processes plus observer nodes (the line driver) in this process.

    The same interface as the composed line where ``bolt-inspection line`` needs it
    (``specs``, ``parameters``, ``nodes``, ``add_node``, ``start``, ``stop``), so the closed
    loop and the open loop run unchanged on either shape.

    Args:
        specs: The node list, with the lifecycle manager (``line_nodes(manager=True)``).
        params_file: The line's params file.
        context: The rclpy Context of this process's observer nodes.
        overrides: Node name -> parameter overrides.
        log_dir: Each node process's log and override file.
        ready_timeout_s: Longest wait for the lifecycle manager's "line up".
    """

    def __init__(self, specs: list[NodeSpec], params_file: Path, *, context,
                 overrides: Mapping[str, Mapping[str, Any]] | None = None, log_dir: Path,
                 ready_timeout_s: float = 180.0) -> None:
        from bolt_inspection.core.config import load_yaml
        from bolt_inspection.graph import node_parameter_values
        from bolt_inspection.nodes.executor import make_executor
        config = load_yaml(params_file)
        self.specs = list(specs)
        self.parameters = {s.name: node_parameter_values(s, config, (overrides or {}).get(s.name))
                           for s in self.specs}
        self.processes = ProcessLine(self.specs, params_file, log_dir, overrides=overrides)
        self.nodes: dict[str, Any] = {}     # only this process's observer nodes
        self.executor = make_executor(context, num_threads=2)
        self.ready_timeout_s = ready_timeout_s
        self._thread = None

    def add_node(self, node) -> None:
        self.executor.add_node(node)
        self.nodes[node.get_name()] = node

    def start(self) -> None:
        """Start the node processes and wait until the lifecycle manager has them all active.

        Raises:
            ConfigError: An executable is missing, a node process died, or the line did not
                come up in time (the message names the log to read).
        """
        import threading
        self._thread = threading.Thread(target=self.executor.spin, name='line-observers',
                                        daemon=True)
        self._thread.start()
        self.processes.start()
        manager = self.processes.processes['lifecycle_manager']
        deadline = time.monotonic() + self.ready_timeout_s
        while 'line up:' not in manager.log_text():
            dead = self.processes.dead()
            if dead:
                name, code = next(iter(dead.items()))
                raise ConfigError(f'node {name} exited with status {code}; see '
                                  f'{self.processes.processes[name].log_path}')
            if time.monotonic() > deadline:
                raise ConfigError(f'the line did not come up in {self.ready_timeout_s:.0f} s; '
                                  f'see {manager.log_path} and the other logs beside it')
            time.sleep(0.2)

    def stop(self) -> dict[str, int]:
        """SIGINT every node process (bolts in flight are answered), then the observers."""
        codes = self.processes.stop()
        self.executor.shutdown(timeout_sec=5.0)
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        for node in self.nodes.values():
            node.destroy_node()
        return codes
