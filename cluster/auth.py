"""Tokens and roles: who may do what in which workspace."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from enum import IntEnum

from pipelines.errors import Forbidden, NotFound


class Role(IntEnum):
    """Roles are ordered: each can do everything the one below can."""

    viewer = 1  # read, infer, explain
    editor = 2  # + upload, pipelines, deploy, traffic, assays
    owner = 3  # + tokens
    admin = 4  # everything, every workspace

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name]
        except KeyError:
            raise ValueError(f"unknown role {name!r}: use viewer, editor or owner") from None


def new_token() -> str:
    return "crl_" + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    # Tokens are 256 random bits, so a plain sha256 is enough (no dictionary attack to slow down).
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """The caller behind a token: admin (workspace None) or a role in one workspace."""

    role: Role
    workspace: str | None
    token_id: str | None = None  # for the audit log; None for callers the store has not named

    @property
    def is_admin(self) -> bool:
        return self.role is Role.admin

    def can_see(self, workspace: str) -> bool:
        return self.is_admin or self.workspace == workspace

    def require(self, workspace: str, role: Role, what: str = "resource") -> None:
        """404 for a workspace the token cannot see (no enumeration), 403 for a role too low."""
        if not self.can_see(workspace):
            raise NotFound(f"workspace {workspace!r} not found (or your token cannot see it)")
        if self.role < role:
            raise Forbidden(
                f"this needs the {role.name} role in workspace {workspace!r}; your token is "
                f"{self.role.name}. Ask a workspace owner for an {role.name} token"
            )
