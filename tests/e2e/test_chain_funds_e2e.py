"""The funds guard reading wallets on chain, through a real control plane: no pod starts that
its wallet cannot pay an hour of, and a running pod whose wallet stops covering it is stopped."""

from __future__ import annotations

import pytest

from openpod.adapters.chain import Contract, Rpc, short_bytes32
from openpod.adapters.signers import KeystoreSigner
from tests.e2e.test_payments_e2e import GPU, Paying, run
from tests.e2e.test_payments_e2e import paying as paying  # the module's platform + anvil
from tests.support.chain import make_user
from tests.support.platform import Api, signup

HOUR_S = 3600


@pytest.fixture(scope="module")
def rate(paying: Paying) -> int:
    api = paying.platform.user
    value = int(next(g for g in api.ok("GET", "/gpu-types") if g["id"] == GPU)["ratePerSecond"])

    async def set_rate() -> None:
        async with Rpc(paying.anvil_url) as rpc:
            payments = Contract(rpc, "OpenPodPayments", paying.deployment.payments)
            await payments.send(
                paying.admin, payments.calldata("setRate", short_bytes32(GPU), value)
            )

    run(set_rate())
    return value


def _user(p: Paying, name: str, cap: int) -> tuple[Api, KeystoreSigner]:
    api = signup(p.platform.plane.url, name)

    async def wallet() -> KeystoreSigner:
        async with Rpc(p.anvil_url) as rpc:
            return await make_user(rpc, p.deployment, cap=cap)

    signer: KeystoreSigner = run(wallet())
    api.ok("PATCH", "/me", json={"walletAddress": signer.address})
    return api, signer


def _set_cap(p: Paying, signer: KeystoreSigner, cap: int) -> None:
    async def send() -> None:
        async with Rpc(p.anvil_url) as rpc:
            payments = Contract(rpc, "OpenPodPayments", p.deployment.payments)
            await payments.send(signer, payments.calldata("setSpendingCap", cap))

    run(send())


BODY = {"name": "f", "imageName": "local", "gpuTypeId": GPU, "gpuCount": 1, "ports": "22/tcp"}


def test_a_wallet_that_cannot_pay_an_hour_cannot_start_a_pod(paying: Paying, rate: int) -> None:
    api, signer = _user(paying, "short", cap=HOUR_S * rate - 1)
    try:
        refused = api.http.post("/pods", json=BODY)
        assert refused.status_code == 402
        assert str(HOUR_S * rate) in refused.json()["detail"]
        assert api.ok("GET", "/balance")["available"] == str(HOUR_S * rate - 1)
        _set_cap(paying, signer, 2 * HOUR_S * rate)  # the user raises their cap: it starts
        pod_id = api.ok("POST", "/pods", json=BODY)["id"]
        api.wait(pod_id, "RUNNING")
        api.ok("POST", f"/pods/{pod_id}/terminate")
    finally:
        api.http.close()


def test_an_account_without_a_wallet_cannot_start_a_pod(paying: Paying, rate: int) -> None:
    api = signup(paying.platform.plane.url, "walletless")
    try:
        refused = api.http.post("/pods", json=BODY)
        assert refused.status_code == 402
        assert api.ok("GET", "/balance")["available"] == "0"
    finally:
        api.http.close()


def test_a_pod_whose_wallet_stops_covering_it_is_stopped(paying: Paying, rate: int) -> None:
    api, signer = _user(paying, "lowering", cap=2 * HOUR_S * rate)
    try:
        pod_id = api.ok("POST", "/pods", json=BODY)["id"]
        api.wait(pod_id, "RUNNING")
        _set_cap(paying, signer, 0)  # the user takes their consent back
        stopped = api.wait(pod_id, "STOPPED", timeout=30)
        assert stopped["statusReason"] == "insufficient_funds"
    finally:
        api.http.close()
