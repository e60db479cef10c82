"""Read rule files into `RuleFile`s, reporting every problem as `FILE:LINE: field.path: message`.

YAML is read with ruamel's round-trip loader, which remembers where each key and item stood, so a
pydantic error location such as ('checks', 0, 'above') is turned back into the line that holds it.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.reader import ReaderError

from guardian.errors import Problem, RuleError
from guardian.rules.defaults import DEFAULT_RULES, STANDARD_QUERIES
from guardian.rules.models import Query, RuleFile

RULE_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class RuleSet:
    """One service's effective rules: its checks plus the standard queries it did not override."""

    service: str
    rules: RuleFile
    source: str  # the file it came from, or "built-in default"
    queries: dict[str, Query] = field(default_factory=dict)

    @classmethod
    def of(cls, rules: RuleFile, source: str) -> RuleSet:
        return cls(rules.service, rules, source, {**STANDARD_QUERIES, **rules.queries})


DEFAULT_RULESET = RuleSet.of(DEFAULT_RULES, "built-in default")


def _line_of(node: Any, loc: Sequence[int | str]) -> int:
    """The 1-based line of the deepest YAML node that `loc` reaches."""
    line = 1
    for part in loc:
        lc = getattr(node, "lc", None)
        if isinstance(node, dict) and part in node:
            line = _lc_line(lc, "key", part) or line
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            line = _lc_line(lc, "item", part) or line
            node = node[part]
        elif isinstance(node, dict) and node.get("kind") == part:
            continue  # the tag pydantic adds for a discriminated union
        else:
            break
    return line


def _lc_line(lc: Any, kind: str, part: int | str) -> int | None:
    """The 1-based line ruamel remembers for a key or item; None when it has none (a key brought in by a
    `<<:` merge, for instance: it stands where its anchor is)."""
    if lc is None:
        return None
    try:
        pos = lc.key(part) if kind == "key" else lc.item(part)
        return pos[0] + 1 if pos else None
    except (KeyError, IndexError, TypeError):
        return None


def _field_path(loc: Sequence[int | str], node: Any) -> str:
    parts: list[str] = []
    for part in loc:
        if isinstance(node, dict) and node.get("kind") == part and part not in node:
            continue
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            parts.append(("." if parts else "") + ("for" if part == "for_" else str(part)))
        node = node.get(part) if isinstance(node, dict) else (
            node[part] if isinstance(node, list) and isinstance(part, int) and part < len(node) else None
        )
    return "".join(parts) or "(file)"


def _loc(err: dict[str, Any]) -> tuple[int | str, ...]:
    loc = tuple(err["loc"])
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):  # point at the `kind` field itself
        loc += (err["ctx"]["discriminator"].strip("'"),)
    return loc


def _message(err: dict[str, Any]) -> str:
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return "unknown field"
    if err["type"] in ("missing", "union_tag_not_found"):
        return "required field is missing"
    if err["type"] == "union_tag_invalid":
        return f"unknown kind {err['ctx']['tag']!r}; known: {err['ctx']['expected_tags'].replace(chr(39), '')}"
    return msg


def _semantic_problems(data: dict[str, Any]) -> list[tuple[tuple[int | str, ...], str]]:
    """Cross-field checks pydantic cannot see one field at a time (run on the raw data, so they are
    reported together with the field errors)."""
    queries = data.get("queries")
    known = set(STANDARD_QUERIES) | (set(queries) if isinstance(queries, dict) else set())
    checks = data.get("checks")
    problems: list[tuple[tuple[int | str, ...], str]] = []
    seen: set[str] = set()
    for i, check in enumerate(checks if isinstance(checks, list) else []):
        if not isinstance(check, dict):
            continue
        name = check.get("name")
        if isinstance(name, str):
            if name in seen:
                problems.append((("checks", i, "name"), f"duplicate check name {name!r}"))
            seen.add(name)
        for field_name in ("signal", "ratio"):
            value = check.get(field_name)
            if not isinstance(value, str):
                continue
            names = [p.strip() for p in value.split("/")]
            if field_name == "ratio" and (len(names) != 2 or not all(names)):
                continue  # a malformed ratio is reported by the model; do not guess at its names
            for signal in names:
                if signal and signal not in known:
                    problems.append(
                        (("checks", i, field_name),
                         f"unknown signal {signal!r}; define it under 'queries' or use one of: "
                         + ", ".join(sorted(known)))
                    )
    return problems


def parse_text(text: str, filename: str) -> RuleFile:
    """Parse one rule file's text. Raises RuleError listing every problem found."""
    try:
        return _parse_text(text, filename)
    except RecursionError:  # thousands of nested [ or {: the YAML reader recurses once per level
        raise RuleError([Problem(filename, 1, "(yaml)", "malformed YAML: nested too deeply")]) from None


def _parse_text(text: str, filename: str) -> RuleFile:
    try:
        data = YAML(typ="rt").load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        raise RuleError([Problem(filename, line, "(yaml)", f"malformed YAML: {e.problem or e.context}")]) from None
    except ReaderError as e:  # a character YAML does not allow (control characters, ...): not a MarkedYAMLError
        line = text.count("\n", 0, max(0, e.position)) + 1
        char = f"U+{e.character:04X}" if isinstance(e.character, int) else repr(e.character)
        raise RuleError([Problem(filename, line, "(yaml)", f"malformed YAML: {e.reason} ({char})")]) from None
    if not isinstance(data, dict):
        raise RuleError([Problem(filename, 1, "(file)", "a rule file is a mapping with 'service' and 'checks'")])
    plain = _plain(data)
    rules, errors = _validate(plain)
    problems = [(_loc(err), _message(err)) for err in errors] + _semantic_problems(plain)
    if problems or rules is None:
        found = [Problem(filename, _line_of(data, loc), _field_path(loc, data), m) for loc, m in problems]
        raise RuleError(sorted(found, key=lambda p: p.line))
    return rules


def _validate(plain: dict[str, Any]) -> tuple[RuleFile | None, list[dict[str, Any]]]:
    try:
        return RuleFile.model_validate(plain), []
    except ValidationError as e:
        return None, list(e.errors())


def _plain(node: Any) -> Any:
    """ruamel's commented containers as plain dicts and lists (pydantic wants plain types)."""
    if isinstance(node, dict):
        return {str(k) if not isinstance(k, str) else k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def rule_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand folders into their *.yaml / *.yml files, sorted; files are taken as given."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(f for f in p.iterdir() if f.suffix in RULE_SUFFIXES and f.is_file()))
        else:
            files.append(p)
    return files


def load_paths(paths: Iterable[str | Path]) -> dict[str, RuleSet]:
    """Load every rule file under `paths`. Raises RuleError with the problems of *all* files."""
    problems: list[Problem] = []
    sets: dict[str, RuleSet] = {}
    for f in rule_files(paths):
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            problems.append(Problem(str(f), 1, "(file)", f"cannot read: {e}"))
            continue
        try:
            rules = parse_text(text, str(f))
        except RuleError as e:
            problems.extend(e.problems)
            continue
        if rules.service in sets:
            problems.append(
                Problem(str(f), _line_of(YAML(typ="rt").load(text), ("service",)), "service",
                        f"service {rules.service!r} is already guarded by {sets[rules.service].source}")
            )
            continue
        sets[rules.service] = RuleSet.of(rules, str(f))
    if problems:
        raise RuleError(problems)
    return sets
