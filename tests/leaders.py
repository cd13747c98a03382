"""Election safety on real processes, from what the members logged."""

import re
from collections import defaultdict

from hacoord.server.local_cluster import LocalCluster

_LEADER = re.compile(r"node (\d+) is now leader in term (\d+)")


def assert_one_leader_per_term(c: LocalCluster) -> int:
    """Check every member log; returns how many terms had a leader."""
    leaders: dict[int, set[int]] = defaultdict(set)
    for nid in c.procs:
        for node, term in _LEADER.findall(c.log_path(nid).read_text()):
            leaders[int(term)].add(int(node))
    both = {t: sorted(n) for t, n in leaders.items() if len(n) > 1}
    assert not both, f"terms with two leaders: {both}"
    return len(leaders)
