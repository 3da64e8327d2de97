"""A real SoftHSM2 token for tests: its own token directory and config, initialised by
`softhsm2-util`, the way an operator would set one up.

A PKCS#11 module reads its configuration once per process (C_Initialize) and does not see
tokens made after that, so a test process gets one token (`process_token`), made before the
module is first loaded, and each test makes its own key in it under a label of its own.
Subprocesses (the CLI, the control plane) get tokens of their own (`make_token`).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pkcs11

from openpod.adapters.signers.pkcs11 import HsmConfig

SOFTHSM_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
_labels = itertools.count(1)


@dataclass(frozen=True)
class SoftHsmToken:
    conf: Path  # SOFTHSM2_CONF for whoever loads the module
    label: str
    pin: str

    def config(self, key_label: str | None = None) -> HsmConfig:
        """Where a key lives: a fresh label of its own unless `key_label` is given."""
        return HsmConfig(
            module=SOFTHSM_MODULE,
            token_label=self.label,
            pin=self.pin,
            key_label=key_label or f"test-key-{os.getpid()}-{next(_labels)}",
        )

    def env(self) -> dict[str, str]:
        return {"SOFTHSM2_CONF": str(self.conf)}


def make_token(root: Path, label: str = "openpod-test", pin: str = "4711-test-pin") -> SoftHsmToken:
    """An initialised token in a token directory of its own under `root`."""
    tokens = root / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    command = ["softhsm2-util", "--init-token", "--free", "--label", label]
    command += ["--pin", pin, "--so-pin", f"{pin}-so"]
    subprocess.run(
        command,
        env={**os.environ, "SOFTHSM2_CONF": str(conf)},
        check=True,
        capture_output=True,
    )
    return SoftHsmToken(conf, label, pin)


def open_session(token: SoftHsmToken, *, rw: bool = False) -> Any:
    """A PKCS#11 session of this process on `token`, as an outsider to openpod's signer would
    open one (logged in already when a signer of this process is)."""
    lib = pkcs11.lib(str(SOFTHSM_MODULE))
    found = lib.get_token(token_label=token.label)
    try:
        return found.open(user_pin=token.pin, rw=rw)
    except pkcs11.UserAlreadyLoggedIn:
        return found.open(rw=rw)


_SIGN = """
import json, sys
from pathlib import Path
from openpod.adapters.signers.pkcs11 import HsmConfig, HsmSigner
args = json.loads(sys.stdin.read())
tx = args["tx"]
tx["data"] = bytes.fromhex(tx["data"])
signer = HsmSigner(HsmConfig(Path(args["module"]), args["token"], args["pin"], args["key"]))
print(signer.sign_transaction(tx).hex())
"""


def sign_in_subprocess(token: SoftHsmToken, key_label: str, tx: dict[str, Any]) -> bytes:
    """`tx` signed by the token's key in a process of its own: the token used directly, as
    someone holding the PIN would, outside openpod's gateway (and outside this test process,
    whose PKCS#11 module may be set up for another token)."""
    request = {
        "module": str(SOFTHSM_MODULE),
        "token": token.label,
        "pin": token.pin,
        "key": key_label,
        "tx": {**tx, "data": bytes(tx.get("data", b"")).hex()},
    }
    done = subprocess.run(
        [sys.executable, "-c", _SIGN],
        input=json.dumps(request),
        env={**os.environ, **token.env()},
        capture_output=True,
        text=True,
        check=True,
    )
    return bytes.fromhex(done.stdout.strip())
