"""The rule book: the last good rule sets, reloaded on demand; invalid reloads keep the old ones."""
from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from loguru import logger

from guardian.errors import Problem, RuleError
from guardian.rules.loader import DEFAULT_RULESET, RuleSet, load_paths, rule_files


class RuleBook:
    def __init__(self, paths: Sequence[str | Path] = ()):
        self.paths = [Path(p) for p in paths]
        self._lock = threading.Lock()
        self._sets: dict[str, RuleSet] = load_paths(self.paths) if self.paths else {}  # raises RuleError
        self._stamp = self._fingerprint()
        self.last_problems: list[Problem] = []

    def _fingerprint(self) -> tuple:
        out = []
        for f in rule_files(self.paths):
            try:
                st = f.stat()
                out.append((str(f), st.st_mtime_ns, st.st_size))
            except OSError:
                out.append((str(f), None, None))
        return tuple(out)

    def for_service(self, service: str) -> RuleSet:
        with self._lock:
            return self._sets.get(service) or self._sets.get("*") or DEFAULT_RULESET

    def services(self) -> dict[str, RuleSet]:
        with self._lock:
            return dict(self._sets)

    def reload(self, *, only_if_changed: bool = False) -> list[Problem]:
        """Re-read the rule files. On any problem keep the last good set and return the problems."""
        stamp = self._fingerprint()
        if only_if_changed and stamp == self._stamp:
            return []
        self._stamp = stamp
        try:
            sets = load_paths(self.paths) if self.paths else {}
        except RuleError as e:
            self.last_problems = e.problems
            for p in e.problems:
                logger.error("rules reload refused, keeping the last good rules: {}", p)
            return e.problems
        with self._lock:
            self._sets = sets
        self.last_problems = []
        logger.info("rules reloaded: {} service(s)", len(sets))
        return []
