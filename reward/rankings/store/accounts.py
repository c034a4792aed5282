"""Store methods for people: users and roles, password login, browser sessions and API tokens, and the
failed-login counts the login throttle shares between server processes."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from alignment.common.errors import UserError
from reward.rankings.store import auth
from reward.rankings.store.errors import NotFound
from reward.rankings.store.models import LoginFailure, Ranking, Token, User
from reward.rankings.store.sql import Raw

ROLES = ("annotator", "admin")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""The safe alphabet of user names: ASCII letters and digits, then also '.', '_', '-'; 1-64 characters."""


def check_name(name) -> str:
    """`name` if it is a safe user name, else a UserError that shows it escaped (`ascii`), so a look-alike is seen.

    Only ASCII letters, digits, '.', '_' and '-': a Cyrillic 'а' (U+0430) looks like 'a', and accents, spaces,
    invisible or right-to-left characters would let one account pass for another on the admin page, in the
    agreement tables and in exports. Names also differ in more than case (`add_user`).
    """
    if not isinstance(name, str) or not NAME.fullmatch(name):
        shown = ascii(name)
        shown = shown if len(shown) <= 90 else shown[:90] + "..."
        raise UserError(
            f"user name {shown} is not allowed: use 1-64 ASCII letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


@dataclass
class UserInfo:
    id: int
    name: str
    role: str
    csrf: str | None = None
    kind: str = "session"


class Accounts:
    """Mixed into Store (which provides `_tx`, `_conn`, `_serialize` and `_audit`)."""

    def add_user(self, name: str, role: str = "annotator", password: str | None = None) -> int:
        """A new user; `name` must be a safe name (`check_name`) that no user has, ignoring case."""
        if role not in ROLES:
            raise UserError(f"role must be one of {', '.join(ROLES)}, got '{role}'")
        check_name(name)
        with self._tx(write=True) as s:
            self._serialize(s, "user", name.lower())  # the look-up and the insert of one name, one at a time
            taken = s.scalar(select(User.name).where(func.lower(User.name) == name.lower()))
            if taken == name:
                raise UserError(f"user '{name}' already exists (use set-password to change the password)")
            if taken is not None:
                raise UserError(f"user name '{name}' is taken by '{taken}' (names are compared ignoring case)")
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
            raise NotFound(f"no user named '{name}'")
        return u

    def set_password(self, name: str, password: str, by: int | None = None) -> int:
        """New password; every token of the user (browser sessions and API tokens) is revoked. Returns how many."""
        with self._tx(write=True) as s:
            u = self._user(s, name)
            u.password_hash = auth.hash_password(password)
            # Whoever held the old password may hold a token made with it: end them all.
            revoked = s.execute(delete(Token).where(Token.user_id == u.id)).rowcount
            self._audit(s, by, "set_password", name=name, tokens_revoked=revoked)
            return revoked

    def set_role(self, name: str, role: str, by: int | None = None) -> None:
        if role not in ROLES:
            raise UserError(f"role must be one of {', '.join(ROLES)}, got '{role}'")
        with self._tx(write=True) as s:
            u = self._user(s, name)
            if u.role == "admin" and role != "admin":
                self._keep_an_admin(s, u)
            u.role = role
            self._audit(s, by, "set_role", name=name, role=role)

    def revoke_tokens(self, name: str, by: int | None = None) -> int:
        """End every browser session and API token of `name`; returns how many were revoked."""
        with self._tx(write=True) as s:
            u = self._user(s, name)
            revoked = s.execute(delete(Token).where(Token.user_id == u.id)).rowcount
            self._audit(s, by, "revoke_tokens", name=name, tokens_revoked=revoked)
            return revoked

    def set_active(self, name: str, active: bool, by: int | None = None) -> int:
        """Deactivate (log out everywhere, no login, rankings kept) or reactivate a user; returns tokens revoked."""
        with self._tx(write=True) as s:
            u = self._user(s, name)
            revoked = 0
            if not active:
                if u.role == "admin":
                    self._keep_an_admin(s, u)
                revoked = s.execute(delete(Token).where(Token.user_id == u.id)).rowcount
            u.active = active
            self._audit(s, by, "activate" if active else "deactivate", name=name, tokens_revoked=revoked)
            return revoked

    def _keep_an_admin(self, s: Session, leaving: User) -> None:
        others = s.scalar(
            select(func.count(User.id)).where(User.role == "admin", User.active.is_(True), User.id != leaving.id)
        )
        if not others:
            raise UserError(f"'{leaving.name}' is the last active admin; make another admin first")

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
        """The user if `password` matches (and the account is active), else None.

        The same work whatever the name: an unknown name, an inactive account or one without a password
        is checked against a dummy scrypt hash, so the response time does not tell which names exist.
        """
        dummy = auth.dummy_hash()  # made on the first login whoever it is for, so even that one reveals nothing
        with self._tx() as s:
            u = s.scalars(select(User).where(User.name == name)).first()
            stored = u.password_hash if u is not None and u.password_hash else dummy
            ok = auth.verify_password(password, stored)
            if u is None or not u.active or not u.password_hash or not ok:
                return None
            return UserInfo(u.id, u.name, u.role)

    def user_for_token(self, token: str | None) -> UserInfo | None:
        """The active user a live (unexpired, unrevoked) token belongs to: one indexed query per request."""
        if not token or len(token) > 256:
            return None
        with self._conn() as c:
            row = Raw(c).one("token_user", hash=auth.hash_token(token))
        if row is None:
            return None
        user_id, name, role, active, csrf, kind, expires_at = row
        if not active or (expires_at is not None and expires_at < time.time()):
            return None
        return UserInfo(user_id, name, role, csrf=csrf, kind=kind)

    def revoke_token(self, token: str | None) -> bool:
        if not token:
            return False
        with self._conn(write=True) as c:
            return c.execute(delete(Token).where(Token.token_hash == auth.hash_token(token))).rowcount > 0

    # ------------------------------------------------------------------------------------------
    # Failed logins, counted in the database so every server process (and worker) shares one budget

    def reserve_login_attempt(
        self, client: str, username: str, now: float, since: float, wait: Callable[[list[float], list[float]], float]
    ) -> float:
        """Count and record a login attempt atomically (every worker and process shares the budget): `wait(pair
        times, client times)` of the failures since `since` decides; 0 records this attempt as a failure (a
        success clears it) before the password is checked, more is the wait and nothing is recorded.

        SQLite write transactions hold the database's write lock from BEGIN IMMEDIATE, PostgreSQL's take a
        per-client advisory lock, so no two attempts of a client count the same failures.
        """
        ch, uh = _digest(client), _digest(username)
        with self._conn(write=True) as c:
            self._serialize(c, "login", ch)
            rows = c.execute(
                select(LoginFailure.username, LoginFailure.at)
                .where(LoginFailure.client == ch, LoginFailure.at > since)
                .order_by(LoginFailure.at)
            ).all()
            seconds = wait([at for u, at in rows if u == uh], [at for _, at in rows])
            if seconds > 0:
                return seconds
            c.execute(insert(LoginFailure).values(client=ch, username=uh, at=now))
            # Keep the table to one window's worth of rows.
            c.execute(delete(LoginFailure).where(LoginFailure.at <= since))
            return 0.0

    def clear_login_failures(self, client: str, username: str) -> None:
        with self._conn(write=True) as c:
            c.execute(
                delete(LoginFailure).where(
                    LoginFailure.client == _digest(client), LoginFailure.username == _digest(username)
                )
            )


def _digest(value: str) -> str:
    return hashlib.sha256(str(value).encode("utf-8", "surrogatepass")).hexdigest()
