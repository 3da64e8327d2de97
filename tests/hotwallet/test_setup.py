"""The hot wallet put together from settings (api/hot_wallet.py): a development keystore is
refused on a mainnet unless forced, a missing HSM PIN or bad alert settings are named, and the
sinks are the ones configured."""

from __future__ import annotations

from pathlib import Path

import pytest

from openpod.adapters.signers import KeystoreSigner
from openpod.api.hot_wallet import (
    HotWalletSetupError,
    alert_sinks,
    allowlist,
    hot_wallet_key,
    hsm_config,
)
from openpod.settings import ServerSettings
from tests.support.chain import light_keystore


def settings(tmp_path: Path, **values: object) -> ServerSettings:
    return ServerSettings(data_dir=tmp_path, **values)  # type: ignore[arg-type]


def keystore(tmp_path: Path) -> KeystoreSigner:
    signer = light_keystore(tmp_path / "hot-wallet.json", "pw")
    (tmp_path / "hot-wallet.password").write_text("pw\n")
    return signer


def test_a_keystore_is_refused_on_a_mainnet_unless_forced(tmp_path: Path) -> None:
    signer = keystore(tmp_path)
    for chain_id, name in ((1, "Ethereum"), (8453, "Base"), (42161, "Arbitrum One")):
        with pytest.raises(HotWalletSetupError, match=f"chain {chain_id} is {name}"):
            hot_wallet_key(settings(tmp_path), chain_id)
    forced = settings(tmp_path, hot_wallet_keystore_on_mainnet=True)
    assert hot_wallet_key(forced, 1).address == signer.address
    assert hot_wallet_key(settings(tmp_path), 31337).address == signer.address


def test_a_missing_key_or_pin_is_named(tmp_path: Path) -> None:
    with pytest.raises(HotWalletSetupError, match=r"need the keystore .*hot-wallet\.json"):
        hot_wallet_key(settings(tmp_path), 31337)
    with pytest.raises(HotWalletSetupError, match="OPENPOD_HSM_PIN or OPENPOD_HSM_PIN_FILE"):
        hsm_config(settings(tmp_path, hot_wallet_signer="hsm"))
    missing = tmp_path / "no-such-pin"
    with pytest.raises(HotWalletSetupError, match="cannot read the HSM PIN file"):
        hsm_config(settings(tmp_path, hsm_pin_file=missing))
    (tmp_path / "pin").write_text("1234-secret\n")
    config = hsm_config(settings(tmp_path, hsm_pin_file=tmp_path / "pin"))
    assert config.pin == "1234-secret" and "1234-secret" not in repr(config)


def test_alert_sinks_are_the_configured_ones(tmp_path: Path) -> None:
    assert [s.name for s in alert_sinks(settings(tmp_path))] == ["log"]
    url = tmp_path / "hook"
    url.write_text("https://hooks.example.test/services/SECRET\n")
    both = settings(
        tmp_path,
        alert_webhook_url_file=url,
        alert_smtp_host="127.0.0.1",
        alert_smtp_to="a@example.test, b@example.test",
    )
    sinks = alert_sinks(both)
    assert [s.name for s in sinks] == ["log", "webhook", "email"]
    assert all("SECRET" not in repr(s) for s in sinks)
    with pytest.raises(HotWalletSetupError, match="OPENPOD_ALERT_SMTP_TO is not"):
        alert_sinks(settings(tmp_path, alert_smtp_host="127.0.0.1"))
    url.write_text("ftp://nowhere\n")
    with pytest.raises(HotWalletSetupError):
        alert_sinks(settings(tmp_path, alert_webhook_url_file=url))
    with pytest.raises(HotWalletSetupError, match="cannot read the alert webhook URL file"):
        alert_sinks(settings(tmp_path, alert_webhook_url_file=tmp_path / "absent"))


def test_the_allowlist_is_parsed_and_checked(tmp_path: Path) -> None:
    a, b = "0x" + "Ab" * 20, "0x" + "cd" * 20
    assert allowlist(settings(tmp_path, hot_wallet_allowlist=f" {a}, {b},")) == {
        a.lower(),
        b.lower(),
    }
    with pytest.raises(HotWalletSetupError, match="'0x123' is not an address"):
        allowlist(settings(tmp_path, hot_wallet_allowlist="0x123"))
