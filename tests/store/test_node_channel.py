"""What node reports do to pods: only edges of the lifecycle table, never stale news."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from openpod.adapters.store import Account, Database, Pod, SSHKey
from openpod.protocol import PodReport
from openpod.services import accounts, node_channel, pods, providers
from openpod.services.node_channel import ReportOutcome
from tests.store.test_store import ED25519, _request, _setup


def _pod(db: Database, **kw: Any) -> tuple[str, str]:
    user_id, _ = _setup(db)
    with db.transaction() as s:
        user = s.get(Account, user_id)
        assert user is not None
        if not s.scalars(select(SSHKey)).first():  # one key belongs to one account only
            accounts.add_ssh_key(s, user, ED25519, None)
        pod = pods.create_pod(s, user, _request(**kw))
        assert pod.node_id is not None  # with several nodes, the scheduler picks
        return pod.id, pod.node_id


def _report(db: Database, node_id: str, **kw: Any) -> ReportOutcome:
    with db.transaction() as s:
        return node_channel.apply_report(s, node_id, PodReport(**kw))


def _status(db: Database, pod_id: str) -> tuple[str, str, str | None]:
    with db.transaction(readonly=True) as s:
        pod = s.get(Pod, pod_id)
        assert pod is not None
        return pod.status, pod.desired_status, pod.status_reason


def test_assignment_carries_the_spec_and_the_accounts_keys(db: Database) -> None:
    pod_id, node_id = _pod(db, env={"A": "b"}, command=["sleep", "1"])
    with db.transaction(readonly=True) as s:
        [assignment] = node_channel.assignments(s, node_id)
    assert assignment.pod_id == pod_id
    assert assignment.desired == "running"
    assert assignment.generation == 1
    assert assignment.spec.env == {"A": "b"}
    assert assignment.spec.command == ["sleep", "1"]
    assert assignment.spec.ports == ["22/tcp", "8888/http"]
    assert assignment.spec.public_keys == [ED25519]


def test_ready_report_makes_the_pod_running_with_its_ssh(db: Database) -> None:
    pod_id, node_id = _pod(db)
    starting = _report(
        db, node_id, pod_id=pod_id, generation=1, phase="starting", port_mappings={"22": 40001}
    )
    assert starting.changed
    assert _status(db, pod_id)[0] == "STARTING"
    ready = _report(
        db,
        node_id,
        pod_id=pod_id,
        generation=1,
        phase="running",
        ssh_ready=True,
        port_mappings={"22": 40001, "8888": 40002},
        ssh_user="root",
        ssh_host_key="ssh-ed25519 AAAA",
    )
    assert ready.changed
    assert _status(db, pod_id)[0] == "RUNNING"
    again = _report(
        db,
        node_id,
        pod_id=pod_id,
        generation=1,
        phase="running",
        ssh_ready=True,
        port_mappings={"22": 40001, "8888": 40002},
        ssh_user="root",
        ssh_host_key="ssh-ed25519 AAAA",
    )
    assert not again.changed  # a repeated report changes nothing


def test_reports_about_an_older_run_are_ignored(db: Database) -> None:
    pod_id, node_id = _pod(db)
    outcome = _report(db, node_id, pod_id=pod_id, generation=0, phase="exited", exit_code=1)
    assert not outcome.changed
    assert _status(db, pod_id)[0] == "STARTING"


def test_exit_stops_or_fails_the_pod_and_sets_desired_stopped(db: Database) -> None:
    pod_id, node_id = _pod(db)
    _report(db, node_id, pod_id=pod_id, generation=1, phase="running", ssh_ready=True)
    _report(db, node_id, pod_id=pod_id, generation=1, phase="exited", exit_code=137)
    assert _status(db, pod_id) == ("FAILED", "STOPPED", "workload exited with code 137")
    other_id, node2 = _pod(db)
    _report(db, node2, pod_id=other_id, generation=1, phase="exited", exit_code=0)
    assert _status(db, other_id) == ("STOPPED", "STOPPED", "workload exited with code 0")


def test_a_start_failure_names_its_reason(db: Database) -> None:
    pod_id, node_id = _pod(db)
    _report(db, node_id, pod_id=pod_id, generation=1, phase="failed", reason="no free port")
    assert _status(db, pod_id) == ("FAILED", "RUNNING", "no free port")
    with db.transaction(readonly=True) as s:
        [assignment] = node_channel.assignments(s, node_id)
    assert assignment.desired == "stopped"  # a failed run is not retried behind the user's back


def test_removed_only_counts_when_terminating(db: Database) -> None:
    pod_id, node_id = _pod(db)
    _report(db, node_id, pod_id=pod_id, generation=1, phase="absent")
    assert _status(db, pod_id)[0] == "STARTING"
    with db.transaction() as s:
        pod = s.get(Pod, pod_id)
        assert pod is not None
        owner = s.get(Account, pod.account_id)
        assert owner is not None
        pods.terminate_pod(s, owner, pod_id)
    assert _status(db, pod_id)[0] == "TERMINATING"
    _report(db, node_id, pod_id=pod_id, generation=1, phase="absent")
    assert _status(db, pod_id)[0] == "TERMINATED"
    with db.transaction(readonly=True) as s:
        assert node_channel.assignments(s, node_id) == []


def test_a_pod_the_plane_does_not_know_is_sent_back_for_removal(db: Database) -> None:
    _, node_id = _pod(db)
    outcome = _report(db, node_id, pod_id="zzzunknown01", generation=3, phase="running")
    assert outcome.reply is not None
    assert (outcome.reply.pod_id, outcome.reply.desired) == ("zzzunknown01", "terminated")
    # ... and a pod of another node is not this node's to report
    pod_id, _ = _pod(db)
    with db.transaction() as s:
        other_owner, _ = accounts.create_account(s, "o2")
        providers.become_provider(s, other_owner, "0x" + "cd" * 20)
        other_node, _ = providers.register_node(s, other_owner, "n2", None)
    stolen = _report(db, other_node.id, pod_id=pod_id, generation=1, phase="exited", exit_code=1)
    assert stolen.reply is not None
    assert _status(db, pod_id)[0] == "STARTING"
