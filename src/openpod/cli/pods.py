"""``openpod pod ...``: create, list, inspect, stop, resume, terminate and wait for pods, and
sign the lease that lets a pod's run be paid on-chain (``pod create``/``resume`` sign it when
the CLI has a wallet and the control plane pays on-chain; see :mod:`openpod.cli.leases`)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Annotated

import typer

from openpod.cli import leases
from openpod.cli.client import ApiClient, ApiError, Json, make_client
from openpod.cli.keys import PublicKeyError, read_public_key
from openpod.cli.output import (
    fail,
    handle_api_errors,
    print_json,
    print_line,
    print_pod_summary,
    print_pod_table,
    progress,
)

app = typer.Typer(name="pod", help="Create and manage GPU pods.", no_args_is_help=True)

WAIT_CHUNK_SECONDS = 10
"""The longest single server-side wait; the CLI loops over these so the shown status updates."""

POD_STATUSES = (
    "PENDING",
    "STARTING",
    "RUNNING",
    "STOPPING",
    "STOPPED",
    "TERMINATING",
    "TERMINATED",
    "FAILED",
)
ENDED_STATUSES = frozenset({"FAILED", "TERMINATED"})

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the pod as JSON (for scripts).")]
TimeoutOpt = Annotated[
    float, typer.Option("--timeout", min=0, help="Seconds to wait at most (exit code 6 after).")
]
WaitOpt = Annotated[bool, typer.Option("--wait/--no-wait", help="Wait until the pod is RUNNING.")]
PodArg = Annotated[str, typer.Argument(metavar="POD", help="The pod's id.")]
NoLeaseOpt = Annotated[
    bool,
    typer.Option(
        "--no-lease",
        help="Do not sign the run's lease with your wallet (its run is then not paid on-chain"
        " until `openpod pod lease POD --sign`).",
    ),
]


def parse_env(values: list[str] | None) -> dict[str, str]:
    """Turn ``["K=V", ...]`` into a dict; a value without ``=`` is a usage error naming it."""
    env: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="'--env'")
        env[key] = value
    return env


def parse_ports(values: list[str] | None) -> list[str]:
    """Turn ``["8888/http,22/tcp", ...]`` into ``["8888/http", "22/tcp", ...]``."""
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


def _waiting_message(pod: Json, target: str) -> str:
    status = pod.get("status", "?")
    if target == "RUNNING":
        return f"waiting for pod {pod.get('id')} ({status})…"
    return f"waiting for pod {pod.get('id')} to be {target} ({status})…"


def _check_not_ended(pod: Json, target: str) -> None:
    status = pod.get("status")
    if status in ENDED_STATUSES and status != target:
        reason = f" ({pod['statusReason']})" if pod.get("statusReason") else ""
        raise ApiError(409, f"pod {pod.get('id')} is {status}{reason}: it will not be {target}")


def wait_for_status(client: ApiClient, pod: Json, target: str, timeout: float) -> Json:
    """Wait until ``pod`` has status ``target``, showing progress on stderr; return the pod.

    Loops over server-side waits of at most :data:`WAIT_CHUNK_SECONDS`. Raises :class:`ApiError`
    408 after ``timeout`` seconds and 409 if the pod fails or is terminated first.
    """
    if pod.get("status") == target:
        return pod
    pod_id = str(pod["id"])
    deadline = time.monotonic() + timeout
    with progress(_waiting_message(pod, target)) as update:
        while True:
            _check_not_ended(pod, target)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ApiError(
                    408,
                    f"timed out after {timeout:g}s waiting for pod {pod_id} to be {target}"
                    f" (it is {pod.get('status')})",
                )
            step = max(1, min(WAIT_CHUNK_SECONDS, math.ceil(remaining)))
            try:
                pod = client.wait_pod(pod_id, target, step)
            except ApiError as exc:
                if exc.status != 408:
                    raise
                pod = client.get_pod(pod_id)
            if pod.get("status") == target:
                return pod
            update(_waiting_message(pod, target))


def _show(pod: Json, as_json: bool) -> None:
    if as_json:
        print_json(pod)
    else:
        print_pod_summary(pod)


@app.command("create")
@handle_api_errors
def create(
    name: Annotated[str, typer.Option("--name", help="A name for the pod.")],
    image: Annotated[str, typer.Option("--image", help="The container image.")],
    gpu_type: Annotated[
        list[str],
        typer.Option(
            "--gpu-type", help="GPU type id (repeat to accept several).", show_default=False
        ),
    ],
    gpu_count: Annotated[int, typer.Option("--gpu-count", min=1, help="GPUs for the pod.")] = 1,
    ports: Annotated[
        list[str] | None,
        typer.Option("--ports", help="Ports to expose, e.g. 8888/http,22/tcp (repeatable)."),
    ] = None,
    env: Annotated[
        list[str] | None, typer.Option("--env", help="Environment variable K=V (repeatable).")
    ] = None,
    cmd: Annotated[
        str | None, typer.Option("--cmd", help="Start command, run as sh -c CMD.")
    ] = None,
    public_key_file: Annotated[
        Path | None,
        typer.Option("--public-key-file", help="An SSH public key to add to this pod only."),
    ] = None,
    private: Annotated[
        bool,
        typer.Option("--private", help="Its URLs require its access token (see `pod token`)."),
    ] = False,
    wait: WaitOpt = True,
    timeout: TimeoutOpt = 60.0,
    no_lease: NoLeaseOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a pod and (by default) wait until it is RUNNING, then show how to SSH in.

    Where the control plane pays on-chain and this CLI has a wallet, the wallet signs the
    run's lease first (checked before it is signed); a lease that cannot be signed is a
    warning, and the pod stays."""
    body: Json = {
        "name": name,
        "imageName": image,
        "gpuTypeIds": list(gpu_type),
        "gpuCount": gpu_count,
        "env": parse_env(env),
    }
    port_list = parse_ports(ports)
    if port_list:
        body["ports"] = port_list
    if cmd is not None:
        body["dockerStartCmd"] = ["sh", "-c", cmd]
    if private:
        body["private"] = True
    if public_key_file is not None:
        try:
            body["publicKey"] = read_public_key(public_key_file)
        except PublicKeyError as exc:
            raise typer.BadParameter(str(exc), param_hint="'--public-key-file'") from None
    with make_client() as client:
        pod = client.create_pod(body)
        if not no_lease:
            leases.sign_after_start(client, pod, generation=leases.FIRST_RUN)
        if wait:
            pod = wait_for_status(client, pod, "RUNNING", timeout)
    _show(pod, as_json)


@app.command("token")
@handle_api_errors
def token(pod_id: PodArg, as_json: JsonOpt = False) -> None:
    """Print a private pod's access token: send it as `Authorization: Bearer` or the cookie."""
    with make_client() as client:
        answer = client.access_token(pod_id)
    if as_json:
        print_json(answer)
    else:
        print_line(str(answer.get("token")))


@app.command("list")
@handle_api_errors
def list_pods(
    all_pods: Annotated[bool, typer.Option("--all", help="Include terminated pods.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
) -> None:
    """List your pods."""
    with make_client() as client:
        pods = client.list_pods(include_terminated=all_pods)
    if as_json:
        print_json(pods)
    else:
        print_pod_table(pods)


@app.command("get")
@handle_api_errors
def get(pod_id: PodArg, as_json: JsonOpt = False) -> None:
    """Show one pod."""
    with make_client() as client:
        pod = client.get_pod(pod_id)
    _show(pod, as_json)


@app.command("stop")
@handle_api_errors
def stop(pod_id: PodArg, as_json: JsonOpt = False) -> None:
    """Stop a pod (its GPUs are released; resume it later)."""
    with make_client() as client:
        pod = client.stop_pod(pod_id)
    if as_json:
        print_json(pod)
    else:
        print_line(f"pod {pod.get('id', pod_id)} is {pod.get('status')}")


@app.command("resume")
@handle_api_errors
def resume(
    pod_id: PodArg,
    wait: WaitOpt = True,
    timeout: TimeoutOpt = 60.0,
    no_lease: NoLeaseOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Start a stopped pod again and (by default) wait until it is RUNNING; the new run's
    lease is signed as `pod create` signs it."""
    with make_client() as client:
        pod = client.start_pod(pod_id)
        if not no_lease:
            leases.sign_after_start(client, pod, generation=None)
        if wait:
            pod = wait_for_status(client, pod, "RUNNING", timeout)
    _show(pod, as_json)


@app.command("terminate")
@handle_api_errors
def terminate(
    pod_id: PodArg,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Accepted for scripts; openpod never prompts.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Terminate a pod for good (it is deleted with its container). Never prompts."""
    del yes
    with make_client() as client:
        pod = client.terminate_pod(pod_id)
    if as_json:
        print_json(pod)
    else:
        print_line(f"pod {pod.get('id', pod_id)} is {pod.get('status')}")


@app.command("wait")
@handle_api_errors
def wait_cmd(
    pod_id: PodArg,
    status: Annotated[
        str, typer.Option("--status", help="The status to wait for, e.g. RUNNING or STOPPED.")
    ] = "RUNNING",
    timeout: TimeoutOpt = 60.0,
    as_json: JsonOpt = False,
) -> None:
    """Wait until a pod has a status (exit code 6 on timeout, 5 if it fails first)."""
    target = status.upper()
    if target not in POD_STATUSES:
        raise typer.BadParameter(
            f"{status!r} is not one of {', '.join(POD_STATUSES)}", param_hint="'--status'"
        )
    with make_client() as client:
        pod = wait_for_status(client, client.get_pod(pod_id), target, timeout)
    _show(pod, as_json)


@app.command("lease")
@handle_api_errors
def lease(
    pod_id: PodArg,
    sign: Annotated[
        bool, typer.Option("--sign", help="Sign it with your wallet if it is not signed yet.")
    ] = False,
    keystore: leases.KeystoreOption = None,
    password_file: leases.PasswordFile = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the lease of the pod's current run (what lets it be paid on-chain), or sign it."""
    try:
        with make_client() as client:
            answer = leases.lease_command(
                client, pod_id, sign=sign, keystore=keystore, password_file=password_file
            )
    except leases.WalletError as exc:
        raise fail(str(exc)) from None
    if as_json:
        print_json(answer)
    else:
        print_line(leases.lease_line(answer))
