"""README and docs/: short enough to read, links that lead somewhere, a true topic table.

The topic names come from ``src/bolt_inspection/nodes/topics.py`` (the one place that names
them), read with ``ast`` so this test needs no ROS.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / 'README.md'
DOCS = sorted((ROOT / 'docs').glob('*.md'))
TOPICS_PY = ROOT / 'src' / 'bolt_inspection' / 'nodes' / 'topics.py'
README_MAX_BYTES = 8192

LINK = re.compile(r'(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)')
FENCE = re.compile(r'^\s*(```|~~~)')


def prose_lines(path: Path) -> list[str]:
    """The file's lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in path.read_text(encoding='utf-8').splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def github_anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the file's headings (lower case, punctuation dropped,
    spaces to hyphens, repeats numbered)."""
    anchors: set[str] = set()
    for line in prose_lines(path):
        match = re.match(r'#{1,6}\s+(.*?)\s*#*\s*$', line)
        if not match:
            continue
        slug = re.sub(r'[^\w\- ]', '', match.group(1).lower()).replace(' ', '-')
        candidate, n = slug, 0
        while candidate in anchors:
            n += 1
            candidate = f'{slug}-{n}'
        anchors.add(candidate)
    return anchors


def relative_links(path: Path) -> list[str]:
    return [target for line in prose_lines(path) for target in LINK.findall(line)
            if not re.match(r'[a-z][a-z0-9+.-]*:', target)]   # http:, https:, mailto: ...


def topic_names() -> tuple[set[str], set[str]]:
    """(topics, services) named by nodes/topics.py's module constants; '{}' reads as 'N'."""
    topics, services = set(), set()
    for node in ast.parse(TOPICS_PY.read_text()).body:
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str) and node.value.value.startswith('/')):
            name = node.value.value.replace('{}', 'N')
            for target in node.targets:
                (services if target.id.endswith('_SERVICE') else topics).add(name)
    return topics, services


def readme_topic_table() -> list[str]:
    """The first column of the table under '## The ROS 2 graph'."""
    lines = prose_lines(README)
    start = lines.index('## The ROS 2 graph')
    rows = []
    for line in lines[start + 1:]:
        if line.startswith('## '):
            break
        match = re.match(r'\|\s*`(/[^`]+)`\s*\|', line)
        if match:
            rows.append(match.group(1))
    return rows


def test_the_readme_reads_in_five_minutes():
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, (
        f'README.md is {size} bytes (at most {README_MAX_BYTES}): move detail to docs/')


def test_the_readme_links_to_every_doc():
    linked = {(README.parent / target.partition('#')[0]).resolve()
              for target in relative_links(README)}
    assert DOCS, 'docs/ has no .md files'
    for doc in [*DOCS, ROOT / 'bench' / 'RESULTS.md']:
        assert doc.resolve() in linked, f'README.md does not link to {doc.relative_to(ROOT)}'


def test_every_relative_link_leads_to_a_file_and_heading_that_exist():
    broken = []
    for page in [README, *DOCS]:
        for target in relative_links(page):
            file_part, _, anchor = target.partition('#')
            dest = (page.parent / file_part).resolve() if file_part else page
            if not dest.exists():
                broken.append(f'{page.relative_to(ROOT)}: {target} (no such file)')
            elif anchor and dest.suffix == '.md' and anchor not in github_anchors(dest):
                broken.append(f'{page.relative_to(ROOT)}: {target} (no such heading)')
    assert not broken, broken


def test_the_readme_topic_table_is_the_topic_contract():
    topics, services = topic_names()
    # The parser sees the contract (a renamed module or constant would silently empty it).
    assert {'/line/trigger', '/camN/image_raw', '/inspection/verdict', '/diagnostics'} <= topics
    assert services == {'/line/start', '/line/stop'}
    table = readme_topic_table()
    assert len(table) == len(set(table)), f'a topic listed twice: {table}'
    assert not topics - set(table), f'missing from the README topic table: {topics - set(table)}'
    assert not set(table) - topics, f'not in nodes/topics.py: {set(table) - topics}'
    text = README.read_text(encoding='utf-8')
    for service in services:
        assert f'`{service}`' in text, service


def test_the_anchor_rule_is_githubs():
    page = ROOT / 'docs' / 'operations.md'
    anchors = github_anchors(page)
    assert 'commands-for-running-the-line-bolt-inspection---help' in anchors
    assert 'safety-what-the-line-guarantees' in anchors
