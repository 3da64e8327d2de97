"""End to end on real servers: a pod from create to terminate, entered with the real ssh client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.e2e.conftest import Platform
from tests.support.net import port_open, wait_until
from tests.support.ssh import ssh

HTTP_CMD = ["sh", "-c", 'exec python3 -m http.server --bind 127.0.0.1 "$OPENPOD_TCP_PORT_8888"']


def _free(platform: Platform, gpu: str) -> int:
    types = platform.user.ok("GET", "/gpu-types")
    return int(next(t["free"] for t in types if t["id"] == gpu))


def test_create_ssh_stop_resume_terminate(platform: Platform, tmp_path: Path) -> None:
    user = platform.user
    free_before = _free(platform, "NVIDIA GeForce RTX 4090")
    created = user.ok(
        "POST",
        "/pods",
        json={
            "name": "e2e",
            "imageName": "local",
            "gpuTypeIds": ["NVIDIA GeForce RTX 4090"],
            "gpuCount": 2,
            "ports": "8888/http,22/tcp",
            "env": {"GREETING": "hello world"},
            "dockerStartCmd": HTTP_CMD,
        },
    )
    assert created["status"] == "STARTING" and created["desiredStatus"] == "RUNNING"
    pod = user.wait(created["id"])
    assert pod["status"] == "RUNNING"
    assert pod["ssh"]["command"].startswith(f"ssh root@127.0.0.1 -p {pod['portMappings']['22']}")
    assert _free(platform, "NVIDIA GeForce RTX 4090") == free_before - 2

    out = ssh(
        pod,
        platform.key_file,
        'echo "$OPENPOD_POD_ID|$GREETING|$(pwd)|$HOME|$CUDA_VISIBLE_DEVICES|$(hostname)"; '
        "echo kept > /workspace/kept.txt; touch /tmp/pod-private-tmp",
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    pod_id, greeting, cwd, home, cuda, hostname = out.stdout.strip().split("|")
    assert (pod_id, greeting, cwd, home) == (pod["id"], "hello world", "/workspace", "/workspace")
    assert sorted(int(i) for i in cuda.split(",")) == sorted(pod["gpuIndices"])
    assert hostname == pod["id"]  # its own UTS namespace
    assert not Path("/tmp/pod-private-tmp").exists()  # its own /tmp

    def http_ready() -> bool:
        return 8888 in user.ok("GET", f"/pods/{pod['id']}")["readyPorts"]

    wait_until(http_ready, 15, "the pod's HTTP port to be reported ready")
    host_ports = [int(p) for p in pod["portMappings"].values()]
    assert all(port_open(p) for p in host_ports)

    user.ok("POST", f"/pods/{pod['id']}/stop")
    stopped = user.wait(pod["id"], "STOPPED")
    assert stopped["ssh"] is None and stopped["portMappings"] == {}
    assert not any(port_open(p) for p in host_ports), "a port of the stopped pod still answers"
    assert _free(platform, "NVIDIA GeForce RTX 4090") == free_before

    user.ok("POST", f"/pods/{pod['id']}/start")
    resumed = user.wait(pod["id"])
    assert resumed["ssh"]["hostKey"] == pod["ssh"]["hostKey"], "host key changed across resume"
    out = ssh(resumed, platform.key_file, "cat /workspace/kept.txt", tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "kept", out.stderr

    user.ok("DELETE", f"/pods/{pod['id']}")
    gone = user.wait(pod["id"], "TERMINATED")
    assert gone["status"] == "TERMINATED"
    assert not (platform.root / "node" / "pods" / pod["id"]).exists(), "pod files left behind"
    assert not any(port_open(int(p)) for p in resumed["portMappings"].values())
    assert pod["id"] not in [p["id"] for p in user.ok("GET", "/pods")]
    assert _free(platform, "NVIDIA GeForce RTX 4090") == free_before


def test_workload_exit_stops_the_pod_with_its_code(platform: Platform) -> None:
    created = platform.user.ok(
        "POST",
        "/pods",
        json={
            "name": "exits",
            "imageName": "local",
            "gpuTypeId": "NVIDIA GeForce RTX 4090",
            "gpuCount": 1,
            "dockerStartCmd": ["sh", "-c", "exit 3"],
        },
    )

    def ended() -> bool:
        return platform.user.ok("GET", f"/pods/{created['id']}")["status"] in ("FAILED", "STOPPED")

    wait_until(ended, 15, "the exiting pod to end")
    pod = platform.user.ok("GET", f"/pods/{created['id']}")
    assert pod["status"] == "FAILED" and pod["statusReason"] == "workload exited with code 3"
    assert pod["desiredStatus"] == "STOPPED"
    platform.user.ok("DELETE", f"/pods/{created['id']}")
    platform.user.wait(created["id"], "TERMINATED")


def _pods(platform: Platform) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = platform.user.ok(
        "GET", "/pods", params={"includeTerminated": True}
    )
    return result


def test_bad_input_is_refused_clearly_and_changes_nothing(platform: Platform) -> None:
    before = _pods(platform)
    good = {
        "name": "bad",
        "imageName": "local",
        "gpuTypeIds": ["NVIDIA GeForce RTX 4090"],
        "gpuCount": 1,
    }
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"gpuTypeIds": ["NVIDIA Imaginary 1"]}, 400, "unknown GPU type 'NVIDIA Imaginary 1'"),
        ({"gpuCount": 0}, 400, "gpuCount must be between 1 and 16, not 0"),
        ({"gpuCount": 5}, 409, "not enough free NVIDIA GeForce RTX 4090: 5 asked, 4 of 4 free"),
        ({"ports": "8888/udpx"}, 400, "protocol 'udpx' is not one of http, tcp"),
        ({"ports": "70000/tcp"}, 400, "70000 is outside 1-65535"),
        ({"ports": ["8888/http", "8888/http"]}, 400, "port 8888 is listed more than once"),
        ({"imageName": ""}, 400, "imageName must not be empty"),
        ({"publicKey": "ssh-rsa AAAAB3NzaC1yc2E"}, 400, "SSH public key"),
        ({"gpuCount": "two"}, 422, "gpuCount"),
    ]
    for change, status, message in cases:
        response = platform.user.post("/pods", json={**good, **change})
        assert response.status_code == status, (change, response.text)
        assert message in response.json()["detail"], (change, response.text)
    bad_key = platform.user.post("/ssh-keys", json={"publicKey": "ssh-ed25519 AAAA%%%"})
    assert bad_key.status_code == 400 and "not base64" in bad_key.json()["detail"]
    assert _pods(platform) == before


def test_auth_and_ownership(platform: Platform) -> None:
    from tests.support.platform import Api, signup

    created = platform.user.ok(
        "POST",
        "/pods",
        json={
            "name": "mine",
            "imageName": "local",
            "gpuTypeId": "NVIDIA GeForce RTX 4090",
            "gpuCount": 1,
        },
    )
    with Api(platform.plane.url) as anonymous:
        missing = anonymous.get("/pods")
    assert missing.status_code == 401 and "missing API key" in missing.json()["detail"]
    with Api(platform.plane.url, "op_wrong") as wrong_key:
        wrong = wrong_key.get("/pods")
    assert wrong.status_code == 401 and wrong.json()["detail"] == "invalid API key"
    with signup(platform.plane.url, "mallory") as mallory:
        for method, path in [("GET", ""), ("POST", "/stop"), ("POST", "/start"), ("DELETE", "")]:
            response = mallory.request(method, f"/pods/{created['id']}{path}")
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["detail"] == f"no such pod {created['id']!r}"
    assert platform.user.wait(created["id"])["status"] == "RUNNING"  # untouched
    platform.user.ok("DELETE", f"/pods/{created['id']}")
    platform.user.wait(created["id"], "TERMINATED")


def test_openapi_is_served(platform: Platform) -> None:
    spec = platform.user.ok("GET", "/openapi.json")
    for path in (
        "/pods",
        "/pods/{pod_id}",
        "/pods/{pod_id}/stop",
        "/pods/{pod_id}/start",
        "/gpu-types",
    ):
        assert path in spec["paths"], path


def test_resume_fails_clearly_when_its_gpus_are_taken(platform: Platform) -> None:
    user = platform.user
    body = {"name": "a", "imageName": "local", "gpuTypeId": "NVIDIA H100 80GB HBM3"}
    first = user.wait(user.ok("POST", "/pods", json={**body, "gpuCount": 2})["id"])
    user.ok("POST", f"/pods/{first['id']}/stop")
    user.wait(first["id"], "STOPPED")
    taker = user.wait(user.ok("POST", "/pods", json={**body, "gpuCount": 1})["id"])

    refused = user.post(f"/pods/{first['id']}/start")
    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        f"cannot resume pod {first['id']}: its node has 1 of 2 NVIDIA H100 80GB HBM3 free and "
        "the pod needs 2 (the pod's /workspace lives on that node)"
    )
    assert user.ok("GET", f"/pods/{first['id']}")["status"] == "STOPPED"  # nothing half-done

    user.ok("DELETE", f"/pods/{taker['id']}")
    user.wait(taker["id"], "TERMINATED")
    user.ok("POST", f"/pods/{first['id']}/start")
    resumed = user.wait(first["id"])
    assert resumed["nodeId"] == first["nodeId"]
    assert sorted(resumed["gpuIndices"]) == sorted(first["gpuIndices"])
    user.ok("DELETE", f"/pods/{first['id']}")
    user.wait(first["id"], "TERMINATED")


def test_a_per_pod_key_logs_in_beside_the_accounts_keys(platform: Platform, tmp_path: Path) -> None:
    import subprocess

    extra = tmp_path / "pod_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", str(extra)], check=True)
    user = platform.user
    created = user.ok(
        "POST",
        "/pods",
        json={"name": "k", "imageName": "local", "gpuTypeId": "NVIDIA GeForce RTX 4090",
              "publicKey": extra.with_suffix(".pub").read_text()},
    )  # fmt: skip
    pod = user.wait(created["id"])
    for key in (extra, platform.key_file):
        out = ssh(pod, key, "echo in", tmp_path)
        assert out.stdout.strip() == "in", out.stderr
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    refused = ssh(pod, stranger, "echo in", tmp_path)
    assert refused.returncode == 255
    assert "Permission denied" in refused.stderr
    user.ok("DELETE", f"/pods/{pod['id']}")
    user.wait(pod["id"], "TERMINATED")


def test_only_admins_edit_the_gpu_catalog(platform: Platform) -> None:
    response = platform.user.patch("/gpu-types/NVIDIA H200", json={"ratePerSecond": 1})
    assert response.status_code == 403
    assert response.json()["detail"] == "only an admin can change the GPU catalog"
    rates = {t["id"]: t["ratePerSecond"] for t in platform.user.ok("GET", "/gpu-types")}
    assert rates["NVIDIA H200"] == "1108333333333333"


def test_an_admin_made_by_the_operator_edits_the_catalog(platform: Platform) -> None:
    import subprocess
    import sys

    from tests.support.platform import Api

    made = subprocess.run(
        [sys.executable, "-m", "openpod", "admin", "create-account", "ops", "--admin",
         "--data-dir", str(platform.root / "plane")],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    key = made.stdout.split("api key: ")[1].strip()
    with Api(platform.plane.url, key) as admin:
        assert admin.ok("GET", "/me")["isAdmin"] is True
        changed = admin.ok("PATCH", "/gpu-types/NVIDIA B200", json={"ratePerSecond": 42})
        assert (changed["ratePerSecond"], changed["pricePerHour"]) == ("42", "0.0000")
        added = admin.ok("POST", "/gpu-types", json={"id": "AMD Instinct MI300X",
                         "displayName": "MI300X", "memoryInGb": 192, "ratePerSecond": 7})  # fmt: skip
        assert added["id"] == "AMD Instinct MI300X"
        duplicate = admin.post("/gpu-types", json={"id": "AMD Instinct MI300X",
                               "displayName": "x", "memoryInGb": 1, "ratePerSecond": 1})  # fmt: skip
        assert duplicate.status_code == 409
    listed = {t["id"]: t["ratePerSecond"] for t in platform.user.ok("GET", "/gpu-types")}
    assert listed["NVIDIA B200"] == "42"
    assert listed["AMD Instinct MI300X"] == "7"


def test_api_keys_are_created_listed_and_revoked(platform: Platform) -> None:
    from tests.support.platform import Api, signup

    with signup(platform.plane.url, "rotator") as first:
        [only] = first.ok("GET", "/api-keys")
        last = first.delete(f"/api-keys/{only['id']}")
        assert last.status_code == 409
        assert "last API key" in last.json()["detail"]
        made = first.ok("POST", "/api-keys")
        assert made["apiKey"].startswith(made["hint"].removesuffix("…"))
        listed = first.ok("GET", "/api-keys")
        assert [k["id"] for k in listed] == [only["id"], made["id"]]
        assert all("apiKey" not in k for k in listed)  # never shown again
        with Api(platform.plane.url, made["apiKey"]) as second:
            assert second.ok("GET", "/me")["name"] == "rotator"
            assert second.delete(f"/api-keys/{only['id']}").status_code == 204
        revoked = first.get("/me")  # the first key no longer works
        assert revoked.status_code == 401
        missing = Api(platform.plane.url, made["apiKey"])
        with missing:
            assert missing.delete("/api-keys/key_nope").status_code == 404
