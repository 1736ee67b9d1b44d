"""Fixtures of the conformance run of BeyondTrust's Python library against ps-emulator."""

from __future__ import annotations

import logging

import pytest
import requests
from secrets_safe_library import authentication

from support import (
    API_URL,
    APP,
    CA,
    DECODE_QUIRK_FILE,
    DEPLOYER,
    LOWLEVEL,
    ORIGIN,
    OUTSIDER,
    PENDING,
    READER,
    RESERVED_ACCOUNTS,
    ROTATING,
    ROTATING_OPTOUT,
    ROTATING_REQ,
    SEED,
    api_key_string,
)

# The library's own log lines (it redacts values itself); pytest shows them under a failing test.
LOG = logging.getLogger("bips")
LOG.setLevel(logging.DEBUG)


def pytest_configure(config):
    """Refuse a seed that cannot exercise every flow, instead of skipping tests."""
    problems = []

    def need(cond, what):
        if not cond:
            problems.append(what)

    try:
        for user in (READER, DEPLOYER, OUTSIDER):
            need(user.lower() in SEED.users, f"user {user}")
        need(SEED.oauth_client_of(APP) is not None, f"OAuth client of {APP}")
        if problems:
            raise KeyError("missing principals")
        need(SEED.password_of(READER) is None, f"{READER} without a password")
        need(SEED.password_of(DEPLOYER), f"{DEPLOYER} with a password")
        SEED.api_key_for(READER), SEED.api_key_for(DEPLOYER), SEED.api_key_not_for(READER)
        mine = SEED.readable(READER)
        for kind in ("credential", "text", "file"):
            need(any(s.kind == kind for s in mine), f"a {kind} secret readable by {READER}")
        need(any("/" in s.title for s in mine), f"a title with '/' readable by {READER}")
        need(any(not s.folders for s in mine), f"a secret directly under a safe readable by {READER}")
        need(SEED.unreadable(READER), f"a secret {READER} may not read")
        need(SEED.readable(APP), f"a secret readable by {APP}")
        need(any(s not in mine for s in SEED.readable(DEPLOYER)), f"a secret only {DEPLOYER} reads")
        quirk = SEED.secret(DECODE_QUIRK_FILE)
        need(quirk.kind == "file" and not quirk.value.isascii(), f"{DECODE_QUIRK_FILE}: non-ASCII file")
        need(quirk in mine, f"{DECODE_QUIRK_FILE} readable by {READER}")
        for system, account in RESERVED_ACCOUNTS:
            a = SEED.account(system, account)
            need(a in SEED.requestable(READER), f"{system}/{account} requestable by {READER}")
        rotating = (ROTATING, ROTATING_OPTOUT, ROTATING_REQ)
        need(all(SEED.account(*a).rotate for a in rotating), "three rotating accounts")
        need(not SEED.account(*LOWLEVEL).rotate and not SEED.account(*PENDING).rotate, "static low-level accounts")
        static = [a for a in SEED.requestable(READER) if (a.system, a.account) not in RESERVED_ACCOUNTS]
        need(len(static) >= 2 and not any(a.rotate for a in static), f"two static accounts for {READER}")
        need(SEED.not_requestable(READER), f"an account {READER} may not request")
        need(any(not a.rotate for a in SEED.requestable(APP)), f"a static account for {APP}")
    except KeyError as e:
        problems.append(str(e))
    if problems:
        raise pytest.UsageError("seed.yaml cannot exercise every flow: missing " + "; ".join(problems))


@pytest.fixture
def connect():
    """connect(principal, ...) signs in the way the library's README does and returns
    (Authentication, SignAppIn response, requests.Session); every session is signed out at teardown.

    principal: an API-key user (api_key built from the seed unless given) or an OAuth
    application user (client credentials from the seed)."""
    opened: list[tuple[authentication.Authentication, requests.Session]] = []

    def _connect(
        principal: str = READER,
        *,
        api_version: str | None = None,
        api_key: str | None = None,
        client_secret: str | None = None,
        session: requests.Session | None = None,
        verify_ca: bool | str = True,
        expect: int | None = 200,
    ):
        s = session if session is not None else requests.Session()
        client = SEED.oauth_client_of(principal)
        kwargs: dict = {}
        if client is not None and api_key is None:
            kwargs.update(client_id=client["client_id"], client_secret=client_secret or client["client_secret"])
        else:
            kwargs["api_key"] = api_key if api_key is not None else api_key_string(principal)
        auth = authentication.Authentication(
            req=s,
            timeout_connection=10,
            timeout_request=30,
            api_url=API_URL,
            verify_ca=verify_ca,
            logger=LOG,
            api_version=api_version,
            **kwargs,
        )
        opened.append((auth, s))
        resp = auth.get_api_access()
        if expect is not None:
            assert resp.status_code == expect, f"SignAppIn answered {resp.status_code}, want {expect}"
        return auth, resp, s

    yield _connect
    for auth, s in opened:
        try:
            auth.sign_app_out()
        except requests.RequestException:
            pass
        s.close()


class Emulator:
    """The emulator's operator endpoints (docs/emulator.md §4), outside the API."""

    def __init__(self):
        self.http = requests.Session()
        self.http.verify = CA

    def state(self) -> dict:
        r = self.http.get(f"{ORIGIN}/_emulator/state", verify=CA, timeout=10)
        assert r.status_code == 200, f"GET /_emulator/state: {r.status_code}"
        return r.json()

    def calls(self, route: str) -> int:
        return self.state()["calls"][route]

    def faults(self, body: dict) -> dict:
        r = self.http.post(f"{ORIGIN}/_emulator/faults", json=body, verify=CA, timeout=10)
        assert r.status_code == 200, f"POST /_emulator/faults: {r.status_code} {r.text}"
        return r.json()


@pytest.fixture(scope="session")
def emu():
    e = Emulator()
    yield e
    e.http.close()
