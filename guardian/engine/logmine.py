"""Log templates, and what is new in the canary's logs. Pure: lines in, templates out; no I/O.

`Miner` is a Drain-style online template miner (He et al., "Drain: An Online Log Parsing Approach
with Fixed Depth Tree", ICWS 2017), written for this project:

1. clean: bytes are decoded as UTF-8 with replacement characters, lines are cut at `max_line`
   characters, ANSI escapes are removed and other control characters become spaces;
2. mask: timestamps, UUIDs, IPv4/IPv6 addresses (with ports), hex ids of 8 or more characters,
   durations (`12ms`, `1h30m`), numbers (ints, floats, `0x1f`, sizes) and, optionally, quoted strings
   become `<TS>`, `<ID>`, `<IP>`, `<DUR>`, `<NUM>`, `<STR>` (one combined regular expression);
3. cluster: the masked line's tokens (split on whitespace, the first `max_tokens`) descend a
   fixed-depth tree keyed by the token count and the first `prefix_tokens` tokens that are not
   masks (a token with a digit, or one beyond `max_children` at its node, goes down the `<*>`
   branch); in the leaf, the cluster whose template shares the most tokens, position by position,
   takes the line if it shares at least `similarity` of them; its template then becomes `<*>` where
   the two disagree. Otherwise the line starts a new cluster. Each cluster keeps its count and its
   first line (cut at `max_example` characters).

Bounded memory and work: at most `max_clusters` clusters (the least recently seen is forgotten
first) and `max_leaf` in a leaf (its rarest is forgotten first), lines cut at `max_line` characters
and `max_tokens` tokens, and a cache of masked lines already placed (`cache_size` lines of up to 400
characters, emptied when full): the fast path for the many lines that mask to a line seen before,
which go to the same cluster again without the tree.

`compare(canary, baseline)` lists the templates new in the canary, or far more frequent there (per
line) than in the baseline. The two miners learn separately, so a canary template is matched to the
baseline's by the mined templates, both ways: the baseline cluster its template falls into, and
every baseline cluster whose template falls into it. `diff_logs(canary_lines, baseline_lines)` mines
both and compares them.
"""
from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from operator import attrgetter, eq
from typing import Any

WILD = "<*>"
Line = str | bytes

# -- cleaning -------------------------------------------------------------------------------------
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]+")


def clean(line: Line, max_line: int = 2_000) -> str:
    """One line as text: decoded (UTF-8, undecodable bytes replaced), cut at `max_line` characters,
    without ANSI escapes, other control characters as spaces."""
    if isinstance(line, (bytes, bytearray, memoryview)):
        line = bytes(line[: max_line * 4]).decode("utf-8", "replace")
    if len(line) > max_line:
        line = line[:max_line]
    if line.isprintable():  # the common case, checked in C
        return line
    if "\x1b" in line:
        line = _ANSI.sub("", line)
    return _CONTROL.sub(" ", line)


# -- masking --------------------------------------------------------------------------------------
# One regular expression, shaped for Python's engine: it starts with a class of the characters a mask
# can start with, which the engine finds in C; there, by that character (looked at from behind), it
# tries only the alternatives that start with it, in order: the first that matches wins. Possessive
# quantifiers: no backtracking. Each alternative is written without its first character.
_H = "[0-9a-fA-F]"
_R = r"(?![0-9A-Za-z])"  # no letter or digit after
_IP4 = r"(?:\d{1,3}+\.){3}\d{1,3}+"
_IP6_REST = rf"(?:{_H}{{0,4}}+:){{1,6}}+(?:{_IP4}|{_H}{{0,4}}+)"  # after its first group and colon
_PORT = r"(?::\d{1,5}+)?+"
_UNIT = r"(?:ns|us|µs|ms|s|m|h|d)"
_ZONE = r"(?:[.,]\d++)?+(?:Z|[+-]\d\d:?\d\d)?+"
_NUMBER = r"\d*+(?:\.\d++)*+(?:[eE][-+]?\d++)?+"
_ALNUM, _DOT, _ADDR = "0-9A-Za-z", "0-9A-Za-z.", "0-9A-Za-z_:."  # what may not stand before
_DIGIT_, _HEX_ = ("0", "1-9"), ("0", "1-9", "a-fA-F")
# (mask, the characters it may start with, what may not stand before it, the rest after the first)
_ALTERNATIVES: list[tuple[str, tuple[str, ...], str, str]] = [
    ("<STR>", ('"',), "", r'(?:[^"\\]++|\\.)*+"'),  # only with quoted=True
    ("<STR>", ("'",), _ALNUM, r"(?:[^'\\]++|\\.)*+'"),  # only with quoted=True
    ("<IP>", (r"\[",), "", rf"(?=:*+{_H})(?:{_H}{{0,4}}+:){_IP6_REST}\]{_PORT}{_R}"),  # [IPv6]:port
    ("<NUM>", _DIGIT_, _DOT, r"\d{0,6}+(?![-:.\w])"),  # the common case first: what no other matches
    ("<TS>", _DIGIT_, _ALNUM, rf"\d{{3}}-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d)?+)?+{_ZONE}{_R}"),  # ISO 8601
    ("<TS>", _DIGIT_, _ALNUM, rf"\d?+:\d\d:\d\d{_ZONE}{_R}"),
    ("<ID>", _HEX_, _ALNUM, rf"{_H}{{7}}-{_H}{{4}}-{_H}{{4}}-{_H}{{4}}-{_H}{{12}}{_R}"),  # UUID
    ("<IP>", _DIGIT_, _ALNUM, rf"\d{{0,2}}+\.(?:\d{{1,3}}+\.){{2}}\d{{1,3}}+{_PORT}{_R}"),  # IPv4[:port]
    ("<IP>", (":",), _ADDR, rf"(?=:*+{_H}){_IP6_REST}(?![\w:])"),  # ::1
    ("<IP>", _HEX_, _ADDR, rf"{_H}{{0,3}}+:{_IP6_REST}(?![\w:])"),  # fe80::1, 2001:db8:0:0:0:0:0:1
    ("<ID>", ("0",), _ALNUM, rf"[xX]{_H}{{8,}}+{_R}"),  # 0x and 8 or more hex digits
    ("<ID>", _HEX_, _ALNUM, rf"(?:(?<=\d)|(?=[a-fA-F]*+\d)){_H}{{7,}}+{_R}"),  # 8 or more hex, a digit
    ("<DUR>", _DIGIT_, _ALNUM, rf"\d*+(?:\.\d++)?+{_UNIT}(?:\d++(?:\.\d++)?+{_UNIT})*+{_R}"),  # 12ms, 1h30m
    ("<NUM>", ("0",), _DOT, rf"[xX]{_H}++{_R}"),
    ("<NUM>", _DIGIT_, _DOT, rf"{_NUMBER}(?:[kKMGTP]i?[bB]|[bB])?+{_R}"),  # 12, 1.5e3, 512KB, 1.2.3
]
# the characters masks start with, and what must follow a letter for any of them to match
_FIRSTS = (("1-9", ""), ("a-fA-F", "(?=[a-fA-F]*+[0-9:-])"), ("0", ""), (":", ""), (r"\[", ""), ('"', ""),
           ("'", ""))


def _masker(quoted: bool) -> tuple[Callable[..., str], Callable[[re.Match[str]], str]]:
    alternatives = [a for a in _ALTERNATIVES if quoted or a[0] != "<STR>"]
    masks: list[str] = [""]  # by group number, in the order the groups stand in the pattern
    guarded, branches = [], []  # the characters masks start with: no letter or digit before / the others
    firsts = [(f, g, [a for a in alternatives if f in a[1]]) for f, g in _FIRSTS]
    firsts = [(f, g, here) for f, g, here in firsts if here]
    # those whose alternatives all want no letter or digit before come first, and share one check of it:
    # a letter or digit inside a word (most of the candidates) then costs one look behind
    firsts.sort(key=lambda x: not all(_ALNUM in a[2] for a in x[2]))
    for first, guard, here in firsts:
        common = _ALNUM if all(_ALNUM in before for _, _, before, _ in here) else ""
        alts = []
        for m, _, before, rest in here:  # what else may not stand before it is checked for each
            masks.append(m)
            extra = before.replace(common, "", 1) if common else before
            alts.append(f"(?<![{extra}][\\s\\S])({rest})" if extra else f"({rest})")
        (guarded if common else branches).append(f"(?<=[{first}]){guard}(?:{'|'.join(alts)})")
    if guarded:
        branches.insert(0, f"(?<![{_ALNUM}][\\s\\S])(?:{'|'.join(guarded)})")
    starts = "".join(f for f, _, _ in firsts)
    sub = re.compile(f"[{starts}](?:{'|'.join(branches)})").sub

    def replace(m: re.Match[str], _masks: list[str] = masks) -> str:
        return _masks[m.lastindex]  # type: ignore[index]

    return sub, replace


_MASKERS = {False: _masker(False), True: _masker(True)}  # (sub, replace): mask = sub(replace, text)


def mask(text: str, *, quoted: bool = False) -> str:
    """'10.0.0.7:443 took 12ms id=1f3a9c0d8e' → '<IP> took <DUR> id=<ID>'."""
    sub, replace = _MASKERS[quoted]
    return sub(replace, text)


# -- clustering -----------------------------------------------------------------------------------
_DIGIT = re.compile(r"\d").search
_COUNT = attrgetter("count")
_MASKS = frozenset(m for m, *_ in _ALTERNATIVES)
_CACHED_LINE = 400  # longer masked lines are not cached (the cache's memory stays below ~30 MB)


class Cluster:
    """One template: its tokens (`<*>` where its lines differ), how many lines it took, the first."""

    __slots__ = ("tokens", "count", "example", "wild", "path", "alive")

    def __init__(self, tokens: tuple[str, ...], example: str, path: tuple[Any, ...]):
        self.tokens = tokens
        self.count = 1
        self.example = example
        self.wild = tokens.count(WILD)
        self.path = path  # (token count, prefix keys ...): where it sits in the tree
        self.alive = True

    @property
    def template(self) -> str:
        return " ".join(self.tokens)

    def __repr__(self) -> str:
        return f"Cluster({self.template!r}, count={self.count})"


class Miner:
    """A Drain-style online log template miner. `add` a line (str or bytes) at a time, or `add_lines`
    (also called `add_many`)."""

    def __init__(self, *, similarity: float = 0.5, prefix_tokens: int = 2, max_children: int = 100,
                 max_clusters: int = 10_000, max_line: int = 2_000, max_tokens: int = 128, max_leaf: int = 128,
                 max_example: int = 500, mask_quoted: bool = False, cache_size: int = 50_000):
        if not 0.0 <= similarity <= 1.0:
            raise ValueError(f"similarity must be within [0, 1], not {similarity}")
        if min(prefix_tokens + 1, max_clusters, max_line, max_tokens, max_children - 1, max_leaf - 1) < 1:
            raise ValueError("prefix_tokens >= 0, max_clusters, max_line and max_tokens >= 1, "
                             "max_children and max_leaf >= 2")
        self.similarity = similarity
        self.prefix_tokens = prefix_tokens
        self.max_children = max_children
        self.max_clusters = max_clusters
        self.max_line = max_line
        self.max_tokens = max_tokens
        self.max_leaf = max_leaf
        self.max_example = max_example
        self.cache_size = cache_size
        self.lines = 0  # every line added, including those of clusters since forgotten
        self._sub, self._replace = _MASKERS[mask_quoted]
        self._root: dict[Any, Any] = {}  # token count → first key → … → [clusters]
        self._recent: OrderedDict[Cluster, None] = OrderedDict()  # least recently seen first
        self._seen: dict[str, Cluster] = {}  # masked line → its cluster

    def __len__(self) -> int:
        return len(self._recent)

    def clusters(self) -> list[Cluster]:
        """The clusters, the largest first."""
        return sorted(self._recent, key=lambda c: (-c.count, c.template))

    def add_lines(self, lines: Iterable[Line] | Line) -> Miner:
        """Learn every line of an iterable of lines (str or bytes), or of one text or bytes blob."""
        if isinstance(lines, (str, bytes, bytearray)):
            lines = lines.splitlines()
        max_line, sub, replace, seen, touch, learn = (  # the hot path: locals, no calls but C ones
            self.max_line, self._sub, self._replace, self._seen, self._recent.move_to_end, self._learn)
        n = 0
        for line in lines:
            n += 1
            text = clean(line, max_line)
            masked = sub(replace, text)
            c = seen.get(masked)
            if c is not None and c.alive:
                c.count += 1
                touch(c)
            else:
                learn(text, masked)
        self.lines += n
        return self

    add_many = add_lines

    @property
    def total(self) -> int:
        """Every line added (`lines`), including those of clusters since forgotten."""
        return self.lines

    def add(self, line: Line) -> Cluster:
        """Learn one line; the cluster it went to."""
        text = clean(line, self.max_line)
        masked = self._sub(self._replace, text)
        self.lines += 1
        c = self._seen.get(masked)
        if c is not None and c.alive:
            c.count += 1
            self._recent.move_to_end(c)
            return c
        return self._learn(text, masked)

    def _learn(self, text: str, masked: str) -> Cluster:
        """Drain: place a line the cache does not know."""
        tokens = masked.split()
        if len(tokens) > self.max_tokens:
            del tokens[self.max_tokens:]
        n = len(tokens)
        path, leaf = self._descend(tokens, create=True)  # type: ignore[misc]
        best, best_same = None, -1
        for cand in leaf:  # the most tokens in common; a tie goes to the more general template
            same = sum(map(eq, cand.tokens, tokens))
            if same > best_same or (same == best_same and cand.wild > best.wild):  # type: ignore[union-attr]
                best, best_same = cand, same
        if best is not None and best_same >= self.similarity * n:
            best.count += 1
            if best_same + best.wild < n:  # disagrees somewhere: generalise
                best.tokens = tuple(a if a == b else WILD for a, b in zip(best.tokens, tokens, strict=True))
                best.wild = best.tokens.count(WILD)
            self._recent.move_to_end(best)
            c = best
        else:
            if len(leaf) >= self.max_leaf:  # bounds the work a line costs: forget the leaf's rarest, oldest
                self._forget(min(leaf, key=_COUNT))
            c = Cluster(tuple(tokens), text[: self.max_example], path)
            leaf.append(c)
            self._recent[c] = None
            if len(self._recent) > self.max_clusters:
                self._forget(next(iter(self._recent)))
        if len(masked) <= _CACHED_LINE:
            if len(self._seen) >= self.cache_size:
                self._seen.clear()
            self._seen[masked] = c
        return c

    def match(self, line: Line | tuple[str, ...] | list[str]) -> Cluster | None:
        """The cluster a line (or a template's tokens) falls into, learning nothing: the template with
        the most tokens in common, a `<*>` of the template counting as in common, if at least
        `similarity` of them are."""
        if isinstance(line, (tuple, list)):
            tokens = list(line)
        else:
            tokens = self._sub(self._replace, clean(line, self.max_line)).split()[: self.max_tokens]
        found = self._descend(tokens, create=False)
        if found is None:
            return None
        n = len(tokens)
        best, best_same = None, -1
        for cand in found[1]:
            same = sum(a in (b, WILD) for a, b in zip(cand.tokens, tokens, strict=True))
            if same > best_same:
                best, best_same = cand, same
        return best if best is not None and best_same >= self.similarity * n else None

    def _descend(self, tokens: list[str], *, create: bool) -> tuple[tuple[Any, ...], list[Cluster]] | None:
        """(path, leaf) for these tokens: the keys from the root to the leaf, and the leaf's clusters.
        None when not creating and there is no such leaf; a lookup takes the `<*>` branch for a token
        the tree does not know. The keys are the token count and the first `prefix_tokens` tokens that
        are not masks (`<TS> INFO user …` and `INFO user …` go the same way)."""
        keys: list[str | None] = [t for t in tokens if t not in _MASKS][: self.prefix_tokens]
        keys += [None] * (self.prefix_tokens - len(keys))  # every path as long: a leaf is never a node
        node: dict[Any, Any] = self._root
        key: Any = len(tokens)
        path = [key]
        for tok in keys:
            child = node.get(key)
            if child is None:
                if not create:
                    return None
                child = node[key] = {}
            node = child
            if tok is not None and tok not in node and (
                    not create or _DIGIT(tok) or len(node) >= self.max_children - 1):
                tok = WILD
            key = tok
            path.append(key)
        leaf = node.get(key)
        if leaf is None:
            if not create:
                return None
            leaf = node[key] = []
        return tuple(path), leaf

    def _forget(self, c: Cluster) -> None:
        del self._recent[c]
        c.alive = False
        nodes = [self._root]
        for key in c.path:
            nodes.append(nodes[-1][key])
        nodes[-1].remove(c)
        for node, key in zip(reversed(nodes[:-1]), reversed(c.path), strict=True):  # prune empty branches
            if node[key]:
                break
            del node[key]


# -- canary versus baseline -----------------------------------------------------------------------
@dataclass(frozen=True)
class TemplateDiff:
    """A log template new in the canary, or far more frequent there (per line) than in the baseline."""

    template: str
    canary_count: int
    baseline_count: int
    canary_freq: float  # per canary line
    baseline_freq: float  # per baseline line
    ratio: float  # canary frequency / baseline frequency, both add-one smoothed
    score: float  # canary_count × ln(ratio): how to rank them
    new: bool  # not in the baseline at all
    example: str  # one canary line of it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(canary: Miner, baseline: Miner, *, min_count: int = 3, ratio: float = 5.0,
            top: int = 5) -> list[TemplateDiff]:
    """The canary's templates of at least `min_count` lines that are new (no baseline line matches
    them, and they are more frequent than the baseline could have hidden: smoothed ratio > 1) or whose
    frequency is at least `ratio` times the baseline's, with add-one smoothing:
    ((c + 1) / (lines_c + 1)) / ((b + 1) / (lines_b + 1)). The `top` highest `score`s first.
    Without baseline lines nothing is new: an empty list."""
    if canary.lines == 0 or baseline.lines == 0:
        return []
    candidates = [c for c in canary.clusters() if c.count >= min_count]
    matched: dict[Cluster, dict[int, Cluster]] = {c: {} for c in candidates}
    for c in candidates:
        b = baseline.match(c.tokens)
        if b is not None:
            matched[c][id(b)] = b
    for b in baseline.clusters():
        c = canary.match(b.tokens)
        if c is not None and c in matched:
            matched[c][id(b)] = b
    nc, nb = canary.lines, baseline.lines
    out = []
    for c, bs in matched.items():
        b_count = sum(b.count for b in bs.values())
        r = ((c.count + 1) / (nc + 1)) / ((b_count + 1) / (nb + 1))
        if r >= ratio or (b_count == 0 and r > 1.0):
            out.append(TemplateDiff(c.template, c.count, b_count, c.count / nc, b_count / nb, r,
                                    c.count * math.log(r), b_count == 0, c.example))
    out.sort(key=lambda d: (-d.score, -d.canary_count, d.template))
    return out[:top]


def diff_logs(canary: Iterable[Line] | Line, baseline: Iterable[Line] | Line, *, min_count: int = 3,
              ratio: float = 5.0, top: int = 5, **miner: Any) -> list[TemplateDiff]:
    """Mine both arms' lines (iterables of str or bytes lines, or blobs) and `compare` them."""
    return compare(Miner(**miner).add_lines(canary), Miner(**miner).add_lines(baseline),
                   min_count=min_count, ratio=ratio, top=top)
