"""Users, roles, hashed secrets and login sessions for the warning board and the API.

Users come from a YAML file (env ``BUDGETWATCH_USERS``)::

    users:
      - login: jyj                       # login name
        name: 教育局财务科                  # shown on the board
        role: department                 # department | bureau
        department_id: D101              # required for a department user
        password_hash: "scrypt$16384$8$1$…$…"   # budgetwatch hash-password
        token_hash: "scrypt$16384$8$1$…$…"      # optional: API bearer token
      - login: jxk
        name: 财政局绩效科
        role: bureau
        password_hash: "scrypt$…"

Secrets are stored only as salted scrypt hashes (``hash_secret``); checks are
constant-time. A department user sees and disposes of its own department's
alerts only; the bureau sees everything and approves reductions.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from streams.errors import BudgetwatchError

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SESSION_SECONDS = 8 * 3600


class UsersError(BudgetwatchError):
    """The users file cannot be used; the message names the file and the field."""


def hash_secret(secret: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64) of a password or token."""
    if not secret:
        raise ValueError("空密码不能使用")
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_secret(secret: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(
            secret.encode("utf-8"), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def _hash_format(value: str | None) -> str | None:
    if value is not None and (not value.startswith("scrypt$") or value.count("$") != 5):
        raise ValueError("不是 budgetwatch hash-password 生成的哈希（应形如 scrypt$16384$8$1$盐$哈希）")
    return value


class User(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    login: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")
    name: str = Field(default="", max_length=100)
    role: Literal["department", "bureau"]
    department_id: str | None = None
    password_hash: str | None = None
    token_hash: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> User:
        if self.role == "department" and not self.department_id:
            raise ValueError("部门用户必须填写 department_id")
        if self.password_hash is None and self.token_hash is None:
            raise ValueError("至少需要 password_hash 或 token_hash 之一")
        _hash_format(self.password_hash)
        _hash_format(self.token_hash)
        return self

    @property
    def is_bureau(self) -> bool:
        return self.role == "bureau"

    @property
    def label(self) -> str:
        return self.name or self.login

    def sees(self, department_id: str | None) -> bool:
        """May this user see (and dispose of) data of ``department_id``?"""
        return self.is_bureau or (department_id is not None and department_id == self.department_id)


class Users(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    users: tuple[User, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> Users:
        logins = [u.login for u in self.users]
        for login in logins:
            if logins.count(login) > 1:
                raise ValueError(f"用户名 {login!r} 重复")
        return self

    def by_login(self, login: str) -> User | None:
        return next((u for u in self.users if u.login == login), None)

    def authenticate(self, login: str, password: str) -> User | None:
        user = self.by_login(login)
        if user is None or user.password_hash is None:
            verify_secret(password, _DUMMY)  # same cost whether or not the login exists
            return None
        return user if verify_secret(password, user.password_hash) else None

    def by_token(self, token: str) -> User | None:
        found = None
        for user in self.users:
            if user.token_hash is not None and verify_secret(token, user.token_hash):
                found = user
        return found


_DUMMY = hash_secret("budgetwatch-dummy", salt=b"0" * 16)


def parse_users(data: Any, *, origin: str = "<users>") -> Users:
    if not isinstance(data, dict):
        raise UsersError(f"{origin}: 用户文件应为 YAML 映射，顶层为 users: [...]")
    try:
        return Users.model_validate(data)
    except ValidationError as err:
        lines = [f"{origin}: 用户文件无效，请修改后重试："]
        for item in err.errors():
            where = ".".join(str(p) for p in item["loc"]) or "(顶层)"
            lines.append(f"  - {where}: {str(item['msg']).removeprefix('Value error, ')}")
        raise UsersError("\n".join(lines)) from None


def load_users(path: str | Path) -> Users:
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except OSError as err:
        raise UsersError(f"{path}: 无法读取用户文件（{err.strerror or err}）；请检查 BUDGETWATCH_USERS") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UsersError(f"{path}: 不是有效的 YAML（{err}）") from None
    return parse_users(data, origin=str(path))


@dataclass(slots=True)
class Session:
    login: str
    csrf: str
    expires: float


@dataclass(slots=True)
class Sessions:
    """Login sessions held in memory (a restart logs everyone out): random ids, each
    with its own CSRF token; the cookie carries only the id."""

    seconds: float = SESSION_SECONDS
    clock: Any = time.monotonic
    _by_id: dict[str, Session] = field(default_factory=dict)

    def create(self, login: str, *, replacing: str | None = None) -> tuple[str, Session]:
        """A new session; ``replacing``: the browser's previous one, which ends (logging in
        again must not leave the old cookie valid). Expired ones are swept here, so memory
        follows the sessions alive, not every login since the start."""
        now = self.clock()
        self.drop(replacing)
        for expired in [i for i, s in self._by_id.items() if s.expires < now]:
            del self._by_id[expired]
        session_id = secrets.token_urlsafe(32)
        session = Session(login, secrets.token_urlsafe(32), now + self.seconds)
        self._by_id[session_id] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self._by_id.get(session_id)
        if session is None:
            return None
        if session.expires < self.clock():
            self._by_id.pop(session_id, None)
            return None
        return session

    def drop(self, session_id: str | None) -> None:
        if session_id:
            self._by_id.pop(session_id, None)


FREE_FAILURES = 5  # wrong passwords after which a login's next try must wait
# …and from one address: a bureau's users may all come through one NAT.
FREE_ADDRESS_FAILURES = 20
FIRST_WAIT = 30.0  # seconds, doubling with each further failure
LONGEST_WAIT = 900.0
THROTTLE_KEYS_KEPT = 10_000


@dataclass(slots=True)
class LoginThrottle:
    """Wrong passwords cost time: after a few for one login, or from one address, the next
    try waits (30 s, doubling, at most 15 min) and is refused unchecked meanwhile — no
    scrypt spent on it. A success clears the login's count. Kept in memory, bounded."""

    clock: Any = time.monotonic
    _failures: OrderedDict[str, tuple[int, float]] = field(default_factory=OrderedDict)  # key -> (count, until)

    def wait(self, *keys: str) -> float:
        """Seconds before these may try again (0: now)."""
        now: float = self.clock()
        return max([0.0, *(self._failures.get(k, (0, 0.0))[1] - now for k in keys)])

    def failed(self, *keys: str) -> None:
        now = self.clock()
        for key in keys:
            count = self._failures.pop(key, (0, 0.0))[0] + 1
            # The FREE_FAILURES-th failure starts the wait: the next try waits FIRST_WAIT
            # (the sixth after five), each failure after doubles it.
            extra = count - (FREE_ADDRESS_FAILURES if key.startswith("address:") else FREE_FAILURES) + 1
            until = now + min(FIRST_WAIT * 2 ** (extra - 1), LONGEST_WAIT) if extra > 0 else 0.0
            self._failures[key] = (count, until)
            while len(self._failures) > THROTTLE_KEYS_KEPT:
                self._failures.popitem(last=False)

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)


def same_token(given: str | None, expected: str | None) -> bool:
    return bool(given) and bool(expected) and hmac.compare_digest(str(given), str(expected))
