"""Pure planner tests of `kubeboot reset`: what each node phase plans from facts (nothing on a host already
reset), that network rules are flushed only after every default policy is ACCEPT, and the quorum arithmetic."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest

from kubeboot.etcdapi import Member
from kubeboot.phases.base import PhaseContext, RunOptions
from kubeboot.phases.reset import FLUSH_RULES, NODE_RESET, plan_containers, plan_files, plan_network
from kubeboot.plan.actions import RunCommand
from kubeboot.plan.facts import HostFacts, parse_facts
from kubeboot.workflows.reset import chosen, only_on, quorum_after
from kubeboot.config.load import parse_inventory
from kubeboot.errors import ConfigError
from tests.unit.test_phases import DOC

CFG = parse_inventory(copy.deepcopy(DOC))
USED = HostFacts(services={"kubelet": "active", "containerd": "active"},
                 kube_state={"containers": 12, "rules": 40, "links": 2, "mounts": 7, "netns": 3, "state": 9},
                 files={"/root/.kube/config": None, "/etc/bash_completion.d/kubectl": None})  # type: ignore[dict-item]
CLEAN = HostFacts(services={"kubelet": "inactive", "containerd": "active"},
                  kube_state={"containers": 0, "rules": 0, "links": 0, "mounts": 0, "netns": 0, "state": 0})


def ctx(**facts: HostFacts) -> PhaseContext:
    return PhaseContext(CFG, {}, facts, RunOptions())


def plans(facts: HostFacts, host: str = "w1") -> dict[str, list[str]]:
    c = ctx(**{host: facts})
    h = CFG.host(host)
    out = {}
    for ph in NODE_RESET:
        assert ph.plan is not None
        out[ph.name] = [a.command for a in ph.plan(c, h) if isinstance(a, RunCommand)]
    return out


def test_a_used_node_plans_every_step_and_a_reset_one_nothing() -> None:
    used = plans(USED)
    assert used["stop-kubelet"] == ["systemctl stop kubelet"]
    assert len(used["containers"]) == 1 and "ctr -n k8s.io" in used["containers"][0]
    assert len(used["files"]) == 2  # unmount, then empty the directories
    assert "umount" in used["files"][0] and "/etc/kubernetes/*" in used["files"][1]
    assert "/root/.kube/config" in used["files"][1] and "/etc/bash_completion.d/kubectl" in used["files"][1]
    assert used["network"] == [FLUSH_RULES]
    assert plans(CLEAN) == {"stop-kubelet": [], "containers": [], "files": [], "network": []}


def test_policies_are_accept_before_any_flush() -> None:
    for tool in ("iptables", "ip6tables"):
        assert tool in FLUSH_RULES
    assert FLUSH_RULES.index("-P $c ACCEPT") < FLUSH_RULES.index("-F")
    assert FLUSH_RULES.index("-P $c ACCEPT") < FLUSH_RULES.index("-X")


def test_the_kube_state_counts_come_from_the_gather_output() -> None:
    f = parse_facts("@@kubeboot kube-state\ncontainers 4\nrules 0\nlinks 1\nmounts 0\nnetns 2\nstate 5\n"
                    "@@kubeboot end\n")
    assert dict(f.kube_state) == {"containers": 4, "rules": 0, "links": 1, "mounts": 0, "netns": 2, "state": 5}
    assert plan_network(ctx(w1=f), CFG.host("w1"))  # one CNI link left: still something to remove
    assert plan_containers(ctx(w1=f), CFG.host("w1"))  # pod netns left without containers
    assert plan_files(ctx(w1=replace(f, kube_state={"state": 0})), CFG.host("w1")) == []


def test_only_the_chosen_hosts_are_planned() -> None:
    phases = only_on(NODE_RESET, {"w1"})
    c = ctx(w1=USED, cp1=USED)
    assert all(ph.plan is not None and ph.plan(c, CFG.host("cp1")) == [] for ph in phases)
    assert sum(len(ph.plan(c, CFG.host("w1"))) for ph in phases if ph.plan) == 5
    assert [h.name for h in chosen(CFG, ())] == [h.name for h in CFG.hosts if h.is_node]
    with pytest.raises(ConfigError) as info:
        chosen(CFG, ("w1", "nope"))
    assert "--hosts: not in the inventory: nope" in str(info.value.problems[0])


def member(i: int, learner: bool = False) -> Member:
    return Member(i, f"cp{i}", (f"https://10.0.0.1{i}:2380",), learner)


@pytest.mark.parametrize("healthy,leaving,expected", [
    ({1, 2, 3}, {3}, (2, 2)),  # 3 healthy, one leaves: 2 of 2, quorum holds
    ({1, 2}, {3}, (2, 2)),  # the stopped one leaves: quorum holds
    ({1, 3}, {3}, (1, 2)),  # a healthy one leaves while another is down: 1 of 2, quorum lost
    ({1, 2, 3}, {2, 3}, (1, 1)),  # two leave at once: the last one alone still has quorum
])
def test_quorum_after_removal(healthy: set[int], leaving: set[int], expected: tuple[int, int]) -> None:
    members = [member(1), member(2), member(3), member(4, learner=True)]  # learners never vote
    assert quorum_after(members, healthy, leaving) == expected
