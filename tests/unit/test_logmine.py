"""The log template miner (guardian/engine/logmine.py): masking, Drain clustering, bad input, bounded memory,
and the canary-versus-baseline comparison that becomes a failing decision's log evidence."""
from __future__ import annotations

import json
import random

import pytest

from guardian.engine.logmine import Miner, TemplateDiff, clean, compare, diff_logs, mask


@pytest.mark.parametrize(("line", "masked"), [
    ("took 42 steps, 3.14 s", "took <NUM> steps, <NUM> s"),
    ("flags 0x1f and 0x00ff", "flags <NUM> and <NUM>"),
    ("ratio -5 1.5e10 512KB 1.2.3", "ratio -<NUM> <NUM> <NUM> <NUM>"),
    ("user 550e8400-e29b-41d4-a716-446655440000 done", "user <ID> done"),
    ("from 10.0.0.7 and 192.168.1.20:8080.", "from <IP> and <IP>."),
    ("on [2001:db8::1]:443 fe80::1 ::1 ::ffff:10.0.0.1", "on <IP> <IP> <IP> <IP>"),
    ("span 7f3a9c0d trace_1a2b3c4d5e6f7a8b deadbeef12 0xdeadbeef00", "span <ID> trace_<ID> <ID> <ID>"),
    ("short hex 1a2b3c4 and words deadbeef facade", "short hex 1a2b3c4 and words deadbeef facade"),
    ("at 2026-11-28T10:00:01.123Z and 2026-11-28 10:00:01,5+01:00", "at <TS> and <TS>"),
    ("at 12:30:45 on 2026-11-28", "at <TS> on <TS>"),
    ("in 12ms then 1.5s then 1h30m then 90us", "in <DUR> then <DUR> then <DUR> then <DUR>"),
    ("GET /cart/123?page=2 HTTP/1.1", "GET /cart/<NUM>?page=<NUM> HTTP/<NUM>"),
    ("http2 v1.2.3 abc123 x86_64 std::vector", "http2 v1.2.3 abc123 x86_<NUM> std::vector"),
    ('said "hello 42 world"', 'said "hello <NUM> world"'),
    ("", ""),
])
def test_masking(line, masked):
    assert mask(line) == masked


def test_quoted_strings_are_masked_on_request():
    assert mask('msg="payment failed: card 42" code=7', quoted=True) == "msg=<STR> code=<NUM>"
    assert Miner(mask_quoted=True).add('GET "/a b" 200').template == "GET <STR> <NUM>"


def test_lines_differing_only_in_numbers_ids_and_addresses_share_one_template():
    m = Miner()
    for i in range(50):
        m.add(f"2026-11-28T10:00:{i % 60:02d}.000Z INFO 10.0.{i}.7:{1024 + i} GET /cart/{i} 200 {i}ms "
              f"request={i * 7919:012x} user={i:08d}-aaaa-bbbb-cccc-{i:012d}")
    [c] = m.clusters()
    assert c.count == 50 and m.lines == 50
    assert c.template == "<TS> INFO <IP> GET /cart/<NUM> <NUM> <DUR> request=<ID> user=<ID>"
    assert c.example.startswith("2026-11-28T10:00:00.000Z INFO 10.0.0.7:1024")


def test_different_messages_do_not_share_a_template_and_variable_words_become_wildcards():
    m = Miner()
    for name in ("alice", "bob", "carol"):
        m.add(f"INFO user {name} logged in")
    m.add("INFO cache warmed up")
    m.add("ERROR database connection refused by server")
    m.add("ERROR payment declined for order 7")
    templates = {c.template: c.count for c in m.clusters()}
    assert templates == {"INFO user <*> logged in": 3, "INFO cache warmed up": 1,
                         "ERROR database connection refused by server": 1, "ERROR payment declined for order <NUM>": 1}


def test_match_finds_the_cluster_without_learning():
    m = Miner().add_lines(["INFO user alice logged in", "INFO user bob logged in"])
    assert m.match("INFO user dave logged in").template == "INFO user <*> logged in"
    assert m.match("WARN disk nearly full") is None and m.match("") is None
    assert m.lines == 2 and len(m) == 1


def test_add_many_and_total_count_every_line():
    m = Miner()
    m.add_many(["INFO user alice logged in", b"INFO user bob logged in", "WARN disk nearly full"])
    assert m.total == m.lines == 3 and len(m.clusters()) == 2


ACCESS = [f'2026-11-28T10:00:{i % 60:02d}.000Z INFO 10.0.{i % 7}.{i % 250}:{40000 + i} "GET /cart/{i} HTTP/1.1" '
          f"200 {i % 97}.{i % 10}ms request_id={i * 2654435761 % 2**64:016x}" for i in range(2000)]
DEBUG = [f"2026-11-28T10:01:{i % 60:02d}.000Z DEBUG cache hit for key user:{i}:profile" for i in range(300)]
FAULT = [f"2026-11-28T10:02:{i % 60:02d}.000Z ERROR payment gateway timeout after {3000 + i}ms order={123456 + i} "
         f"upstream=10.1.0.{i % 4}:8443" for i in range(40)]


def test_a_fault_injected_into_the_canary_is_the_top_template():
    rng = random.Random(1)
    canary = ACCESS[:1000] + DEBUG[:150] + FAULT
    rng.shuffle(canary)
    diffs = diff_logs([line.encode() for line in canary], ACCESS[1000:] + DEBUG[150:])
    top = diffs[0]
    assert top.template == "<TS> ERROR payment gateway timeout after <DUR> order=<NUM> upstream=<IP>"
    assert (top.canary_count, top.baseline_count, top.new) == (40, 0, True)
    assert top.example in FAULT
    assert top.canary_freq == pytest.approx(40 / 1190) and top.baseline_freq == 0.0
    assert top.ratio == pytest.approx((41 / 1191) / (1 / 1151)) and top.score > 0
    assert [d.template for d in diffs] == [top.template]  # the lines both arms share are not evidence
    d = top.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert {"template", "canary_count", "baseline_count", "example", "ratio"} <= d.keys()


def test_a_template_far_more_frequent_in_the_canary_counts_and_a_slightly_more_frequent_one_does_not():
    warn = "2026-11-28T10:00:00.000Z WARN retrying request to inventory attempt {}"
    slow = "2026-11-28T10:00:00.000Z INFO slow response from pricing took {}ms"
    canary = Miner().add_lines(ACCESS[:900] + [warn.format(i) for i in range(100)]
                               + [slow.format(i) for i in range(20)])
    baseline = Miner().add_lines(ACCESS[900:1800] + [warn.format(i) for i in range(5)]
                                 + [slow.format(i) for i in range(10)])
    [d] = compare(canary, baseline)
    assert d.template.startswith("<TS> WARN retrying request") and (d.canary_count, d.baseline_count) == (100, 5)
    assert d.new is False and d.ratio >= 5.0
    assert compare(canary, baseline, ratio=50.0) == []


def test_canary_templates_are_matched_to_the_baselines_by_the_mined_template_not_the_string():
    # each arm saw one user only: the mined templates differ as strings ("… carol …" vs "… dave …")
    canary = Miner().add_lines([f"INFO user carol logged in from 10.0.0.{i}" for i in range(30)])
    baseline = Miner().add_lines([f"INFO user dave logged in from 10.0.0.{i}" for i in range(30)])
    assert canary.clusters()[0].template != baseline.clusters()[0].template
    assert compare(canary, baseline) == []
    # and the other way round: a baseline split in two is summed into the canary's one template
    canary = Miner().add_lines([f"INFO job {w} done" for w in ("a", "b", "c") * 20] + ["INFO something new"] * 5)
    baseline = Miner(similarity=1.0).add_lines([f"INFO job {w} done" for w in ("a", "b") * 30])
    assert len(baseline) == 2
    diffs = compare(canary, baseline)
    assert [(d.template, d.baseline_count) for d in diffs] == [("INFO something new", 0)]


def test_min_count_and_top_limit_the_evidence():
    kinds = ["ERROR disk full", "ERROR payment declined by the bank", "ERROR inventory unreachable",
             "WARN queue is long", "ERROR cannot parse the reply", "WARN certificate expires soon",
             "ERROR deadlock detected", "FATAL out of memory"]
    canary = Miner().add_lines(ACCESS[:100] + [kind for k, kind in enumerate(kinds) for _ in range(k + 1)])
    baseline = Miner().add_lines(ACCESS[100:200])
    diffs = compare(canary, baseline, min_count=3, top=3)
    assert [d.canary_count for d in diffs] == [8, 7, 6]
    assert all(d.canary_count >= 3 for d in compare(canary, baseline, top=100))


def test_without_lines_on_either_side_there_is_nothing_to_compare():
    assert diff_logs([], []) == [] and diff_logs(FAULT, []) == [] and diff_logs([], ACCESS) == []
    assert diff_logs(b"", b"") == []


@pytest.mark.parametrize("line", [
    b"\xff\xfe\xfa invalid utf-8 \xc3\x28 order=12",
    b"\x00\x00\x00 NUL bytes \x00 in the middle\x00",
    bytes(range(256)),
    bytes(random.Random(3).getrandbits(8) for _ in range(5000)),
    "\x1b[31mERROR\x1b[0m coloured \x07 bell \r carriage",
    "",
    "   ",
    b"A" * 1_000_000,
    "x " * 600_000,
])
def test_bad_lines_become_templates_and_never_a_crash(line):
    m = Miner()
    c = m.add(line)
    assert m.lines == 1 and c.count == 1
    assert len(c.example) <= 500 and len(c.template) <= 4 * 2_000
    assert m.match(line) is c
    assert c.template.isprintable() or c.template == ""


def test_cleaning_decodes_strips_escapes_and_cuts():
    assert clean(b"\x1b[1;31mERROR\x1b[0m caf\xc3\xa9 \xff") == "ERROR café \ufffd"
    assert clean("a\x00b\tc") == "a b\tc"
    assert len(clean(b"x" * 1_000_000)) == 2_000 and len(clean("y" * 10_000, max_line=100)) == 100


def test_a_blob_is_split_into_lines():
    m = Miner().add_lines(b"INFO started 1\nINFO started 2\r\nINFO started 3\n\xff\xfe\n")
    assert m.lines == 4 and m.clusters()[0].count == 3


def test_the_cluster_cap_holds_and_forgets_the_least_recently_seen():
    m = Miner(max_clusters=50)
    m.add("INFO keep me")
    for i in range(2000):
        words = " ".join(f"w{i}x{j}" for j in range(i % 7 + 1))  # distinct lengths and first tokens
        m.add(f"msg{chr(97 + i % 26)}{i} {words}")
        if i % 10 == 0:
            m.add("INFO keep me")  # seen again: not the least recent
        assert len(m) <= 50
    assert len(m) == 50 and m.lines == 2001 + 200
    assert "INFO keep me" in {c.template for c in m.clusters()}
    assert m.match("msga0 w0x0") is None  # forgotten
    # the tree holds no more than the clusters' branches
    leaves = []

    def walk(node):
        for child in node.values():
            (leaves.append(child) if isinstance(child, list) else walk(child))
    walk(m._root)
    assert all(leaves) and sum(map(len, leaves)) == 50


def test_a_leaf_holds_at_most_max_leaf_clusters_and_forgets_its_rarest_and_lines_at_most_max_tokens():
    m = Miner(max_leaf=4, similarity=1.0)
    m.add_lines(["ERROR code red"] * 5)
    for word in ("amber", "blue", "green", "grey", "pink", "teal"):
        m.add(f"ERROR code {word}")
    assert len(m) == 4 and m.clusters()[0].template == "ERROR code red"
    assert [c.template for c in m.clusters()[1:]] == ["ERROR code grey", "ERROR code pink", "ERROR code teal"]
    c = Miner(max_tokens=10).add(" ".join(f"w{i}" for i in range(100)))
    assert len(c.tokens) == 10


def test_leading_masks_do_not_key_the_tree():
    m = Miner().add_lines([f"2026-11-28T10:00:0{i}Z INFO user {name} logged in" for i, name in enumerate("abc")])
    assert [c.template for c in m.clusters()] == ["<TS> INFO user <*> logged in"]


def test_lines_with_more_or_fewer_masks_than_prefix_tokens_share_the_tree():
    m = Miner(prefix_tokens=2)
    m.add_lines(["2026-11-28T10:00:00Z 10.0.0.1 hello", "2026-11-28T10:00:00Z hello world", "1 2 3", "<*> a b"])
    assert len(m) == 4 and m.match("2026-11-29T10:00:00Z 10.0.0.2 hello").template == "<TS> <IP> hello"


def test_a_forgotten_cluster_is_learnt_again_not_served_from_the_cache():
    m = Miner(max_clusters=2)
    first = m.add("alpha one")
    m.add("beta two three")
    m.add("gamma four five six")  # forgets "alpha one"
    again = m.add("alpha one")
    assert again is not first and again.count == 1 and len(m) == 2


def test_the_example_is_the_first_line_cut_at_max_example():
    m = Miner(max_example=20)
    m.add("INFO " + "long message " * 10)
    m.add("INFO " + "long message " * 9 + "long other!")
    [c] = m.clusters()
    assert c.example == ("INFO " + "long message " * 10)[:20]


def test_settings_are_checked():
    with pytest.raises(ValueError):
        Miner(similarity=1.5)
    with pytest.raises(ValueError):
        Miner(max_clusters=0)


def test_template_diff_is_frozen():
    d = TemplateDiff("t", 3, 0, 0.1, 0.0, 4.0, 4.2, True, "e")
    with pytest.raises(AttributeError):
        d.template = "u"  # type: ignore[misc]
