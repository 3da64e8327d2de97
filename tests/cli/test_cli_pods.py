"""``openpod pod ...``: the request bodies, waiting, output and exit codes."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from openpod.cli import client as client_mod
from openpod.cli import pods

POD_ID = "k3x9q2m7v1c4"
CREATE = (
    "pod",
    "create",
    "--name",
    "train",
    "--image",
    "openpod/base:1",
    "--gpu-type",
    "NVIDIA GeForce RTX 4090",
    "--ports",
    "8888/http,22/tcp",
    "--env",
    "HF_TOKEN=abc=def",
    "--env",
    "EMPTY=",
    "--cmd",
    "python train.py && sleep infinity",
)


def test_create_sends_the_body_and_waits_until_running(
    cli: Any, fake_api: Any, make_pod: Any
) -> None:
    fake_api.on("POST", "/pods", make_pod(status="PENDING", ssh=None), status=201)
    fake_api.on(
        "GET",
        f"/pods/{POD_ID}/wait",
        httpx.Response(408, json={"detail": "timed out"}),
        make_pod(),
    )
    fake_api.on("GET", f"/pods/{POD_ID}", make_pod(status="STARTING", ssh=None))
    result = cli(*CREATE, "--timeout", "30")
    assert result.exit_code == 0, result.output
    assert fake_api.body("POST", "/pods") == {
        "name": "train",
        "imageName": "openpod/base:1",
        "gpuTypeIds": ["NVIDIA GeForce RTX 4090"],
        "gpuCount": 1,
        "ports": ["8888/http", "22/tcp"],
        "env": {"HF_TOKEN": "abc=def", "EMPTY": ""},
        "dockerStartCmd": ["sh", "-c", "python train.py && sleep infinity"],
    }
    waits = fake_api.sent("GET", f"/pods/{POD_ID}/wait")
    assert len(waits) == 2
    assert waits[0].url.params["status"] == "RUNNING"
    assert 1 <= int(waits[0].url.params["timeout"]) <= pods.WAIT_CHUNK_SECONDS
    assert "ssh root@127.0.0.1 -p 40123" in result.stdout
    assert "is RUNNING" in result.stdout
    assert "8888/http -> http://127.0.0.1:40124" in result.stdout
    assert f"waiting for pod {POD_ID} (PENDING)…" in result.stderr
    assert f"waiting for pod {POD_ID} (STARTING)…" in result.stderr
    assert "waiting" not in result.stdout


def test_create_no_wait_json_prints_only_the_pod(cli: Any, fake_api: Any, make_pod: Any) -> None:
    created = make_pod(status="PENDING", ssh=None)
    fake_api.on("POST", "/pods", created, status=201)
    result = cli(*CREATE, "--no-wait", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == created
    assert fake_api.sent("GET", f"/pods/{POD_ID}/wait") == []


def test_create_with_public_key_file(cli: Any, fake_api: Any, make_pod: Any, tmp_path: Any) -> None:
    key_file = tmp_path / "k.pub"
    key_file.write_text("ssh-ed25519 AAAAkey me@laptop\n")
    fake_api.on("POST", "/pods", make_pod(), status=201)
    result = cli(*CREATE, "--public-key-file", str(key_file), "--json")
    assert result.exit_code == 0, result.output
    assert fake_api.body("POST", "/pods")["publicKey"] == "ssh-ed25519 AAAAkey me@laptop"


def test_create_bad_env_is_a_usage_error(cli: Any, fake_api: Any) -> None:
    result = cli(*CREATE, "--env", "NOEQUALS")
    assert result.exit_code == 2
    assert "NOEQUALS" in result.stderr
    assert "--env" in result.stderr
    assert fake_api.requests == []


def test_create_failed_pod_while_waiting_exits_5(cli: Any, fake_api: Any, make_pod: Any) -> None:
    fake_api.on("POST", "/pods", make_pod(status="PENDING", ssh=None), status=201)
    fake_api.error("GET", f"/pods/{POD_ID}/wait", 409, f"pod {POD_ID} FAILED: image not found")
    result = cli(*CREATE)
    assert result.exit_code == 5
    assert result.stderr.strip().endswith(f"error: pod {POD_ID} FAILED: image not found")


def test_client_side_timeout_exits_6(cli: Any, fake_api: Any, make_pod: Any) -> None:
    starting = make_pod(status="STARTING", ssh=None)
    fake_api.error("GET", f"/pods/{POD_ID}/wait", 408, "timed out")
    fake_api.on("GET", f"/pods/{POD_ID}", starting)
    result = cli("pod", "wait", POD_ID, "--timeout", "0.05")
    assert result.exit_code == 6
    assert f"timed out after 0.05s waiting for pod {POD_ID} to be RUNNING" in result.stderr
    assert "(it is STARTING)" in result.stderr


def test_wait_sees_the_pod_end_first(cli: Any, fake_api: Any, make_pod: Any) -> None:
    fake_api.on("GET", f"/pods/{POD_ID}", make_pod(status="FAILED", statusReason="OOM", ssh=None))
    result = cli("pod", "wait", POD_ID)
    assert result.exit_code == 5
    assert "is FAILED (OOM)" in result.stderr


def test_wait_for_stopped(cli: Any, fake_api: Any, make_pod: Any) -> None:
    fake_api.on("GET", f"/pods/{POD_ID}", make_pod(status="STOPPING", ssh=None))
    fake_api.on("GET", f"/pods/{POD_ID}/wait", make_pod(status="STOPPED", ssh=None))
    result = cli("pod", "wait", POD_ID, "--status", "stopped", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "STOPPED"
    assert fake_api.sent("GET", f"/pods/{POD_ID}/wait")[0].url.params["status"] == "STOPPED"


def test_wait_rejects_unknown_status(cli: Any, fake_api: Any) -> None:
    result = cli("pod", "wait", POD_ID, "--status", "READY")
    assert result.exit_code == 2


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, 1), (401, 4), (403, 4), (404, 3), (408, 6), (409, 5), (422, 1), (500, 1)],
)
def test_api_errors_map_to_exit_codes(cli: Any, fake_api: Any, status: int, code: int) -> None:
    fake_api.error("GET", f"/pods/{POD_ID}", status, f"something {status}")
    result = cli("pod", "get", POD_ID)
    assert result.exit_code == code
    assert result.stderr == f"error: something {status}\n"
    assert result.stdout == ""


def test_validation_errors_are_readable(cli: Any, fake_api: Any) -> None:
    detail = [{"loc": ["body", "gpuCount"], "msg": "must be at least 1", "type": "x"}]
    fake_api.on("POST", "/pods", httpx.Response(422, json={"detail": detail}))
    result = cli(*CREATE, "--no-wait")
    assert result.exit_code == 1
    assert "error: gpuCount: must be at least 1" in result.stderr


def test_no_capacity_exits_5(cli: Any, fake_api: Any) -> None:
    fake_api.error("POST", "/pods", 409, "no free NVIDIA GeForce RTX 4090: 0 of 4 free")
    result = cli(*CREATE)
    assert result.exit_code == 5
    assert "no free NVIDIA GeForce RTX 4090" in result.stderr


def test_missing_key_hint_on_401(cli: Any, fake_api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENPOD_API_KEY")
    fake_api.error("GET", "/pods", 401, "missing API key")
    result = cli("pod", "list")
    assert result.exit_code == 4
    assert "openpod config --api-key" in result.stderr
    assert "Authorization" not in fake_api.requests[0].headers


def test_connection_failure_exits_7(cli: Any, fake_api: Any) -> None:
    fake_api.on("GET", "/pods", httpx.ConnectError("[Errno 111] Connection refused"))
    result = cli("pod", "list")
    assert result.exit_code == 7
    assert result.stderr.startswith("error: cannot reach the openpod API at http://fake.openpod: ")


def test_real_connection_refused_exits_7(
    cli: Any, config_dir: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    previous = client_mod.set_client_factory(None)
    try:
        monkeypatch.setenv("OPENPOD_API_URL", "http://127.0.0.1:1")
        result = cli("gpu", "list")
    finally:
        client_mod.set_client_factory(previous)
    assert result.exit_code == 7
    assert "cannot reach the openpod API at http://127.0.0.1:1" in result.stderr


def test_pod_list_table_and_all(cli: Any, fake_api: Any, make_pod: Any) -> None:
    fake_api.on("GET", "/pods", [make_pod(), make_pod(id="p2", status="STARTING", ssh=None)])
    result = cli("pod", "list", "--all")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATUS", "GPU", "IMAGE", "SSH"]
    assert POD_ID in lines[1]
    assert "ssh root@127.0.0.1 -p 40123" in lines[1]
    assert "1x NVIDIA GeForce RTX 4090" in lines[1]
    assert lines[2].split()[:3] == ["p2", "train", "STARTING"]
    assert fake_api.requests[0].url.params["includeTerminated"] == "true"
    default = cli("pod", "list", "--json")
    assert fake_api.requests[1].url.params["includeTerminated"] == "false"
    assert len(json.loads(default.stdout)) == 2


def test_markup_in_names_is_printed_literally(cli: Any, fake_api: Any, make_pod: Any) -> None:
    fake_api.on("GET", f"/pods/{POD_ID}", make_pod(name="[bold]x[/bold]"))
    result = cli("pod", "get", POD_ID)
    assert result.exit_code == 0
    assert "[bold]x[/bold]" in result.stdout


def test_stop_resume_terminate(cli: Any, fake_api: Any, make_pod: Any) -> None:
    fake_api.on("POST", f"/pods/{POD_ID}/stop", make_pod(status="STOPPING", ssh=None))
    fake_api.on("POST", f"/pods/{POD_ID}/start", make_pod(status="STARTING", ssh=None))
    fake_api.on("GET", f"/pods/{POD_ID}/wait", make_pod())
    fake_api.on("DELETE", f"/pods/{POD_ID}", make_pod(status="TERMINATING", ssh=None))
    stop = cli("pod", "stop", POD_ID)
    assert (stop.exit_code, stop.stdout) == (0, f"pod {POD_ID} is STOPPING\n")
    resume = cli("pod", "resume", POD_ID)
    assert resume.exit_code == 0, resume.output
    assert "ssh root@127.0.0.1 -p 40123" in resume.stdout
    terminate = cli("pod", "terminate", POD_ID, "--yes")
    assert (terminate.exit_code, terminate.stdout) == (0, f"pod {POD_ID} is TERMINATING\n")
