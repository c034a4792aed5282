"""Store methods for people: users and roles, password login, browser sessions and API tokens."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from alignment.config import UserError
from reward.rankings.store import auth
from reward.rankings.store.models import Ranking, Token, User

ROLES = ("annotator", "admin")


@dataclass
class UserInfo:
    id: int
    name: str
    role: str
    csrf: str | None = None
    kind: str = "session"


class Accounts:
    """Mixed into Store (which provides `_tx` and `_audit`)."""

    def add_user(self, name: str, role: str = "annotator", password: str | None = None) -> int:
        if role not in ROLES:
            raise UserError(f"role must be one of {', '.join(ROLES)}, got '{role}'")
        if not name or len(name) > 64 or not name.replace("_", "").replace("-", "").replace(".", "").isalnum():
            raise UserError(f"user name '{name}' must be 1-64 letters, digits, '-', '_' or '.'")
        with self._tx(write=True) as s:
            if s.scalar(select(User.id).where(User.name == name)) is not None:
                raise UserError(f"user '{name}' already exists (use set-password to change the password)")
            u = User(
                name=name,
                role=role,
                password_hash=auth.hash_password(password) if password else None,
                active=True,
                created_at=time.time(),
            )
            s.add(u)
            s.flush()
            self._audit(s, None, "user_add", name=name, role=role)
            return u.id

    def _user(self, s: Session, name: str) -> User:
        u = s.scalars(select(User).where(User.name == name)).first()
        if u is None:
            raise UserError(f"no user named '{name}'")
        return u

    def set_password(self, name: str, password: str) -> None:
        with self._tx(write=True) as s:
            u = self._user(s, name)
            u.password_hash = auth.hash_password(password)
            # A new password ends every open session of that user.
            for t in s.scalars(select(Token).where(Token.user_id == u.id, Token.kind == "session")):
                s.delete(t)
            self._audit(s, None, "set_password", name=name)

    def set_role(self, name: str, role: str) -> None:
        if role not in ROLES:
            raise UserError(f"role must be one of {', '.join(ROLES)}, got '{role}'")
        with self._tx(write=True) as s:
            self._user(s, name).role = role
            self._audit(s, None, "set_role", name=name, role=role)

    def list_users(self) -> list[dict]:
        with self._tx() as s:
            counts = dict(s.execute(select(Ranking.annotator_id, func.count()).group_by(Ranking.annotator_id)).all())
            return [
                {"id": u.id, "name": u.name, "role": u.role, "active": u.active, "rankings": counts.get(u.id, 0)}
                for u in s.scalars(select(User).order_by(User.id))
            ]

    def create_token(self, name: str, kind: str = "api", ttl_seconds: float | None = None) -> tuple[str, str | None]:
        """A new secret for `name` (shown once) and, for sessions, its CSRF token."""
        token = auth.new_token()
        csrf = secrets.token_urlsafe(24) if kind == "session" else None
        now = time.time()
        with self._tx(write=True) as s:
            u = self._user(s, name)
            s.add(
                Token(
                    token_hash=auth.hash_token(token),
                    user_id=u.id,
                    kind=kind,
                    csrf=csrf,
                    created_at=now,
                    expires_at=now + ttl_seconds if ttl_seconds else None,
                )
            )
            self._audit(s, u.id, f"{kind}_token")
        return token, csrf

    def authenticate(self, name: str, password: str) -> UserInfo | None:
        """The user if `password` matches (and the account is active), else None."""
        with self._tx() as s:
            u = s.scalars(select(User).where(User.name == name)).first()
            if u is None or not u.active:
                # Hash anyway so response time does not reveal which user names exist.
                auth.verify_password(password, auth.hash_password("x"))
                return None
            if not auth.verify_password(password, u.password_hash):
                return None
            return UserInfo(u.id, u.name, u.role)

    def user_for_token(self, token: str | None) -> UserInfo | None:
        if not token:
            return None
        with self._tx() as s:
            row = s.execute(
                select(Token, User)
                .join(User, User.id == Token.user_id)
                .where(Token.token_hash == auth.hash_token(token))
            ).first()
            if row is None:
                return None
            t, u = row
            if not u.active or (t.expires_at is not None and t.expires_at < time.time()):
                return None
            return UserInfo(u.id, u.name, u.role, csrf=t.csrf, kind=t.kind)

    def revoke_token(self, token: str) -> None:
        with self._tx(write=True) as s:
            for t in s.scalars(select(Token).where(Token.token_hash == auth.hash_token(token))):
                s.delete(t)
