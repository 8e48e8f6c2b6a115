"""Imports flow one way (docs/architecture.md): core <- nodes <- runtime <- commands, never back.

Every module under src/bolt_inspection/ is parsed with ``ast``; lazy imports inside functions
count like the ones at the top. A new import against the rules, or a new import cycle, fails.
Today's departures are listed below, each one issue 20's debt; delete an entry once it is paid.
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

# Import cycles that exist today, each as the set of its modules.
ALLOWED_CYCLES = {
    # Issue 20's debt: core/evaluate.py draws its figures with core/report.py (a lazy import),
    # which imports evaluate's heatmap_peak back; workflow and metrics are to be split apart.
    frozenset({'bolt_inspection.core.evaluate', 'bolt_inspection.core.report'}),
    # Issue 20's debt: core/model.py loads pretrained weights through core/weights.py (a lazy
    # import), which imports model's custom_objects back; both belong in one core/model package.
    frozenset({'bolt_inspection.core.model', 'bolt_inspection.core.weights'}),
}


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
    assert 'bolt_inspection.core.verdict' in graph['bolt_inspection.nodes.verdict_msg']
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
    }
    assert violations(modules) == {('bolt_inspection.core.a', 'rclpy.node'),
                                   ('bolt_inspection.nodes.n',
                                    'bolt_inspection.runtime.processes')}
    assert cycles(internal_graph(modules)) == {
        frozenset({'bolt_inspection.core.a', 'bolt_inspection.core.b'}),
        frozenset({'bolt_inspection.nodes.n', 'bolt_inspection.runtime.processes'})}
