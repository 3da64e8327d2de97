"""Wallet links: a Sign-In with Ethereum challenge (the nonce) issued to an account, and once
it is signed, the proof that the account controls the wallet (services.wallets)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from openpod.adapters.store.models import Base, utcnow


class WalletLink(Base):
    """One nonce for one purpose ("account": the wallet pods are paid from; "payout": a
    provider's payout wallet). Single use: `linked_at` is set in the transaction that links
    the wallet, with the signed message and its signature kept as the proof."""

    __tablename__ = "wallet_links"

    nonce: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    purpose: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    linked_at: Mapped[datetime | None] = mapped_column(default=None)
    address: Mapped[str | None] = mapped_column(String(42), default=None)
    message: Mapped[str | None] = mapped_column(Text, default=None)
    signature: Mapped[str | None] = mapped_column(String(132), default=None)
