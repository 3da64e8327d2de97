"""The lease a user signs (EIP-712) so that one run of a pod can be billed on-chain: its typed
struct, its domain's name and version, and how names become `bytes32` — one definition for the
chain adapter that builds it and the CLI that checks what it is asked to sign."""

from eth_utils.crypto import keccak

DOMAIN_NAME = "openpod payments"
DOMAIN_VERSION = "1"

LEASE_TYPES: dict[str, list[dict[str, str]]] = {
    "EIP712Domain": [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ],
    "Lease": [
        {"name": "pod", "type": "bytes32"},
        {"name": "generation", "type": "uint32"},
        {"name": "user", "type": "address"},
        {"name": "provider", "type": "address"},
        {"name": "gpuType", "type": "bytes32"},
        {"name": "gpuCount", "type": "uint16"},
        {"name": "maxRate", "type": "uint256"},
        {"name": "start", "type": "uint64"},
    ],
}


def name_bytes32(text: str) -> bytes:
    """A pod id or GPU type as bytes32: its UTF-8 right-padded with zeros when it fits in 32
    bytes, so that it reads as itself in events; longer names become their keccak256."""
    raw = text.encode()
    if not raw:
        raise ValueError("an empty name has no bytes32 form")
    return raw.ljust(32, b"\0") if len(raw) <= 32 else keccak(raw)
