"""The emulator seed (docs/emulator.md §2) as the tests need it: who reads what, who may request
which account, and every expected value. Names compare without case, as in the emulator."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Secret:
    safe: str
    folders: tuple[str, ...]  # folder names below the safe, outermost first
    title: str
    kind: str  # credential | text | file
    value: str  # credential password, text, or file content
    username: str | None
    file_name: str | None
    readers: tuple[str, ...]

    @property
    def segments(self) -> list[str]:
        return [self.safe, *self.folders]

    def folder(self, sep: str = "/") -> str:
        return sep.join(self.segments)

    def path(self, sep: str = "/") -> str:
        return sep.join([*self.segments, self.title])

    @property
    def api_type(self) -> str:
        return {"credential": "Credential", "text": "Text", "file": "File"}[self.kind]


@dataclass(frozen=True)
class Folder:
    segments: tuple[str, ...]  # safe first
    readers: tuple[str, ...]
    secret_titles: tuple[str, ...]  # secrets directly in this folder

    @property
    def name(self) -> str:
        return self.segments[-1]

    @property
    def is_safe(self) -> bool:
        return len(self.segments) == 1

    def path(self, sep: str = "/") -> str:
        return sep.join(self.segments)


@dataclass(frozen=True)
class Account:
    system: str
    account: str
    password: str
    requestors: tuple[str, ...]
    rotate: bool

    def path(self, sep: str = "/") -> str:
        return f"{self.system}{sep}{self.account}"


class Seed:
    def __init__(self, path: str | Path):
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        self.users: dict[str, dict] = {u["name"].lower(): u for u in data.get("users") or []}
        self.api_keys: list[dict] = list(data.get("api_keys") or [])
        self.oauth_clients: list[dict] = list(data.get("oauth_clients") or [])
        self.secrets: list[Secret] = []
        self.folders: list[Folder] = []
        for safe in data.get("safes") or []:
            readers = tuple(g.lower() for g in safe.get("readers") or [])
            self._walk(safe, (safe["name"],), readers)
        self.accounts: list[Account] = [
            Account(
                system=a["system"],
                account=a["account"],
                password=a["password"],
                requestors=tuple(g.lower() for g in a.get("requestors") or []),
                rotate=bool(a.get("rotate_on_checkin", False)),
            )
            for a in data.get("managed_accounts") or []
        ]

    def _walk(self, node: dict, segments: tuple[str, ...], readers: tuple[str, ...]) -> None:
        titles = []
        for s in node.get("secrets") or []:
            kind = s["type"].lower()
            value = {"credential": s.get("password"), "text": s.get("text"), "file": s.get("content")}[kind]
            self.secrets.append(
                Secret(
                    safe=segments[0],
                    folders=segments[1:],
                    title=s["title"],
                    kind=kind,
                    value=value,
                    username=s.get("username"),
                    file_name=s.get("file_name"),
                    readers=readers,
                )
            )
            titles.append(s["title"])
        self.folders.append(Folder(segments=segments, readers=readers, secret_titles=tuple(titles)))
        for child in node.get("folders") or []:
            self._walk(child, (*segments, child["name"]), readers)

    # ------------------------------------------------------------------ principals

    def oauth_client_of(self, principal: str) -> dict | None:
        return next((c for c in self.oauth_clients if c["user"].lower() == principal.lower()), None)

    def groups(self, principal: str) -> set[str]:
        user = self.users.get(principal.lower())
        if user is not None:
            return {g.lower() for g in user.get("groups") or []}
        client = self.oauth_client_of(principal)
        if client is not None:
            return {g.lower() for g in client.get("groups") or []}
        raise KeyError(f"no user or OAuth client {principal!r} in the seed")

    def user_id(self, principal: str) -> int:
        """UserId as the emulator assigns it: from 1001 in seed order, users then OAuth clients."""
        names = [n for n in self.users] + [c["user"].lower() for c in self.oauth_clients]
        return 1001 + names.index(principal.lower())

    def password_of(self, user: str) -> str | None:
        return self.users[user.lower()].get("password")

    def api_key_for(self, user: str) -> str:
        for k in self.api_keys:
            if user.lower() in (u.lower() for u in k["users"]):
                return k["key"]
        raise KeyError(f"no API key lists {user!r}")

    def api_key_not_for(self, user: str) -> str:
        for k in self.api_keys:
            if user.lower() not in (u.lower() for u in k["users"]):
                return k["key"]
        raise KeyError(f"every API key lists {user!r}")

    # ------------------------------------------------------------------ permissions

    def readable(self, principal: str) -> list[Secret]:
        groups = self.groups(principal)
        return [s for s in self.secrets if groups & set(s.readers)]

    def unreadable(self, principal: str) -> list[Secret]:
        groups = self.groups(principal)
        return [s for s in self.secrets if not groups & set(s.readers)]

    def readable_folders(self, principal: str) -> list[Folder]:
        groups = self.groups(principal)
        return [f for f in self.folders if groups & set(f.readers)]

    def folder(self, path: str) -> Folder:
        want = [p.lower() for p in path.split("/")]
        for f in self.folders:
            if [s.lower() for s in f.segments] == want:
                return f
        raise KeyError(f"no folder {path!r} in the seed")

    def secret(self, path: str) -> Secret:
        for s in self.secrets:
            if s.path().lower() == path.lower():
                return s
        raise KeyError(f"no secret {path!r} in the seed")

    def requestable(self, principal: str) -> list[Account]:
        groups = self.groups(principal)
        return [a for a in self.accounts if groups & set(a.requestors)]

    def not_requestable(self, principal: str) -> list[Account]:
        groups = self.groups(principal)
        return [a for a in self.accounts if not groups & set(a.requestors)]

    def account(self, system: str, account: str) -> Account:
        for a in self.accounts:
            if (a.system.lower(), a.account.lower()) == (system.lower(), account.lower()):
                return a
        raise KeyError(f"no managed account {system}/{account} in the seed")
