"""Leases: the user's wallet signs, on this machine, the EIP-712 lease of each run of their
pods, so that the payment gateway may bill the run on-chain (``GET /pods/{id}/lease`` gives
the typed data, ``PUT`` stores the signature; see docs/chain.md).

The control plane is not trusted with what is signed. Before the key is decrypted, the typed
data must be exactly a ``Lease`` of the payments contract and chain that ``GET /chain`` names,
for the configured wallet, for this pod and its current run, its GPU type and count, at the
pod's own rate (``costPerSecond`` / ``gpuCount``), starting no earlier than
:data:`START_SKEW_S` before the run was placed. Anything else is refused, field by field.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import typer
from eth_utils.address import is_address, to_checksum_address

from openpod.cli.client import ApiClient, ApiError, Json
from openpod.cli.wallet import (
    ChainInfo,
    KeystoreOption,
    PasswordFile,
    WalletError,
    api_object,
    configured_keystore,
    keystore_address,
    keystore_path,
    load_signer,
)
from openpod.domain.lease import DOMAIN_NAME, DOMAIN_VERSION, LEASE_TYPES
from openpod.domain.lease import name_bytes32 as _name_bytes32

START_SKEW_S = 120
"""How long before its run was placed a lease may start (the control plane takes 60 s for
clock skew between it, the node and the chain); earlier would bill time the pod did not run."""
FIRST_RUN = 1
"""The generation of a pod's first run: what a pod just created runs as."""

__all__ = [
    "KeystoreOption",
    "LeaseRefused",
    "PasswordFile",
    "PodRun",
    "WalletError",
    "check_lease",
    "lease_command",
    "lease_line",
    "sign_after_start",
    "sign_lease",
]


class LeaseRefused(WalletError):
    """The control plane asked the wallet to sign something other than this run's lease."""


def name_bytes32(text: str) -> str:
    """A pod id or GPU type as the hex `bytes32` the control plane puts in a lease."""
    return "0x" + _name_bytes32(text).hex()


def _unix(text: Any) -> int:
    moment = datetime.fromisoformat(str(text))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


@dataclass(frozen=True)
class PodRun:
    """What the pod's own answer says about the run to be paid."""

    pod_id: str
    generation: int | None  # None: the API did not say (only the start then ties it to the run)
    gpu_type: str
    gpu_count: int
    cost_per_second: int  # all its GPUs
    placed: int  # unix seconds the run was placed

    @classmethod
    def of(cls, pod: Json, *, generation: int | None) -> PodRun:
        """`generation`: the run's generation where the pod's answer does not carry one."""
        said = pod.get("generation")
        try:
            return cls(
                pod_id=str(pod["id"]),
                generation=said if isinstance(said, int) else generation,
                gpu_type=str(pod["gpuTypeId"]),
                gpu_count=int(pod["gpuCount"]),
                cost_per_second=int(str(pod["costPerSecond"])),
                placed=_unix(pod.get("lastStartedAt") or pod["createdAt"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LeaseRefused(
                f"the pod's answer lacks what the lease is checked against: {exc!r}"
            ) from None


def _fields(struct: str) -> set[str]:
    return {field["name"] for field in LEASE_TYPES[struct]}


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _address(value: Any) -> str | None:
    return to_checksum_address(value) if isinstance(value, str) and is_address(value) else None


def _hex(value: Any) -> str | None:
    return value.lower() if isinstance(value, str) else None


def check_lease(typed: Any, chain: ChainInfo, wallet: str, run: PodRun) -> None:
    """Refuse (LeaseRefused, naming the field) unless `typed` is the lease of `run` for
    `wallet` on `chain`'s payments contract, at the pod's rate."""

    def refuse(field: str, got: Any, want: Any, note: str = "") -> LeaseRefused:
        return LeaseRefused(
            f"refusing to sign the lease of pod {run.pod_id}: its {field} is {got!r},"
            f" expected {want!r}{note}"
        )

    if not isinstance(typed, dict):
        raise LeaseRefused("the control plane sent no typed data to sign")
    if set(typed) != {"types", "primaryType", "domain", "message"}:
        raise refuse("shape", sorted(typed), ["domain", "message", "primaryType", "types"])
    if typed["primaryType"] != "Lease":
        raise refuse("primaryType", typed["primaryType"], "Lease")
    if typed["types"] != LEASE_TYPES:
        raise refuse("types", typed["types"], LEASE_TYPES)
    domain, message = typed["domain"], typed["message"]
    if not isinstance(domain, dict) or set(domain) != _fields("EIP712Domain"):
        raise refuse("domain", domain, sorted(_fields("EIP712Domain")))
    if not isinstance(message, dict) or set(message) != _fields("Lease"):
        raise refuse("message", message, sorted(_fields("Lease")))
    if domain["name"] != DOMAIN_NAME or domain["version"] != DOMAIN_VERSION:
        raise refuse("domain", [domain["name"], domain["version"]], [DOMAIN_NAME, DOMAIN_VERSION])
    if _integer(domain["chainId"]) != chain.chain_id:
        raise refuse("chainId", domain["chainId"], chain.chain_id)
    payments = to_checksum_address(chain.payments)
    if _address(domain["verifyingContract"]) != payments:
        raise refuse("verifyingContract", domain["verifyingContract"], payments)
    if _address(message["user"]) != to_checksum_address(wallet):
        note = " (this CLI's wallet: `openpod wallet link` links it to your account)"
        raise refuse("user", message["user"], to_checksum_address(wallet), note)
    if _hex(message["pod"]) != name_bytes32(run.pod_id):
        raise refuse("pod", message["pod"], name_bytes32(run.pod_id))
    generation = _integer(message["generation"])
    if generation is None or generation < 1 or run.generation not in (None, generation):
        raise refuse("generation", message["generation"], run.generation or "a run number")
    if _hex(message["gpuType"]) != name_bytes32(run.gpu_type):
        raise refuse("gpuType", message["gpuType"], name_bytes32(run.gpu_type))
    if _integer(message["gpuCount"]) != run.gpu_count:
        raise refuse("gpuCount", message["gpuCount"], run.gpu_count)
    max_rate = _integer(message["maxRate"])
    if max_rate is None or max_rate * run.gpu_count != run.cost_per_second:
        raise refuse("maxRate", message["maxRate"], run.cost_per_second // run.gpu_count)
    start = _integer(message["start"])
    if start is None or start < run.placed - START_SKEW_S:
        raise refuse("start", message["start"], f">= {run.placed - START_SKEW_S}")
    if _address(message["provider"]) is None:
        raise refuse("provider", message["provider"], "an address")


def how_to_sign(pod_id: str) -> str:
    return f"openpod pod lease {pod_id} --sign"


def lease_line(lease: Json) -> str:
    status = lease.get("status") or f"not signed (sign it: {how_to_sign(str(lease.get('podId')))})"
    reason = f" ({lease['reason']})" if lease.get("reason") else ""
    return (
        f"lease {lease.get('leaseId')} of pod {lease.get('podId')} run {lease.get('generation')}:"
        f" {status}{reason}"
    )


def _lease_path(pod_id: str) -> str:
    return f"/pods/{quote(pod_id, safe='')}/lease"


def get_lease(client: ApiClient, pod_id: str) -> Json:
    return api_object(client, "GET", _lease_path(pod_id))


def sign_lease(
    client: ApiClient,
    chain: ChainInfo,
    run: PodRun,
    *,
    keystore: Path | None = None,
    password_file: Path | None = None,
) -> Json:
    """Sign the current run's lease unless it is signed already; the lease as the API then
    says. The typed data is checked before the key is decrypted (no password is asked for a
    lease that is refused), and against the decrypted key's address after."""
    lease = get_lease(client, run.pod_id)
    if lease.get("status") is not None:
        return lease
    typed = lease.get("typedData")
    check_lease(typed, chain, keystore_address(keystore), run)
    signer = load_signer(keystore, password_file)
    check_lease(typed, chain, signer.address, run)  # the keystore's address field could lie
    assert isinstance(typed, dict)
    signature = "0x" + signer.sign_typed_data(typed).hex()
    return api_object(client, "PUT", _lease_path(run.pod_id), json={"signature": signature})


def sign_after_start(client: ApiClient, pod: Json, *, generation: int | None) -> None:
    """After `pod create` / `pod resume`: sign the run's lease where this CLI has a wallet and
    the control plane pays on-chain, and say so in one line on stderr (stdout stays the pod's,
    for scripts). Silent when either is missing. Never fails the command: a lease that cannot
    be signed is a warning saying how to sign it later."""
    if configured_keystore() is None:
        return
    pod_id = str(pod.get("id"))
    try:
        chain = ChainInfo.published(client)
        if chain is None:
            return
        lease = sign_lease(client, chain, PodRun.of(pod, generation=generation))
    except (WalletError, ApiError, typer.Abort) as exc:
        why = str(exc) if not isinstance(exc, typer.Abort) else "no password given"
        if isinstance(exc, ApiError):
            why = exc.detail
        typer.echo(
            f"warning: the lease of pod {pod_id} is not signed: {why}\n"
            f"  its run is not paid on-chain until it is; sign it with: {how_to_sign(pod_id)}",
            err=True,
        )
        return
    typer.echo(lease_line(lease), err=True)


def lease_command(
    client: ApiClient,
    pod_id: str,
    *,
    sign: bool,
    keystore: Path | None,
    password_file: Path | None,
) -> Json:
    """`openpod pod lease POD [--sign]`: the lease (signed first with `sign`)."""
    if not sign:
        return get_lease(client, pod_id)
    if keystore is None and configured_keystore() is None:
        raise WalletError(
            f"no wallet keystore at {keystore_path(None)}: run `openpod wallet create` (or"
            " `openpod wallet use --keystore PATH`), or pass --keystore"
        )
    chain = ChainInfo.fetch(client)
    pod = client.get_pod(pod_id)
    run = PodRun.of(pod, generation=None)
    return sign_lease(client, chain, run, keystore=keystore, password_file=password_file)
