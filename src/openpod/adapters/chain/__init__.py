"""The chain: only this package talks to an EVM node (JSON-RPC) or knows the contracts' ABI.

`Rpc` is the transport, `Codec` the ABI, `Contract` one deployed contract, `deploy` puts
openpod's contracts on a chain, and `Anvil` runs the development chain. Signing is not here:
a signer (adapters.signers, later an HSM) turns a transaction dict into raw bytes.
"""

from openpod.adapters.chain.anvil import DEV_CHAIN_ID, Anvil, anvil_binary
from openpod.adapters.chain.codec import Codec, Event
from openpod.adapters.chain.contracts import (
    ZERO_ADDRESS,
    Charge,
    Contract,
    Deployment,
    LeaseTerms,
    TxSigner,
    artifact,
    codec,
    deploy,
    lease_id,
    role,
    send_and_wait,
    short_bytes32,
    wait_receipt,
)
from openpod.adapters.chain.errors import (
    ChainError,
    DecodedError,
    Reverted,
    RpcError,
    RpcUnavailable,
)
from openpod.adapters.chain.rpc import (
    Rpc,
    hex_int,
    is_already_known,
    is_nonce_too_low,
    is_underpriced,
)

__all__ = [
    "DEV_CHAIN_ID",
    "ZERO_ADDRESS",
    "Anvil",
    "ChainError",
    "Charge",
    "Codec",
    "Contract",
    "DecodedError",
    "Deployment",
    "Event",
    "LeaseTerms",
    "Reverted",
    "Rpc",
    "RpcError",
    "RpcUnavailable",
    "TxSigner",
    "anvil_binary",
    "artifact",
    "codec",
    "deploy",
    "hex_int",
    "is_already_known",
    "is_nonce_too_low",
    "is_underpriced",
    "lease_id",
    "role",
    "send_and_wait",
    "short_bytes32",
    "wait_receipt",
]
