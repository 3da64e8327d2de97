"""The hot wallet as the control plane puts it together, for the tests: a key in the test
process's SoftHSM2 token holding OPERATOR_ROLE, the payment gateway signing with it through
the policy and the breaker, and the watch beside it (the admin, who holds GUARDIAN_ROLE, as
the guardian). Alerts are collected in a list."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from openpod.adapters.chain import Contract, Rpc, role
from openpod.adapters.signers.pkcs11 import HsmSigner
from openpod.adapters.store import Database
from openpod.domain.alerts import Alert, Severity
from openpod.services.hot_wallet import Breaker, GuardedSigner, SigningPolicy, payment_selectors
from openpod.services.payments import GatewayConfig, PaymentGateway
from openpod.services.wallet_watch import HotWalletWatch, WatchConfig
from tests.support.chain import ETH, GatewayChain, fund
from tests.support.hsm import SoftHsmToken

GWEI = 10**9


@dataclass
class HotWallet:
    key: HsmSigner
    signer: GuardedSigner
    breaker: Breaker
    gateway: PaymentGateway
    watch: HotWalletWatch
    payments: Contract
    alerts: list[Alert]

    def critical(self) -> list[Alert]:
        return [a for a in self.alerts if a.severity == Severity.CRITICAL]


async def hot_wallet(
    db: Database,
    rpc: Rpc,
    chain: GatewayChain,
    token: SoftHsmToken,
    *,
    guardian: bool = True,
    floor: int = ETH // 100,
    balance: int = 10 * ETH,
    max_fee: int = 1000 * GWEI,
    per_hour: int = 100 * ETH,
    **gateway_config: Any,
) -> HotWallet:
    """An HSM key holding OPERATOR_ROLE, the gateway signing through the policy with it, and
    its watch (with the admin, who holds GUARDIAN_ROLE, as the guardian)."""
    key = HsmSigner.generate(token.config())
    await fund(rpc, key.address, balance)
    deployment = chain.deployment
    payments = Contract(rpc, "OpenPodPayments", deployment.payments)
    grant = payments.calldata("grantRole", role("OPERATOR_ROLE"), key.address)
    await payments.send(chain.admin, grant)
    alerts: list[Alert] = []
    breaker = Breaker(db, deployment.chain_id, key.address)
    policy = SigningPolicy(
        chain_id=deployment.chain_id,
        payments=deployment.payments,
        selectors=payment_selectors(),
        max_fee_per_gas=max_fee,
        gas_spend_per_hour=per_hour,
    )
    signer = GuardedSigner(key, policy, breaker, alert=alerts.append)
    config = GatewayConfig(
        chain_id=deployment.chain_id, payments=deployment.payments, **gateway_config
    )
    gateway = PaymentGateway(db, rpc, signer, config, breaker=breaker)
    watch_config = WatchConfig(
        chain_id=deployment.chain_id,
        address=key.address,
        payments=deployment.payments,
        balance_floor=floor,
        runway_min_hours=1.0,
    )
    watch = HotWalletWatch(
        db,
        rpc,
        watch_config,
        breaker,
        alerts.append,
        guardian=chain.admin if guardian else None,
    )
    return HotWallet(key, signer, breaker, gateway, watch, payments, alerts)
