"""The hot wallet's key in a real SoftHSM2 token: it cannot be read out, its signatures
recover to its address with low s, and a real anvil takes the transactions it signs."""

from __future__ import annotations

import secrets

import pkcs11
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_keys.datatypes import Signature
from pkcs11 import Attribute, KeyType, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters

from openpod.adapters.chain import Rpc, hex_int, send_and_wait
from openpod.adapters.signers import SignerError
from openpod.adapters.signers.pkcs11 import SECP256K1_N, HsmConfig, HsmSigner
from tests.support.chain import ETH, fund
from tests.support.hsm import SOFTHSM_MODULE, SoftHsmToken, open_session


def test_the_key_cannot_be_read_out_of_the_token(token: SoftHsmToken) -> None:
    config = token.config()
    signer = HsmSigner.generate(config)
    with open_session(token) as session:
        (key,) = session.get_objects(
            {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: config.key_label}
        )
        with pytest.raises(pkcs11.AttributeSensitive):
            key[Attribute.VALUE]
        assert key[Attribute.EXTRACTABLE] is False
        assert key[Attribute.SENSITIVE] is True
        assert key[Attribute.NEVER_EXTRACTABLE] is True
        assert key[Attribute.ALWAYS_SENSITIVE] is True
    assert "pin" not in repr(signer).lower() and token.pin not in repr(signer)
    assert token.pin not in repr(config)
    signer.close()


def test_a_thousand_signatures_recover_to_the_token_address_with_low_s(
    token: SoftHsmToken,
) -> None:
    signer = HsmSigner.generate(token.config())
    public = None
    for _ in range(1000):
        digest = secrets.token_bytes(32)
        v, r, s = signer.sign_digest(digest)
        assert s <= SECP256K1_N // 2
        assert v in (0, 1)
        recovered = Signature(vrs=(v, r, s)).recover_public_key_from_msg_hash(digest)
        assert recovered.to_checksum_address() == signer.address
        public = recovered
    assert public is not None
    # The same key, found again by label in a new signer (a restart), has the same address.
    again = HsmSigner(signer.config)
    assert again.address == signer.address
    message = signer.sign_message("openpod")
    assert Account.recover_message(encode_defunct(text="openpod"), signature=message) == (
        signer.address
    )
    signer.close()
    again.close()


async def test_a_transaction_signed_in_the_token_is_accepted_by_anvil(
    token: SoftHsmToken, rpc: Rpc
) -> None:
    signer = HsmSigner.generate(token.config())
    await fund(rpc, signer.address, 10 * ETH)
    to = Account.create().address
    receipt = await send_and_wait(rpc, signer, to, b"", value=ETH)
    assert hex_int(receipt["status"]) == 1
    assert receipt["from"].lower() == signer.address.lower()
    assert await rpc.balance(to) == ETH
    assert await rpc.nonce(signer.address, "latest") == 1
    signer.close()


def test_bad_setups_are_refused_by_name_and_never_show_the_pin(token: SoftHsmToken) -> None:
    config = token.config()
    signer = HsmSigner.generate(config)
    with pytest.raises(SignerError, match="exists already"):
        HsmSigner.generate(config)
    with pytest.raises(SignerError, match="no key 'absent'"):
        HsmSigner(HsmConfig(SOFTHSM_MODULE, token.label, token.pin, "absent"))
    with pytest.raises(SignerError, match="no token labelled 'nope'") as missing:
        HsmSigner(HsmConfig(SOFTHSM_MODULE, "nope", token.pin, config.key_label))
    assert token.pin not in str(missing.value)
    with pytest.raises(SignerError, match="cannot load PKCS#11 module"):
        HsmSigner(HsmConfig(SOFTHSM_MODULE.with_name("missing.so"), token.label, "x", "k"))
    with pytest.raises(SignerError, match="32 bytes"):
        signer.sign_digest(b"short")
    signer.close()


def test_a_key_that_could_be_read_out_is_refused(token: SoftHsmToken) -> None:
    label = token.config().key_label
    with open_session(token, rw=True) as session:
        params = session.create_domain_parameters(
            KeyType.EC,
            {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256k1")},
            local=True,
        )
        params.generate_keypair(
            store=True,
            label=label,
            private_template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: False},
        )
        with pytest.raises(SignerError, match="can be read out of the token"):
            HsmSigner(HsmConfig(SOFTHSM_MODULE, token.label, token.pin, label))
