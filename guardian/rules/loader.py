"""Read rule files into `RuleFile`s, reporting every problem as `FILE:LINE: field.path: message`.

YAML is read with ruamel's round-trip loader, which remembers where each key and item stood, so a
pydantic error location such as ('checks', 0, 'above') is turned back into the line that holds it.
"""
from __future__ import annotations

import difflib
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
from guardian.rules.models import AlertRoute, Arms, CompareCheck, ForecastCheck, Query, RuleFile, ThresholdCheck, Watch

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


CHECK_KINDS: dict[str, type] = {"threshold": ThresholdCheck, "compare": CompareCheck, "baseline": ForecastCheck}


def _field_names(model: type) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]  # type: ignore[attr-defined]


def _model_at(parent: Sequence[int | str]) -> type | None:
    """The model whose fields stand at `parent` (the location of a mapping in a rule file)."""
    if not parent:
        return RuleFile
    head, depth = parent[0], len(parent)
    if head == "arms" and depth == 1:
        return Arms
    if head == "queries" and depth == 2:
        return Query
    if head == "alerts" and depth == 2:
        return AlertRoute
    if head == "watch" and depth == 1:
        return Watch
    if head == "checks" and depth == 3:
        return CHECK_KINDS.get(str(parent[2]))
    return None


def _unknown_field(loc: Sequence[int | str]) -> str:
    """'unknown field', with the field it probably meant ("did you mean 'above'?"), or the kind of check it
    belongs to."""
    name = str(loc[-1]) if loc else ""
    model = _model_at(loc[:-1])
    if model is None:
        return "unknown field"
    if model in CHECK_KINDS.values():  # a field of another kind of check: say so rather than guess a spelling
        kind = next(k for k, m in CHECK_KINDS.items() if m is model)
        other = [k for k, m in CHECK_KINDS.items() if m is not model and name in _field_names(m)]
        if other:
            return (f"unknown field for a kind: {kind} check ({name!r} is a field of "
                    + " and ".join(f"kind: {k}" for k in other) + " checks)")
    close = difflib.get_close_matches(name, _field_names(model), n=1, cutoff=0.6)
    return f"unknown field; did you mean {close[0]!r}?" if close else "unknown field"


def _message(err: dict[str, Any]) -> str:
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return _unknown_field(_loc(err))
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
    return problems + _watch_problems(data, checks if isinstance(checks, list) else [])


def _watch_problems(data: dict[str, Any], checks: list[Any]) -> list[tuple[tuple[int | str, ...], str]]:
    """`watch.checks` must name checks of this file that can run between rollouts (threshold and baseline:
    a compare check needs a canary beside the baseline)."""
    watch = data.get("watch")
    names = watch.get("checks") if isinstance(watch, dict) else None
    if not isinstance(names, list):
        return []
    kinds = {c.get("name"): c.get("kind", "threshold") for c in checks if isinstance(c, dict)}
    problems: list[tuple[tuple[int | str, ...], str]] = []
    for i, name in enumerate(names):
        if not isinstance(name, str):
            continue
        if name not in kinds:
            problems.append((("watch", "checks", i), f"unknown check {name!r}; this file's checks: "
                             + (", ".join(str(k) for k in kinds) or "none")))
        elif kinds[name] == "compare":
            problems.append((("watch", "checks", i), f"check {name!r} is a compare check: it needs a canary beside "
                             "the baseline, and between rollouts there is none (use threshold or baseline checks)"))
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
        line, message = _yaml_mistake(e, text)
        raise RuleError([Problem(filename, line, "(yaml)", f"malformed YAML: {message}")]) from None
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


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _spaces(n: int) -> str:
    return f"{n} space{'' if n == 1 else 's'}"


def _line_above(lines: list[str], index: int) -> str | None:
    """The nearest line above lines[index] that holds something (not blank, not only a comment)."""
    for i in range(index - 1, -1, -1):
        if lines[i].strip() and not lines[i].lstrip().startswith("#"):
            return lines[i]
    return None


def _yaml_mistake(e: MarkedYAMLError, text: str) -> tuple[int, str]:
    """(1-based line, what is wrong in words a person knows) for a YAML syntax error; the parser's own
    words ("expected <block end>, but found '<block mapping start>'") only for mistakes not listed here."""
    problem, context = str(e.problem or ""), str(e.context or "")
    mark, where = e.problem_mark, e.context_mark
    line = mark.line + 1 if mark else (where.line + 1 if where else 1)
    lines = text.splitlines()
    here = lines[line - 1] if 0 < line <= len(lines) else ""
    above = _line_above(lines, line - 1)
    if "\\t" in problem or "\t" in problem:  # ruamel writes the tab escaped: found character '\t' ...
        return line, "a tab character: YAML indents with spaces only (replace the tab with spaces)"
    if "duplicate key" in problem:
        key = problem.split('"')[1] if problem.count('"') >= 2 else "?"
        return line, f"duplicate key {key!r}: each key may appear once in a mapping"
    if "could not find expected ':'" in problem and where is not None:
        key_line = lines[where.line] if where.line < len(lines) else ""
        return where.line + 1, (f"expected 'key: value' but {key_line.strip()!r} has no ':' (add one, or quote "
                                "the text)")
    if "quoted scalar" in context and where is not None:
        return where.line + 1, "a quoted string opened on this line is never closed (add its closing quote)"
    if "flow" in context and where is not None:
        return where.line + 1, "a '[' or '{' opened on this line is never closed"
    if "mapping values are not allowed here" in problem:
        if above is not None and _indent(here) > _indent(above) and not above.rstrip().endswith(":"):
            return line, (f"this line is indented by {_spaces(_indent(here))}, deeper than the line above "
                          f"({_spaces(_indent(above))}), which already has its value: keys of one mapping must "
                          "start in the same column")
        return line, ("a ': ' inside a value: put the value in quotes (e.g. name: \"a: b\"), or check the "
                      "indentation of this line")
    if problem.startswith("expected <block end>") or "did not find expected" in problem:
        if problem.endswith("'-'") or "block sequence start" in problem or "'-' indicator" in problem:
            what = "a list item ('- ') where a key was expected"
        elif problem.endswith("'?'"):
            what = "a key where a list item ('- ') was expected"
        else:
            what = "this line does not line up with the lines above it"
        if above is not None and _indent(here) != _indent(above):
            what += (f": it is indented by {_spaces(_indent(here))}, the line above by {_spaces(_indent(above))}; keys "
                     "of one mapping must start in the same column, and a list's items too")
        else:
            what += (": YAML nests by indentation; keys of one mapping (and a list's items) must start in the "
                     "same column")
        return line, what
    return line, problem or context or "unreadable"


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


def empty_folders(paths: Iterable[str | Path]) -> list[Path]:
    """The folders among `paths` that hold no rule file (*.yaml, *.yml): checking them checks nothing."""
    return [p for p in map(Path, paths) if p.is_dir() and not rule_files([p])]


def describe(ruleset: RuleSet) -> list[str]:
    """One line per check and alert route: what it reads and what a failure does, defaults named
    ("error-rate: threshold on errors / requests, fails -> rollback (no action given: the default)")."""
    lines = []
    for check in ruleset.rules.checks:
        reads = " / ".join(check.signals) if len(check.signals) == 2 else check.signals[0]
        action = check.action + (f" {check.replicas:+d} replica(s)" if check.action == "scale" else "")
        default = "" if "action" in check.model_fields_set else " (no action given: the default)"
        lines.append(f"{check.name}: {check.kind} on {reads}, fails -> {action}{default}")
    for route in ruleset.rules.alerts:
        default = "" if "action" in route.model_fields_set else " (no action given: the default)"
        match = ", ".join(f"{k}={v}" for k, v in route.match.items())
        lines.append(f"alert {{{match}}} -> {route.action}{default}")
    if (w := ruleset.rules.watch) is not None:
        judged = ", ".join(w.checks) if w.checks is not None else "every threshold and baseline check"
        lines.append(f"watch between rollouts{'' if w.enabled else ' (disabled)'}: {judged}; replicas "
                     f"{w.min_replicas}..{w.max_replicas}, cooldown {w.cooldown:g}s, scale in after "
                     f"{w.scale_in_after:g}s, attribution {w.attribution:g}s")
    return lines


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
