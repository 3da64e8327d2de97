"""The runtime as the node agent drives it (reconcile), and the ways to reach a cluster."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from openpod.adapters.runtimes.base import PodPhase, RuntimeError_
from openpod.adapters.runtimes.kubernetes import KubernetesConfig, KubernetesRuntime
from openpod.node.reconcile import reconcile
from openpod.protocol import PodAssignment, PodSpec
from tests.kubernetes.conftest import API_TOKEN, Listeners, launch_of, pod_ip
from tests.support.kubeapi import KubeApiServer
from tests.support.net import wait_until


def assignment(
    generation: int, desired: Literal["running", "stopped", "terminated"], image: str = "debian:12"
) -> PodAssignment:
    spec = PodSpec(
        image=image,
        command=["sleep", "infinity"],
        ports=["22/tcp", "8888/http"],
        gpu_indices=[0, 1],
        gpu_type="h100",
        public_keys=["ssh-ed25519 AAAAC3Nza a@b"],
    )
    return PodAssignment(
        pod_id="podagt111",
        generation=generation,
        desired=desired,
        spec=spec,
        meter_token="meter-token-from-the-plane",
    )


def test_the_agent_drives_a_pod_through_its_life(
    api: KubeApiServer, runtime: KubernetesRuntime, listeners: Listeners
) -> None:
    meter_url = "ws://127.0.0.1:9/meter/connect"
    report = reconcile(runtime, assignment(1, "running"), 1, meter_url)
    assert report.phase == "starting"
    pod = api.objects("pods")["openpod-podagt111-1"]
    limits = pod["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "2"
    assert pod["spec"]["initContainers"][0]["name"] == "meter"

    ip = pod_ip()
    api.run_pod("openpod-podagt111-1", ip)
    listeners.serve(ip, 22)
    wait_until(
        lambda: reconcile(runtime, assignment(1, "running"), 1, meter_url).ssh_ready,
        10,
        "the agent to see SSH ready",
    )
    report = reconcile(runtime, assignment(1, "running"), 1, meter_url)
    assert report.phase == "running" and report.address == ip
    assert report.port_mappings == {"22": 22, "8888": 8888} and report.ready_ports == [22]

    assert reconcile(runtime, assignment(1, "stopped"), 1).phase == "stopped"
    assert "openpod-podagt111-workspace" in api.objects("persistentvolumeclaims")
    assert reconcile(runtime, assignment(2, "running"), 1, meter_url).phase == "starting"
    assert set(api.objects("pods")) == {"openpod-podagt111-2"}
    assert reconcile(runtime, assignment(2, "terminated"), 1).phase == "absent"
    assert api.objects("pods") == {} and api.objects("persistentvolumeclaims") == {}
    assert api.objects("secrets") == {}


def test_the_agent_reports_a_refused_start_as_failed(
    api: KubeApiServer, runtime: KubernetesRuntime
) -> None:
    report = reconcile(runtime, assignment(1, "running", image="not an image"), 1)
    assert report.phase == "failed"
    assert report.reason == "pod podagt111: image 'not an image' is not an image reference"
    assert api.objects("pods") == {}


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (the cluster's CA, here its own)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "apiserver.crt", tmp_path / "apiserver.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_file), str(key_file)


@pytest.fixture
def tls_api(tls_files: tuple[str, str]) -> Iterator[KubeApiServer]:
    with KubeApiServer(API_TOKEN, tls=tls_files) as server:
        yield server


@pytest.fixture
def closing() -> Iterator[Callable[[KubernetesConfig], KubernetesRuntime]]:
    made: list[KubernetesRuntime] = []

    def make(config: KubernetesConfig) -> KubernetesRuntime:
        made.append(KubernetesRuntime(config))
        return made[-1]

    yield make
    for runtime in made:
        runtime.close()


def test_https_with_the_cluster_ca(
    tls_api: KubeApiServer,
    tls_files: tuple[str, str],
    closing: Callable[[KubernetesConfig], KubernetesRuntime],
) -> None:
    config = KubernetesConfig(
        server=tls_api.url, token=API_TOKEN, ca_file=tls_files[0], namespace="openpod"
    )
    runtime = closing(config)
    assert runtime.start(launch_of("podtls111")).phase is PodPhase.STARTING
    assert "openpod-podtls111-1" in tls_api.objects("pods")


def test_https_refuses_a_server_it_cannot_verify(
    tls_api: KubeApiServer, closing: Callable[[KubernetesConfig], KubernetesRuntime]
) -> None:
    config = KubernetesConfig(
        server=tls_api.url, token=API_TOKEN, namespace="openpod", sync_seconds=1.0
    )
    runtime = closing(config)
    with pytest.raises(RuntimeError_, match=r"ConnectError.*CERTIFICATE_VERIFY_FAILED"):
        runtime.adopt()
    assert tls_api.objects("pods") == {}


def test_a_kubeconfig_file_with_its_context(
    tls_api: KubeApiServer,
    tls_files: tuple[str, str],
    tmp_path: Path,
    closing: Callable[[KubernetesConfig], KubernetesRuntime],
) -> None:
    ca_data = base64.b64encode(Path(tls_files[0]).read_bytes()).decode()
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "gpu",
                "cluster": {"server": tls_api.url, "certificate-authority-data": ca_data},
            },
            {"name": "other", "cluster": {"server": "https://127.0.0.1:1"}},
        ],
        "users": [{"name": "openpod", "user": {"token": API_TOKEN}}],
        "contexts": [
            {"name": "gpu", "context": {"cluster": "gpu", "user": "openpod"}},
            {"name": "other", "context": {"cluster": "other", "user": "openpod"}},
        ],
        "current-context": "other",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(kubeconfig))  # JSON is YAML
    runtime = closing(KubernetesConfig(kubeconfig=str(path), context="gpu", namespace="openpod"))
    runtime.start(launch_of("podcfg111"))
    assert [obs.pod_id for obs in runtime.adopt()] == ["podcfg111"]


def test_in_cluster_with_the_service_account(
    tls_api: KubeApiServer,
    tls_files: tuple[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    closing: Callable[[KubernetesConfig], KubernetesRuntime],
) -> None:
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text(API_TOKEN)
    (account / "namespace").write_text("elsewhere")  # the config's namespace wins
    (account / "ca.crt").write_bytes(Path(tls_files[0]).read_bytes())
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(tls_api.port))
    runtime = closing(KubernetesConfig(service_account=str(account), namespace="openpod"))
    runtime.start(launch_of("podsa1111"))
    assert "openpod-podsa1111-1" in tls_api.objects("pods")


def test_in_cluster_without_the_service_env_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "token").write_text(API_TOKEN)
    (tmp_path / "namespace").write_text("openpod")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(RuntimeError_, match="KUBERNETES_SERVICE_HOST is not set"):
        KubernetesRuntime(KubernetesConfig(service_account=str(tmp_path)))


def test_a_config_without_a_cluster_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError_, match="set kubeconfig, service_account or server"):
        KubernetesRuntime(KubernetesConfig())
    path = tmp_path / "kubeconfig"
    with pytest.raises(RuntimeError_, match="not found"):
        KubernetesRuntime(KubernetesConfig(kubeconfig=str(path)))
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "Config"}))
    with pytest.raises(RuntimeError_, match="is not a kubeconfig"):
        KubernetesRuntime(KubernetesConfig(kubeconfig=str(path)))
    empty = {"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [], "contexts": []}
    path.write_text(json.dumps(empty))
    threads = threading.active_count()
    with pytest.raises(RuntimeError_, match="Context 'nope' not found"):
        KubernetesRuntime(KubernetesConfig(kubeconfig=str(path), context="nope"))
    assert threading.active_count() == threads  # its loop's thread was not left behind
