"""Signers: only this package holds or reaches private keys.

A signer has an `address` and turns an unsigned transaction (an EIP-1559 dict) into the raw
signed bytes; it never sends anything. `HsmSigner` signs with a key generated inside a PKCS#11
token that never leaves it: the hot wallet's production signer. `KeystoreSigner` keeps the
key in an encrypted JSON keystore (Web3 Secret Storage, scrypt): for development and for
users' own wallets.

The HSM signer is imported from `openpod.adapters.signers.pkcs11` by who needs it: the user
CLI reaches keystores through this package, and should not load a PKCS#11 binding to start.
"""

from openpod.adapters.signers.keystore import KeystoreSigner, SignerError

__all__ = ["KeystoreSigner", "SignerError"]
