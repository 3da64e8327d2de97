"""The hot wallet put together from the settings: its key (HSM or keystore), the signing
policy and breaker in front of it, the payment gateway that uses it, the watch beside it, and
the alert sinks. Used by the control plane and by `openpod wallet hot|breaker`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from openpod.adapters.alerts import LogSink, SmtpSink, WebhookSink
from openpod.adapters.chain import Rpc
from openpod.adapters.signers import KeystoreSigner, SignerError
from openpod.adapters.signers.pkcs11 import HsmConfig, HsmSigner
from openpod.adapters.store import Database
from openpod.services.alerts import Alerts, AlertSink
from openpod.services.chain_txs import Signer
from openpod.services.hot_wallet import (
    Breaker,
    GuardedSigner,
    SigningPolicy,
    SpendLedger,
    payment_selectors,
)
from openpod.services.payments import GatewayConfig, PaymentGateway
from openpod.services.wallet_watch import HotWalletWatch, WatchConfig
from openpod.settings import ChainConfig, ServerSettings

log = logging.getLogger(__name__)

# Chains where real money moves: a development keystore is refused there unless forced.
MAINNETS = {
    1: "Ethereum",
    10: "OP Mainnet",
    56: "BNB Smart Chain",
    100: "Gnosis",
    137: "Polygon",
    324: "zkSync Era",
    8453: "Base",
    42161: "Arbitrum One",
    43114: "Avalanche C-Chain",
    59144: "Linea",
    534352: "Scroll",
}


class HotWalletSetupError(Exception):
    """The hot wallet cannot be set up as configured; the message says what to change."""


def hsm_config(settings: ServerSettings) -> HsmConfig:
    try:
        pin = settings.hsm_pin_value()
    except ValueError as error:
        raise HotWalletSetupError(str(error)) from None
    return HsmConfig(
        module=settings.hsm_module,
        token_label=settings.hsm_token_label,
        pin=pin,
        key_label=settings.hsm_key_label,
    )


def hot_wallet_key(settings: ServerSettings, chain_id: int) -> HsmSigner | KeystoreSigner:
    """The hot wallet's own key, unguarded: in the HSM, or (development) in a keystore."""
    try:
        if settings.hot_wallet_signer == "hsm":
            return HsmSigner(hsm_config(settings))
        if chain_id in MAINNETS and not settings.hot_wallet_keystore_on_mainnet:
            raise HotWalletSetupError(
                f"chain {chain_id} is {MAINNETS[chain_id]}: the hot wallet's key belongs in an "
                "HSM there (OPENPOD_HOT_WALLET_SIGNER=hsm); a keystore is refused unless "
                "OPENPOD_HOT_WALLET_KEYSTORE_ON_MAINNET=true"
            )
        keystore, password_file = settings.hot_wallet_paths()
        if not keystore.exists() or not password_file.exists():
            raise HotWalletSetupError(
                f"a chain is configured ({settings.chain_path()}) but the hot wallet is not: "
                f"need the keystore {keystore} and its password file {password_file} "
                "(OPENPOD_HOT_WALLET_KEYSTORE, OPENPOD_HOT_WALLET_PASSWORD_FILE), or an HSM "
                "key (`openpod wallet hot init --hsm`, OPENPOD_HOT_WALLET_SIGNER=hsm)"
            )
        return KeystoreSigner.load(keystore, password_file.read_text().strip())
    except SignerError as error:
        raise HotWalletSetupError(f"hot wallet: {error}") from None


def guardian_key(settings: ServerSettings) -> KeystoreSigner | None:
    if settings.guardian_keystore is None:
        return None
    if settings.guardian_password_file is None:
        raise HotWalletSetupError("OPENPOD_GUARDIAN_KEYSTORE needs OPENPOD_GUARDIAN_PASSWORD_FILE")
    try:
        password = settings.guardian_password_file.read_text().strip()
        return KeystoreSigner.load(settings.guardian_keystore, password)
    except OSError:
        raise HotWalletSetupError(
            f"cannot read the guardian password file {settings.guardian_password_file}"
        ) from None
    except SignerError as error:
        raise HotWalletSetupError(f"guardian: {error}") from None


def alert_sinks(settings: ServerSettings) -> list[AlertSink]:
    sinks: list[AlertSink] = [LogSink()]
    if settings.alert_webhook_url_file is not None:
        try:
            url = settings.alert_webhook_url_file.read_text().strip()
        except OSError:
            raise HotWalletSetupError(
                f"cannot read the alert webhook URL file {settings.alert_webhook_url_file}"
            ) from None
        try:
            sinks.append(WebhookSink(url))
        except ValueError as error:
            raise HotWalletSetupError(str(error)) from None
    if settings.alert_smtp_host:
        recipients = [r.strip() for r in settings.alert_smtp_to.split(",") if r.strip()]
        if not recipients:
            raise HotWalletSetupError(
                "OPENPOD_ALERT_SMTP_HOST is set but OPENPOD_ALERT_SMTP_TO is not"
            )
        password = None
        if settings.alert_smtp_password_file is not None:
            try:
                password = settings.alert_smtp_password_file.read_text().strip()
            except OSError:
                raise HotWalletSetupError(
                    f"cannot read the SMTP password file {settings.alert_smtp_password_file}"
                ) from None
        sinks.append(
            SmtpSink(
                settings.alert_smtp_host,
                settings.alert_smtp_port,
                settings.alert_smtp_from,
                recipients,
                username=settings.alert_smtp_user,
                password=password,
                starttls=settings.alert_smtp_starttls,
            )
        )
    return sinks


def alerts_from(settings: ServerSettings) -> Alerts:
    return Alerts(
        alert_sinks(settings),
        dedupe_s=settings.alert_dedupe_seconds,
        rate_per_minute=settings.alert_rate_per_minute,
    )


def signing_policy(settings: ServerSettings, chain: ChainConfig) -> SigningPolicy:
    return SigningPolicy(
        chain_id=chain.chain_id,
        payments=chain.payments,
        selectors=payment_selectors(),
        max_fee_per_gas=settings.hot_wallet_max_fee_per_gas,
        gas_spend_per_hour=settings.hot_wallet_gas_per_hour,
    )


def allowlist(settings: ServerSettings) -> frozenset[str]:
    found = set()
    for item in settings.hot_wallet_allowlist.split(","):
        address = item.strip()
        if not address:
            continue
        if not (address.startswith("0x") and len(address) == 42):
            raise HotWalletSetupError(
                f"OPENPOD_HOT_WALLET_ALLOWLIST: {address!r} is not an address (0x and 40 hex digits)"
            )
        found.add(address.lower())
    return frozenset(found)


@dataclass
class HotWallet:
    """Everything that holds, guards and watches the hot wallet on one deployment."""

    key: Signer
    signer: GuardedSigner
    breaker: Breaker
    gateway: PaymentGateway
    watch: HotWalletWatch
    alerts: Alerts

    async def aclose(self) -> None:
        await self.gateway.rpc.aclose()
        await self.watch.rpc.aclose()
        if isinstance(self.key, HsmSigner):
            self.key.close()


def hot_wallet(settings: ServerSettings, db: Database, alerts: Alerts) -> HotWallet | None:
    """The hot wallet when a chain is configured (chain.json), else None."""
    chain = settings.chain()
    if chain is None:
        return None
    key = hot_wallet_key(settings, chain.chain_id)
    breaker = Breaker(db, chain.chain_id, key.address)
    ledger = SpendLedger()
    ledger.seed(db, chain.chain_id, key.address)
    guarded = GuardedSigner(
        key,
        signing_policy(settings, chain),
        breaker,
        ledger=ledger,
        alert=alerts.submit_threadsafe,
    )
    config = GatewayConfig(
        chain_id=chain.chain_id,
        payments=chain.payments,
        batch_size=settings.payments_batch_size,
        confirmations=settings.payments_confirmations,
        bump_after_s=settings.payments_bump_after,
        max_fee_per_gas=settings.hot_wallet_max_fee_per_gas,
    )
    gateway = PaymentGateway(db, Rpc(chain.rpc_url), guarded, config, breaker=breaker)
    watch = HotWalletWatch(
        db,
        Rpc(chain.rpc_url),
        WatchConfig(
            chain_id=chain.chain_id,
            address=key.address,
            payments=chain.payments,
            balance_floor=settings.hot_wallet_balance_floor,
            runway_min_hours=settings.hot_wallet_runway_hours,
            allowlist=allowlist(settings),
        ),
        breaker,
        alerts.submit,
        guardian=guardian_key(settings),
    )
    log.info(
        "paying settlements on chain %d as %s (%s)",
        chain.chain_id,
        key.address,
        "HSM" if isinstance(key, HsmSigner) else "keystore",
    )
    return HotWallet(key, guarded, breaker, gateway, watch, alerts)
