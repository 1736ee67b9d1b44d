"""Shared constants and helpers of the Python conformance tests (imported by conftest and tests).

Secret values, API keys, client secrets, tokens and cookies are never printed: value checks go
through `assert_value`, which reports lengths and the first differing offset only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from psseed import Seed

_ENV = ("PS_CONFORMANCE_API_URL", "PS_CONFORMANCE_ORIGIN", "PS_CONFORMANCE_CA", "PS_CONFORMANCE_SEED")
_missing = [k for k in _ENV if not os.environ.get(k)]
if _missing:
    raise pytest.UsageError(
        f"{', '.join(_missing)} not set: run the suite through tests/conformance-python/run, "
        "which starts ps-emulator and sets them"
    )

API_URL = os.environ["PS_CONFORMANCE_API_URL"]  # https://127.0.0.1:PORT/BeyondTrust/api/public/v3
ORIGIN = os.environ["PS_CONFORMANCE_ORIGIN"]  # https://127.0.0.1:PORT
CA = os.environ["PS_CONFORMANCE_CA"]  # PEM of the emulator's generated CA
SEED = Seed(Path(os.environ["PS_CONFORMANCE_SEED"]))

# Roles the tests give to seed entries (conftest.pytest_configure checks the seed supports them).
READER = "py-reader"  # API-key run-as user without a password
DEPLOYER = "py-deployer"  # API-key run-as user with a password
OUTSIDER = "py-outsider"  # another team, on another API key
APP = "app-py"  # OAuth application user
ROTATING = ("db-prod", "svc_rotating")  # released by the default flow: rotates at check-in
ROTATING_OPTOUT = ("db-prod", "svc_rotating_optout")  # released with rotate_on_checkin=False
ROTATING_REQ = ("db-prod", "svc_rotating_req")  # released through Request.post_request
LOWLEVEL = ("db-prod", "svc_requests")  # Request/Credentials calls (409, reuse, renew)
PENDING = ("app-prod", "svc_pending")  # pending-approval flow
RESERVED_ACCOUNTS = {ROTATING, ROTATING_OPTOUT, ROTATING_REQ, LOWLEVEL, PENDING}
DECODE_QUIRK_FILE = "team-a/apps/payments/price.txt"  # short non-ASCII file (README finding)

AUTH_FAILED = "Failed to authenticate due to one or more authentication rules."
ACCOUNT_NOT_FOUND = "Managed Account not found"


def api_key_string(user: str, *, key: str | None = None, pwd: str | None = "seed", style: str = "readme") -> str:
    """The `api_key` argument as users write it; the library sends `PS-Auth key=<this>`.

    style "readme": `<key>; runas=<user>; pwd=[<pwd>];` (the library README and GitHub action);
    style "terraform": `<key>;runas=<user>;pwd=[<pwd>];` (no spaces);
    style "nobracket": `<key>; runas=<user>; pwd=<pwd>;`.
    pwd "seed" takes the user's seed password (none if it has none); None sends no pwd."""
    key = SEED.api_key_for(user) if key is None else key
    if pwd == "seed":
        pwd = SEED.password_of(user) if user.lower() in SEED.users else None
    sp = "" if style == "terraform" else " "
    out = f"{key};{sp}runas={user};"
    if pwd is not None:
        out += f"{sp}pwd={pwd};" if style == "nobracket" else f"{sp}pwd=[{pwd}];"
    return out


def first_difference(a: str | bytes, b: str | bytes) -> int:
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


def assert_value(got, want, what: str) -> None:
    """got == want, without ever showing either value."""
    same = type(got) is type(want) and got == want
    if same:
        return
    if not isinstance(got, type(want)):
        detail = f"got a {type(got).__name__}, want a {type(want).__name__}"
    else:
        detail = f"lengths {len(got)} and {len(want)}, first difference at offset {first_difference(got, want)}"
    assert same, f"{what}: value differs from the seed ({detail})"


def assert_not_value(got, unwanted, what: str) -> None:
    """got != unwanted (and non-empty), without showing either value."""
    differs = bool(got) and got != unwanted
    assert differs, f"{what}: value is empty or still equals the old value"
