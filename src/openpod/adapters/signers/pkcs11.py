"""The hot wallet's key in a PKCS#11 HSM (SoftHSM2 here, any PKCS#11 token in production).

The secp256k1 key is generated inside the token as SENSITIVE and not EXTRACTABLE: the token
signs, nothing reads the key out. Tokens have no keccak, so the transaction's signing hash
is computed here and the token signs that 32-byte digest with raw CKM_ECDSA. What comes back
is r || s; Ethereum wants s in the lower half of the curve order (EIP-2) and a recovery id,
found by recovering the public key with each candidate and comparing with the token's.

The PIN is given to the constructor and kept only by the PKCS#11 session; errors name the
module, the token and the key label, never the PIN.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pkcs11
from eth_account.messages import SignableMessage, encode_defunct, encode_typed_data
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from eth_keys.datatypes import PublicKey, Signature
from eth_keys.exceptions import BadSignature
from eth_utils.crypto import keccak
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import PKCS11Error
from pkcs11.util.ec import encode_named_curve_parameters

from openpod.adapters.signers.keystore import SignerError

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
DEFAULT_KEY_LABEL = "openpod-hot-wallet"


@dataclass(frozen=True)
class HsmConfig:
    """Where the key lives: the PKCS#11 module (.so), the token's label, the key's label."""

    module: Path
    token_label: str
    pin: str = field(repr=False)
    key_label: str = DEFAULT_KEY_LABEL

    def where(self) -> str:
        return f"key {self.key_label!r} in token {self.token_label!r} ({self.module})"


def _low_s(r: int, s: int) -> tuple[int, int]:
    return r, (SECP256K1_N - s if s > SECP256K1_N // 2 else s)


def public_key_of(ec_point: bytes) -> PublicKey:
    """CKA_EC_POINT is a DER OCTET STRING around the uncompressed point 04 || X || Y."""
    point = ec_point
    if len(point) == 67 and point[0] == 0x04 and point[1] == 65:
        point = point[2:]
    if len(point) != 65 or point[0] != 0x04:
        raise SignerError("the token's public key is not an uncompressed secp256k1 point")
    return PublicKey(point[1:])


class HsmSigner:
    """Signs with a non-extractable secp256k1 key in a PKCS#11 token. One session is held
    open for the signer's life; signatures are serialised (PKCS#11 sessions are not safe for
    concurrent operations)."""

    def __init__(self, config: HsmConfig, *, create: bool = False) -> None:
        self.config = config
        self._lock = threading.Lock()
        try:
            lib = pkcs11.lib(str(config.module))
        except (RuntimeError, OSError, PKCS11Error) as exc:
            raise SignerError(f"cannot load PKCS#11 module {config.module}: {exc}") from None
        try:
            token = lib.get_token(token_label=config.token_label)
        except pkcs11.NoSuchToken:
            raise SignerError(
                f"no token labelled {config.token_label!r} in {config.module}"
            ) from None
        except pkcs11.MultipleTokensReturned:
            raise SignerError(f"several tokens are labelled {config.token_label!r}") from None
        try:
            self._session = token.open(user_pin=config.pin, rw=create)
        except pkcs11.UserAlreadyLoggedIn:  # another session of this process logged in
            self._session = token.open(rw=create)
        except pkcs11.PinIncorrect:
            raise SignerError(f"wrong PIN for token {config.token_label!r}") from None
        except PKCS11Error as exc:
            raise SignerError(
                f"cannot log in to token {config.token_label!r}: {type(exc).__name__}"
            ) from None
        try:
            if create:
                self._generate()
            self._private, public = self._find()
        except BaseException:
            self._session.close()
            raise
        self._public = public_key_of(bytes(public[Attribute.EC_POINT]))
        self._address = self._public.to_checksum_address()

    def __repr__(self) -> str:
        return f"HsmSigner({self.address}, {self.config.where()})"

    @classmethod
    def generate(cls, config: HsmConfig) -> HsmSigner:
        """Make the key inside the token (refused if the label is taken) and sign with it."""
        return cls(config, create=True)

    @property
    def address(self) -> str:
        return str(self._address)

    def close(self) -> None:
        with self._lock:
            self._session.close()

    def _keys(self, object_class: ObjectClass) -> list[Any]:
        return list(
            self._session.get_objects(
                {
                    Attribute.CLASS: object_class,
                    Attribute.KEY_TYPE: KeyType.EC,
                    Attribute.LABEL: self.config.key_label,
                }
            )
        )

    def _generate(self) -> None:
        if self._keys(ObjectClass.PRIVATE_KEY):
            raise SignerError(f"{self.config.where()} exists already")
        try:
            params = self._session.create_domain_parameters(
                KeyType.EC,
                {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256k1")},
                local=True,
            )
            params.generate_keypair(
                store=True,
                label=self.config.key_label,
                public_template={Attribute.VERIFY: True},
                private_template={
                    Attribute.SIGN: True,
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.PRIVATE: True,
                },
            )
        except PKCS11Error as exc:
            raise SignerError(
                f"the token cannot make {self.config.where()}: {type(exc).__name__} "
                "(does it support secp256k1?)"
            ) from None

    def _find(self) -> tuple[Any, Any]:
        private, public = self._keys(ObjectClass.PRIVATE_KEY), self._keys(ObjectClass.PUBLIC_KEY)
        if not private or not public:
            raise SignerError(f"no {self.config.where()}: run `openpod wallet hot init --hsm`")
        if len(private) > 1 or len(public) > 1:
            raise SignerError(f"several keys match {self.config.where()}")
        key = private[0]
        if key[Attribute.EXTRACTABLE] or not key[Attribute.SENSITIVE]:
            raise SignerError(
                f"{self.config.where()} can be read out of the token (EXTRACTABLE or not "
                "SENSITIVE): a hot wallet key must not be"
            )
        return key, public[0]

    # ---- signing -------------------------------------------------------------------

    def sign_digest(self, digest: bytes) -> tuple[int, int, int]:
        """(v, r, s) over a 32-byte digest: v is the recovery id (0 or 1), s is low."""
        if len(digest) != 32:
            raise SignerError("a digest to sign is 32 bytes")
        try:
            with self._lock:
                raw = self._private.sign(digest, mechanism=Mechanism.ECDSA)
        except PKCS11Error as exc:
            raise SignerError(f"the token refused to sign: {type(exc).__name__}") from None
        r, s = _low_s(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        for v in (0, 1):
            try:
                recovered = Signature(vrs=(v, r, s)).recover_public_key_from_msg_hash(digest)
            except BadSignature:
                continue
            if recovered == self._public:
                return v, r, s
        raise SignerError("the token's signature does not recover to its own public key")

    def sign_transaction(self, tx: dict[str, Any]) -> bytes:
        """The raw signed transaction (typed: EIP-1559 and the other typed envelopes)."""
        unsigned = TypedTransaction.from_dict(tx)
        v, r, s = self.sign_digest(unsigned.hash())
        signed = dict(unsigned.as_dict())
        signed.update(v=v, r=r, s=s)
        return bytes(TypedTransaction.from_dict(signed).encode())

    def sign_message(self, text: str) -> bytes:
        """An EIP-191 personal_sign signature (65 bytes, r || s || v with v = 27 or 28)."""
        return self._signable(encode_defunct(text=text))

    def sign_typed_data(self, typed_data: dict[str, Any]) -> bytes:
        """An EIP-712 signature (65 bytes, r || s || v)."""
        return self._signable(encode_typed_data(full_message=typed_data))

    def _signable(self, message: SignableMessage) -> bytes:
        digest = keccak(b"\x19" + message.version + message.header + message.body)
        v, r, s = self.sign_digest(digest)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([27 + v])
