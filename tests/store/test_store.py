"""The store and the services over it, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy import inspect, select

from openpod.adapters.store import (
    Account,
    ApiKey,
    Database,
    GpuAllocation,
    GpuType,
    Node,
    Pod,
    migrate,
)
from openpod.protocol import GpuInfo
from openpod.services import accounts, catalog, pods, providers
from openpod.services.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NoCapacity,
    NotFound,
    Unauthenticated,
)

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl a@b"


def _setup(db: Database, gpus: str = "NVIDIA H100 80GB HBM3", count: int = 8) -> tuple[str, str]:
    with db.transaction() as s:
        user, _ = accounts.create_account(s, "user")
        owner, _ = accounts.create_account(s, "provider")
        providers.become_provider(s, owner, "0x" + "ab" * 20)
        node, _ = providers.register_node(s, owner, "n1", None)
        providers.node_connected(
            s,
            node.id,
            runtime="local",
            public_host="127.0.0.1",
            gpus=[GpuInfo(index=i, type=gpus) for i in range(count)],
        )
        return user.id, node.id


def _request(**kw: object) -> pods.PodRequest:
    base: dict[str, object] = dict(
        name="p",
        image="img",
        gpu_type_ids=["NVIDIA H100 80GB HBM3"],
        gpu_count=1,
        ports="8888/http",
        env={},
        command=[],
    )
    base.update(kw)
    return pods.PodRequest(**base)  # type: ignore[arg-type]


def test_migrations_create_every_table_and_seed_the_catalog(db: Database) -> None:
    tables = set(inspect(db.engine).get_table_names())
    assert {"accounts", "api_keys", "ssh_keys", "gpu_types", "providers", "nodes", "pods"} <= tables
    with db.transaction() as s:
        h100 = s.get(GpuType, "NVIDIA H100 80GB HBM3")
        assert h100 is not None and h100.memory_gb == 80
        assert h100.rate_per_second == 830555555555556  # 2.99 tokens/h at 18 decimals


def test_big_integer_rates_survive_exactly(db: Database) -> None:
    big = 2**200 + 12345
    with db.transaction() as s:
        admin, _ = accounts.create_account(s, "admin", is_admin=True)
        catalog.create_gpu_type(s, admin, "Test GPU", "Test", 1, big)
    with db.transaction() as s:
        row = s.get(GpuType, "Test GPU")
        assert row is not None and row.rate_per_second == big


def test_api_keys_are_stored_hashed_and_authenticate(db: Database) -> None:
    with db.transaction() as s:
        account, key = accounts.create_account(s, "alice")
    with db.transaction() as s:
        stored = s.scalars(select(ApiKey.key_hash)).all()
        assert key not in stored and all(len(h) == 64 for h in stored)
        assert accounts.authenticate(s, key).id == account.id
        with pytest.raises(Unauthenticated, match="invalid API key"):
            accounts.authenticate(s, key + "x")
        with pytest.raises(Unauthenticated, match="missing API key"):
            accounts.authenticate(s, None)


def test_ssh_keys_add_list_remove_and_refuse_duplicates(db: Database) -> None:
    with db.transaction() as s:
        account, _ = accounts.create_account(s, "alice")
        row = accounts.add_ssh_key(s, account, ED25519, None)
        assert row.name == "a@b" and row.fingerprint.startswith("SHA256:")
    with db.transaction() as s, pytest.raises(Conflict, match="already on this account"):
        accounts.add_ssh_key(s, account, ED25519, "again")
    with db.transaction() as s:
        assert [k.id for k in accounts.list_ssh_keys(s, account)] == [row.id]
        accounts.remove_ssh_key(s, account, row.id)
    with db.transaction() as s:
        assert accounts.list_ssh_keys(s, account) == []
        with pytest.raises(NotFound):
            accounts.remove_ssh_key(s, account, row.id)


def test_scheduler_places_best_fit_and_names_what_is_missing(db: Database) -> None:
    user_id, node_id = _setup(db, count=8)
    with db.transaction() as s:
        user = s.get(Account, user_id)
        assert user is not None
        pod = pods.create_pod(s, user, _request(gpu_count=6))
        assert pod.node_id == node_id and len(pod.gpu_indices) == 6
        assert pod.status == "STARTING" and pod.generation == 1
    with (
        db.transaction() as s,
        pytest.raises(
            NoCapacity, match="not enough free NVIDIA H100 80GB HBM3: 3 asked, 2 of 8 free"
        ),
    ):
        pods.create_pod(s, user, _request(gpu_count=3))
    with db.transaction() as s:
        assert s.scalar(select(Pod).where(Pod.id != pod.id)) is None  # nothing half-made


def test_bad_pod_requests_change_nothing(db: Database) -> None:
    user_id, _ = _setup(db)
    cases = [
        (_request(gpu_type_ids=["NVIDIA Nope"]), "unknown GPU type 'NVIDIA Nope'"),
        (_request(gpu_count=0), "gpuCount must be between 1 and 16"),
        (_request(ports="8888/udpx"), "protocol 'udpx'"),
        (_request(ports="70000/tcp"), "outside 1-65535"),
        (_request(ports="8888/http,8888/tcp"), "listed more than once"),
        (_request(image=" "), "imageName must not be empty"),
        (_request(env={"OPENPOD_X": "1"}), "reserved"),
        (_request(public_key="ssh-rsa AAAA"), "not base64|truncated"),
    ]
    for request, message in cases:
        with db.transaction() as s:
            user = s.get(Account, user_id)
            assert user is not None
            with pytest.raises(InvalidInput, match=message):
                pods.create_pod(s, user, request)
    with db.transaction() as s:
        assert s.scalars(select(Pod)).all() == []


def test_another_users_pod_is_not_found(db: Database) -> None:
    user_id, _ = _setup(db)
    with db.transaction() as s:
        user = s.get(Account, user_id)
        assert user is not None
        pod = pods.create_pod(s, user, _request())
        other, _ = accounts.create_account(s, "mallory")
    for action in (pods.get_pod, pods.stop_pod, pods.terminate_pod, pods.resume_pod):
        with db.transaction() as s, pytest.raises(NotFound, match="no such pod"):
            action(s, other, pod.id)


def _node_says(db: Database, node_id: str, pod_id: str, phase: str) -> None:
    """What the node agent reports once it has carried out a stop or a removal."""
    from openpod.protocol import PodReport
    from openpod.services import node_channel

    with db.transaction() as s:
        pod = s.get(Pod, pod_id)
        assert pod is not None
        report = PodReport(pod_id=pod_id, generation=pod.generation, phase=phase)
        node_channel.apply_report(s, node_id, report)


def _held(db: Database) -> list[tuple[int, str]]:
    with db.transaction(readonly=True) as s:
        rows = s.execute(select(GpuAllocation.gpu_index, GpuAllocation.pod_id))
        return sorted((index, pod_id) for index, pod_id in rows)


def test_lifecycle_stop_releases_gpus_and_resume_returns_to_the_node(db: Database) -> None:
    user_id, node_id = _setup(db, count=2)
    with db.transaction() as s:
        user = s.get(Account, user_id)
        assert user is not None
        pod = pods.create_pod(s, user, _request(gpu_count=2))
    assert _held(db) == [(0, pod.id), (1, pod.id)]
    with db.transaction() as s:
        assert pods.stop_pod(s, user, pod.id).status == "STOPPING"
    assert len(_held(db)) == 2  # held until the node confirms the stop
    _node_says(db, node_id, pod.id, "stopped")
    assert _held(db) == []
    with db.transaction() as s:  # someone else takes the GPUs
        other, _ = accounts.create_account(s, "bob")
        taker = pods.create_pod(s, other, _request(gpu_count=1))
    with (
        db.transaction() as s,
        pytest.raises(Conflict, match="its node has 1 of 2 NVIDIA H100 80GB HBM3 free"),
    ):
        pods.resume_pod(s, user, pod.id)
    with db.transaction() as s:
        assert s.get(Pod, pod.id).status == "STOPPED"  # type: ignore[union-attr]
        pods.terminate_pod(s, other, taker.id)
    _node_says(db, node_id, taker.id, "absent")
    assert _held(db) == []
    with db.transaction() as s:
        resumed = pods.resume_pod(s, user, pod.id)
        assert (resumed.status, resumed.node_id, resumed.generation) == ("STARTING", node_id, 2)
    assert _held(db) == [(0, pod.id), (1, pod.id)]  # its old GPUs again, as preferred
    with db.transaction() as s:
        pods.terminate_pod(s, user, pod.id)
    assert len(_held(db)) == 2  # held until the node confirms the removal
    _node_says(db, node_id, pod.id, "absent")
    assert _held(db) == []
    with db.transaction() as s, pytest.raises(Conflict, match="cannot resume"):
        pods.resume_pod(s, user, pod.id)


def test_concurrent_creates_never_share_a_gpu(db: Database) -> None:
    user_id, _ = _setup(db, count=4)
    results: list[str] = []
    lock = threading.Lock()

    def create() -> None:
        try:
            with db.transaction() as s:
                user = s.get(Account, user_id)
                assert user is not None
                pods.create_pod(s, user, _request(gpu_count=1))
            outcome = "ok"
        except NoCapacity:
            outcome = "full"
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["full"] * 4 + ["ok"] * 4
    with db.transaction() as s:
        held = [i for p in s.scalars(select(Pod)) for i in p.gpu_indices]
        assert sorted(held) == [0, 1, 2, 3]


def test_nodes_go_offline_and_are_not_scheduled(db: Database) -> None:
    user_id, node_id = _setup(db)
    with db.transaction() as s:
        providers.mark_all_offline(s)
    with db.transaction() as s:
        assert s.get(Node, node_id).online is False  # type: ignore[union-attr]
        user = s.get(Account, user_id)
        assert user is not None
        with pytest.raises(NoCapacity, match="no free NVIDIA H100 80GB HBM3: 0 of 0 free"):
            pods.create_pod(s, user, _request())


def test_catalog_lists_by_rate_as_integers_with_free_counts(db: Database) -> None:
    _setup(db, count=3)
    with db.transaction(readonly=True) as s:
        listed = catalog.list_gpu_types(s)
    rates = [row.gpu_type.rate_per_second for row in listed]
    assert rates == sorted(rates)  # numeric order, though stored as text
    h100 = next(row for row in listed if row.gpu_type.id == "NVIDIA H100 80GB HBM3")
    assert (h100.free, h100.total) == (3, 3)


def test_only_admins_edit_the_catalog(db: Database) -> None:
    with db.transaction() as s:
        user, _ = accounts.create_account(s, "user")
        admin, _ = accounts.create_account(s, "admin", is_admin=True)
    with db.transaction() as s, pytest.raises(Forbidden, match="only an admin"):
        catalog.update_gpu_type(s, user, "NVIDIA H200", rate=1)
    with db.transaction() as s:
        catalog.update_gpu_type(s, admin, "NVIDIA H200", rate=7)
    with db.transaction() as s:
        assert catalog.get_gpu_type(s, "NVIDIA H200").rate_per_second == 7
    with db.transaction() as s, pytest.raises(InvalidInput, match="memoryInGb"):
        catalog.update_gpu_type(s, admin, "NVIDIA H200", memory_gb=0)


def test_a_node_declaring_an_unknown_gpu_type_is_warned_about(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    _setup(db)
    with db.transaction() as s:
        owner, _ = accounts.create_account(s, "p2")
        providers.become_provider(s, owner, "0x" + "ef" * 20)
        node, _ = providers.register_node(s, owner, "odd", None)
        providers.node_connected(
            s, node.id, runtime="local", public_host="h", gpus=[GpuInfo(index=0, type="Tesla K80")]
        )
    assert "GPU types not in the catalog: ['Tesla K80']" in caplog.text


def test_migrations_and_models_describe_the_same_schema(db: Database) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from openpod.adapters.store import Base

    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_migration_0004_backfills_allocations_of_pods_holding_gpus(db_url: str) -> None:
    migrate(db_url, "0003")
    database = Database(db_url)
    try:
        with database.transaction() as s:
            # Rows as the schema of revision 0003 has them (the models have grown since).
            s.execute(sa.table("accounts", *(sa.column(c) for c in (
                "id", "name", "is_admin", "created_at"))).insert().values(
                id="acc_1", name="p", is_admin=False, created_at=datetime.now(UTC)))  # fmt: skip
            owner = s.get(Account, "acc_1", options=[sa.orm.load_only(Account.id)])
            assert owner is not None
            provider = providers.become_provider(s, owner, "0x" + "ab" * 20)
            node = Node(id="node_1", provider_id=provider.id, name="n", token_hash="h" * 64,
                        gpus=[{"index": i, "type": "NVIDIA H200"} for i in range(4)])  # fmt: skip
            s.add(node)
            s.flush()
            old_pods = sa.table("pods", *(sa.column(c) for c in (
                "id", "account_id", "node_id", "name", "image", "gpu_type_id", "gpu_count",
                "gpu_indices", "ports", "env", "command", "rate_per_second", "desired_status",
                "status", "generation", "revision", "port_mappings", "ready_ports", "ssh_ready",
                "ssh_available", "created_at", "updated_at")))  # fmt: skip
            for pod_id, status, indices in [("running1", "RUNNING", [0, 2]),
                                             ("stopped1", "STOPPED", [1])]:  # fmt: skip
                s.execute(old_pods.insert().values(
                    id=pod_id, account_id=owner.id, node_id=node.id, name="x", image="i",
                    gpu_type_id="NVIDIA H200", gpu_count=len(indices),
                    gpu_indices=json.dumps(indices), ports="[]", env="{}", command="[]",
                    rate_per_second="1", desired_status="RUNNING", status=status, generation=1,
                    revision=1, port_mappings="{}", ready_ports="[]", ssh_ready=False,
                    ssh_available=True, created_at=datetime.now(UTC),
                    updated_at=datetime.now(UTC)))  # fmt: skip
        migrate(db_url)
        assert _held(database) == [(0, "running1"), (2, "running1")]
    finally:
        database.dispose()
