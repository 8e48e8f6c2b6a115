"""Imports flow one way (docs/architecture.md): core <- nodes <- runtime <- commands, never back,
and inside core from the domain subpackages' base (vision) up (study).

Every module under src/bolt_inspection/ is parsed with ``ast``; lazy imports inside functions
count like the ones at the top. A new import against the rules, or a new import cycle, fails.
Departures, if any, are listed below; delete an entry once it is paid.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / 'src'
PACKAGE = 'bolt_inspection'

# package -> the imports its modules must not make (a name and everything below it).
ROS = ('rclpy', 'bolt_inspection_msgs', 'std_msgs', 'sensor_msgs', 'diagnostic_msgs',
       'std_srvs', 'builtin_interfaces', 'rcl_interfaces', 'lifecycle_msgs')
RULES = {
    'bolt_inspection.core': (*ROS, 'bolt_inspection.nodes', 'bolt_inspection.commands',
                             'bolt_inspection.runtime', 'bolt_inspection.hmi',
                             'bolt_inspection.cli'),
    'bolt_inspection.nodes': ('bolt_inspection.commands', 'bolt_inspection.runtime',
                              'bolt_inspection.cli'),
    'bolt_inspection.hmi': ('rclpy', 'bolt_inspection.nodes', 'bolt_inspection.commands',
                            'bolt_inspection.runtime', 'bolt_inspection.cli'),
    'bolt_inspection.runtime': ('bolt_inspection.commands', 'bolt_inspection.cli'),
}

# (importing module, imported name) pairs that break RULES today. None: the rules hold.
ALLOWED_VIOLATIONS: set[tuple[str, str]] = set()

# Import cycles that exist today, each as the set of its modules. None: keep it that way.
ALLOWED_CYCLES: set[frozenset[str]] = set()

# Inside core: one subpackage per domain, each importing only the ones before it in this order
# (core/__init__.py): vision <- model <- line <- study; plc and log beside them. The shared
# modules at core's top (errors, config, files, sysinfo) import none of the subpackages.
_CORE = 'bolt_inspection.core.'
_DOMAINS = ('vision', 'model', 'line', 'plc', 'log', 'study')
_MAY_IMPORT = {
    'vision': (),
    'model': ('vision',),
    'line': ('vision', 'model'),
    'plc': ('vision',),
    'log': ('vision', 'line'),
    'study': ('vision', 'model', 'line'),
}
RULES.update({_CORE + domain: tuple(_CORE + other for other in _DOMAINS
                                    if other != domain and other not in allowed)
              for domain, allowed in _MAY_IMPORT.items()})
RULES.update({_CORE + shared: tuple(_CORE + d for d in _DOMAINS)
              for shared in ('errors', 'config', 'files', 'sysinfo')})


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def imported_names(path: Path) -> set[str]:
    """Every module (or ``module.attribute``) the file imports, relative imports resolved."""
    name = module_name(path)
    package = name if path.name == '__init__.py' else name.rpartition('.')[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')[:len(package.split('.')) - node.level + 1]
                module = '.'.join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module
            # `from pkg import mod` imports the module pkg.mod; `from mod import name` needs mod.
            found.add(module)
            found.update(f'{module}.{alias.name}' for alias in node.names)
    return found


def all_modules() -> dict[str, set[str]]:
    return {module_name(p): imported_names(p) for p in sorted((SRC / PACKAGE).rglob('*.py'))}


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + '.')


def violations(modules: dict[str, set[str]]) -> set[tuple[str, str]]:
    found = set()
    for module, names in modules.items():
        for package, forbidden in RULES.items():
            if within(module, package):
                found.update((module, name) for name in names
                             if any(within(name, f) for f in forbidden))
    return found


def internal_graph(modules: dict[str, set[str]]) -> dict[str, set[str]]:
    """module -> the package's modules it imports (``from pkg import mod`` counts as pkg.mod)."""
    return {module: {name for name in names if name in modules and name != module}
            for module, names in modules.items()}


def cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.add(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _package_imports(graph: dict[str, set[str]]) -> set[str]:
    return set().union(*graph.values())


def test_the_parser_sees_the_packages_and_their_imports():
    modules = all_modules()
    for package in RULES:
        assert package in modules, package
    assert 'rclpy' in ' '.join(modules['bolt_inspection.nodes.executor'])
    graph = internal_graph(modules)
    # Relative and absolute, top-level and lazy imports are all seen.
    assert 'bolt_inspection.core.line.verdict' in graph['bolt_inspection.nodes.verdict_msg']
    assert 'bolt_inspection.nodes.topics' in _package_imports(graph)


def test_imports_flow_one_way():
    found = violations(all_modules())
    new = sorted(found - ALLOWED_VIOLATIONS)
    assert not new, ('imports against docs/architecture.md (core <- nodes <- runtime <- '
                     f'commands): {new}')
    paid = sorted(ALLOWED_VIOLATIONS - found)
    assert not paid, f'no longer imported, delete from ALLOWED_VIOLATIONS: {paid}'


def test_no_new_import_cycles():
    found = cycles(internal_graph(all_modules()))
    new = [sorted(c) for c in found - ALLOWED_CYCLES]
    assert not new, f'import cycles: {new}'
    paid = [sorted(c) for c in ALLOWED_CYCLES - found]
    assert not paid, f'cycle gone, delete from ALLOWED_CYCLES: {paid}'


def test_the_rules_catch_a_violation_and_a_cycle():
    modules = {
        'bolt_inspection.core.a': {'rclpy.node', 'bolt_inspection.core.b'},
        'bolt_inspection.core.b': {'bolt_inspection.core.a', 'numpy'},
        'bolt_inspection.nodes.n': {'bolt_inspection.runtime.processes',
                                    'bolt_inspection.core.a'},
        'bolt_inspection.runtime.processes': {'bolt_inspection.nodes.n'},
        # Inside core: vision is the base, study may use model.
        'bolt_inspection.core.vision.v': {'bolt_inspection.core.model.network'},
        'bolt_inspection.core.study.s': {'bolt_inspection.core.model.network'},
        'bolt_inspection.core.errors': {'bolt_inspection.core.vision.roi'},
    }
    assert violations(modules) == {('bolt_inspection.core.a', 'rclpy.node'),
                                   ('bolt_inspection.nodes.n',
                                    'bolt_inspection.runtime.processes'),
                                   ('bolt_inspection.core.vision.v',
                                    'bolt_inspection.core.model.network'),
                                   ('bolt_inspection.core.errors',
                                    'bolt_inspection.core.vision.roi')}
    assert cycles(internal_graph(modules)) == {
        frozenset({'bolt_inspection.core.a', 'bolt_inspection.core.b'}),
        frozenset({'bolt_inspection.nodes.n', 'bolt_inspection.runtime.processes'})}
