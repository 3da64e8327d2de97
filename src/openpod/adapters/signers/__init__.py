"""Signers: only this package holds or reaches private keys.

A signer has an `address` and turns an unsigned transaction (an EIP-1559 dict) into the raw
signed bytes; it never sends anything. `KeystoreSigner` keeps the key in an encrypted JSON
keystore (Web3 Secret Storage, scrypt): for development and for users' own wallets. The
PKCS#11 (HSM) signer of the hot wallet comes with the hot-wallet issue.
"""

from openpod.adapters.signers.keystore import KeystoreSigner, SignerError

__all__ = ["KeystoreSigner", "SignerError"]
