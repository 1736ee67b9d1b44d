"""Runs last (pytest collects files in name order): the emulator's state after every flow."""

from __future__ import annotations

# Route keys (docs/emulator-contract.md) the library used during the run, and one it never uses:
# list_secrets_by_folder_id sends GET secrets-safe/secrets?folderId=..., not .../folders/{id}/secrets.
USED = [
    "POST auth/connect/token",
    "POST auth/signappin",
    "POST auth/signout",
    "GET secrets-safe/secrets",
    "GET secrets-safe/secrets/{id}",
    "GET secrets-safe/secrets/{id}/file/download",
    "GET secrets-safe/folders",
    "GET secrets-safe/folders/{id}",
    "GET secrets-safe/safes",
    "GET secrets-safe/safes/{id}",
    "GET managedaccounts",
    "POST requests",
    "GET requests",
    "GET credentials/{id}",
    "PUT requests/{id}/checkin",
]
UNUSED = ["GET secrets-safe/folders/{id}/secrets"]


def test_everything_signed_out_and_checked_in(emu):
    state = emu.state()
    # Every session was signed out (by the tests or by the library itself before raising), and
    # every request was checked in.
    assert state["sessions_open"] == 0
    assert state["requests_open"] == 0
    assert state["requests_pending"] == 0
    assert state["faults"]["pending_approval"] is False


def test_every_route_was_exercised(emu):
    calls = emu.state()["calls"]
    assert sorted(calls) == sorted(USED + UNUSED), "the emulator's route keys changed"
    unused = [r for r in USED if calls[r] == 0]
    assert unused == [], f"routes the run never called: {unused}"
    assert [r for r in UNUSED if calls[r] != 0] == []
