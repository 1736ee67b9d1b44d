"""Managed accounts through `managed_account.ManagedAccount` (lookup → Requests → Credentials →
check-in), and the lower-level `requests.Request` and `credentials.Credentials` classes."""

from __future__ import annotations

import re
from datetime import datetime

import pytest
from secrets_safe_library import credentials, exceptions, managed_account
from secrets_safe_library import requests as ps_requests

from support import (
    ACCOUNT_NOT_FOUND,
    APP,
    DEPLOYER,
    LOWLEVEL,
    OUTSIDER,
    PENDING,
    READER,
    RESERVED_ACCOUNTS,
    ROTATING,
    ROTATING_OPTOUT,
    ROTATING_REQ,
    SEED,
    assert_not_value,
    assert_value,
)

FIELDS = {
    "PlatformID", "SystemId", "SystemName", "DomainName", "AccountId", "AccountName", "InstanceName",
    "UserPrincipalName", "ApplicationID", "ApplicationDisplayName", "DefaultReleaseDuration",
    "MaximumReleaseDuration", "LastChangeDate", "NextChangeDate", "IsChanging", "ChangeState",
    "IsISAAccess", "PreferredNodeID", "AccountDescription",
}  # fmt: skip


def static_accounts(principal):
    return [
        a
        for a in SEED.requestable(principal)
        if (a.system, a.account) not in RESERVED_ACCOUNTS and not a.rotate
    ]


def acct_id(a):
    return a.path()


def utc(ts: str) -> datetime:
    # The API's dates carry 7 fractional digits; datetime takes 6.
    return datetime.fromisoformat(re.sub(r"(\.\d{6})\d*Z$", r"\1+00:00", ts))


# ------------------------------------------------------------------ the library's flow


@pytest.mark.parametrize("acct", static_accounts(READER), ids=acct_id)
def test_get_secret_every_requestable_account(connect, emu, acct):
    auth, _, _ = connect(READER)
    got = managed_account.ManagedAccount(authentication=auth).get_secret(acct.path())
    assert_value(got, acct.password, acct.path())
    # The flow checked its request in.
    assert emu.state()["requests_open"] == 0


def test_get_secrets_batch_and_custom_separator(connect):
    auth, _, _ = connect(READER)
    mine = static_accounts(READER)
    got = managed_account.ManagedAccount(authentication=auth).get_secrets([a.path() for a in mine])
    assert sorted(got) == sorted(a.path() for a in mine)
    for a in mine:
        assert_value(got[a.path()], a.password, a.path())
    # The library's example uses '*' as the separator.
    star = managed_account.ManagedAccount(authentication=auth, separator="*")
    assert_value(star.get_secret(mine[0].path("*")), mine[0].password, mine[0].path())


def test_get_secret_with_metadata(connect):
    auth, _, _ = connect(READER)
    a = static_accounts(READER)[0]
    got = managed_account.ManagedAccount(authentication=auth).get_secret_with_metadata(a.path())
    assert sorted(got) == sorted([a.path(), f"{a.path()}-metadata"])
    assert_value(got[a.path()], a.password, a.path())
    meta = got[f"{a.path()}-metadata"]
    assert FIELDS <= set(meta)
    assert (meta["SystemName"], meta["AccountName"]) == (a.system, a.account)
    assert isinstance(meta["SystemId"], int) and meta["SystemId"] > 0
    assert isinstance(meta["AccountId"], int) and meta["AccountId"] > 0


def test_oauth_and_second_user_release_their_accounts(connect):
    for principal in (APP, DEPLOYER):
        auth, _, _ = connect(principal)
        ma = managed_account.ManagedAccount(authentication=auth)
        mine = static_accounts(principal)
        assert mine, principal
        for a in mine:
            assert_value(ma.get_secret(a.path()), a.password, f"{principal}: {a.path()}")


def test_rotation_on_checkin_by_default(connect):
    # ManagedAccount(rotate_on_checkin=None) sends no RotateOnCheckin: the server default (true)
    # applies, so an account that rotates after check-in has a new password on the next release.
    acct = SEED.account(*ROTATING)
    auth, _, _ = connect(READER)
    ma = managed_account.ManagedAccount(authentication=auth)
    first = ma.get_secret(acct.path())
    assert_value(first, acct.password, f"{acct.path()} first release")
    second = ma.get_secret(acct.path())
    assert_not_value(second, first, f"{acct.path()} after a rotating check-in")
    third = ma.get_secret(acct.path())
    assert_not_value(third, second, f"{acct.path()} after a second rotating check-in")


def test_rotation_opt_out(connect):
    acct = SEED.account(*ROTATING_OPTOUT)
    auth, _, _ = connect(READER)
    ma = managed_account.ManagedAccount(authentication=auth, rotate_on_checkin=False)
    for n in range(2):
        assert_value(ma.get_secret(acct.path()), acct.password, f"{acct.path()} release {n + 1}")


def test_request_post_request_does_not_rotate_by_default(connect):
    # Request.post_request(rotate_on_checkin=False by default) always sends RotateOnCheckin: the
    # opposite default of ManagedAccount, which sends none. True asks for the rotation.
    acct = SEED.account(*ROTATING_REQ)
    auth, _, _ = connect(READER)
    ma = managed_account.ManagedAccount(authentication=auth)
    rq = ps_requests.Request(auth)
    cr = credentials.Credentials(auth)
    info = ma.get_managed_accounts(system_name=acct.system, account_name=acct.account)

    def release(**kw):
        rid, status = rq.post_request(info["SystemId"], info["AccountId"], 5, **kw)
        assert status == 201
        value = cr.get_credentials_by_request_id(rid)
        rq.put_request_checkin(rid, reason="python conformance done")
        return value

    assert_value(release(), acct.password, f"{acct.path()} release 1")
    assert_value(release(), acct.password, f"{acct.path()} release 2 (no rotation)")
    assert_value(release(rotate_on_checkin=True), acct.password, f"{acct.path()} release 3")
    assert_not_value(release(), acct.password, f"{acct.path()} after RotateOnCheckin: true")


def test_account_not_requestable_is_not_found_and_signs_out(connect, emu):
    auth, _, _ = connect(READER)
    ma = managed_account.ManagedAccount(authentication=auth)
    other = SEED.not_requestable(READER)[0]
    for path in (other.path(), "no-such-system/no-such-account"):
        with pytest.raises(exceptions.LookupError, match="statuscode: 404") as e:
            ma.get_secret(path)
        assert f'"{ACCOUNT_NOT_FOUND}"' in str(e.value)
        assert emu.state()["sessions_open"] == 0, "the library signed out before raising"
        assert auth.get_api_access().status_code == 200  # sign in again for the next case


def test_principal_without_any_requestable_account(connect):
    # Emulator choice (docs/emulator.md §5): no Requestor role at all → 403 from ManagedAccounts.
    assert not SEED.requestable(OUTSIDER)
    auth, _, _ = connect(OUTSIDER)
    with pytest.raises(exceptions.LookupError, match="statuscode: 403"):
        managed_account.ManagedAccount(authentication=auth).get_managed_accounts()


def test_invalid_account_path_sends_nothing(connect, emu):
    auth, _, _ = connect(READER)
    ma = managed_account.ManagedAccount(authentication=auth)
    before = emu.calls("GET managedaccounts")
    for path in ("db-prod", "db-prod/a/b"):
        with pytest.raises(exceptions.LookupError, match="Invalid managed account path"):
            ma.get_secret(path)
    assert emu.calls("GET managedaccounts") == before


def test_get_managed_accounts_listing(connect):
    auth, _, _ = connect(READER)
    ma = managed_account.ManagedAccount(authentication=auth)
    mine = SEED.requestable(READER)
    listed = ma.get_managed_accounts()
    assert isinstance(listed, list)
    assert sorted((x["SystemName"], x["AccountName"]) for x in listed) == sorted((a.system, a.account) for a in mine)
    system = mine[-1].system
    on_system = ma.get_managed_accounts(system_name=system)
    assert sorted(x["AccountName"] for x in on_system) == sorted(a.account for a in mine if a.system == system)
    one = ma.get_managed_accounts(system_name=mine[0].system, account_name=mine[0].account)
    assert isinstance(one, dict), "both names: a single object"
    assert FIELDS <= set(one)
    assert len(ma.get_managed_accounts(limit=1)) == 1
    assert len(ma.get_managed_accounts(offset=len(mine))) == 0


# ------------------------------------------------------------------ Request and Credentials


def test_request_credentials_checkin_lifecycle(connect, emu):
    acct = SEED.account(*LOWLEVEL)
    auth, _, _ = connect(READER)
    ma = managed_account.ManagedAccount(authentication=auth)
    rq = ps_requests.Request(auth)
    cr = credentials.Credentials(auth)
    info = ma.get_managed_accounts(system_name=acct.system, account_name=acct.account)
    sys_id, acc_id = info["SystemId"], info["AccountId"]

    def relogin():
        assert auth.get_api_access().status_code == 200

    rid, status = rq.post_request(sys_id, acc_id, 5, reason="python conformance")
    assert status == 201 and isinstance(rid, int)
    # reuse: 200 and the same id.
    assert rq.post_request(sys_id, acc_id, 5, conflict_option="reuse") == (rid, 200)
    # No ConflictOption while one is open: 409, raised as CreationError (and signed out).
    with pytest.raises(exceptions.CreationError, match="statuscode: 409"):
        rq.post_request(sys_id, acc_id, 5)
    relogin()

    active = [r for r in rq.get_requests(status="active") if r["RequestID"] == rid]
    assert len(active) == 1
    r = active[0]
    assert (r["SystemName"], r["AccountName"], r["Status"]) == (acct.system, acct.account, "Active")
    assert (r["SystemID"], r["AccountID"], r["AccessType"]) == (sys_id, acc_id, "View")
    assert r["Reason"] == "python conformance"
    minutes = (utc(r["ExpiresDate"]) - utc(r["RequestReleaseDate"])).total_seconds() / 60
    assert abs(minutes - 5) < 0.1, "DurationMinutes 5"

    assert_value(cr.get_credentials_by_request_id(rid), acct.password, f"{acct.path()} Credentials")
    assert_value(cr.get_credentials_by_request_id(rid, type="password"), acct.password, "type=password")
    assert_value(ma.get_credential_by_request_id(rid), acct.password, f"{acct.path()} via ManagedAccount")

    # renew: a new request; the old one is cancelled and no longer readable or listed.
    rid2, status = rq.post_request(sys_id, acc_id, 5, conflict_option="renew")
    assert status == 201 and rid2 != rid
    with pytest.raises(exceptions.LookupError, match="statuscode: 403"):
        cr.get_credentials_by_request_id(rid)
    relogin()
    assert [x["RequestID"] for x in rq.get_requests() if x["RequestID"] in (rid, rid2)] == [rid2]

    # Check-in: 204. Closed requests are not listed ("all" = active and pending).
    assert rq.put_request_checkin(rid2) is None
    assert [x for x in rq.get_requests(status="all") if x["RequestID"] in (rid, rid2)] == []
    with pytest.raises(exceptions.UpdateError, match="statuscode: 403"):
        rq.put_request_checkin(rid2)
    relogin()
    with pytest.raises(exceptions.LookupError, match="statuscode: 403"):
        cr.get_credentials_by_request_id(rid2)
    relogin()
    with pytest.raises(exceptions.UpdateError, match="statuscode: 404"):
        rq.put_request_checkin(999999)
    relogin()
    with pytest.raises(exceptions.OptionsError):
        rq.post_request(sys_id, acc_id, 0)  # DurationMinutes 1..525600, checked by the library
    assert emu.state()["requests_open"] == 0


def test_pending_approval(connect, emu):
    acct = SEED.account(*PENDING)
    auth, _, _ = connect(READER)
    ma = managed_account.ManagedAccount(authentication=auth)
    emu.faults({"pending_approval": True})
    try:
        # Credentials of a pending request: 403; the library raises without checking in.
        with pytest.raises(exceptions.LookupError, match="statuscode: 403"):
            ma.get_secret(acct.path())
        state = emu.state()
        assert (state["requests_pending"], state["requests_open"]) == (1, 0)
        assert auth.get_api_access().status_code == 200
        pending = ps_requests.Request(auth).get_requests(status="pending")
        assert len(pending) == 1
        p = pending[0]
        # The body ManagedAccount.create_request sent.
        assert (p["SystemName"], p["AccountName"]) == (acct.system, acct.account)
        assert (p["Status"], p["AccessType"], p["Reason"]) == ("Pending", "View", "Secrets Safe Integration")
        assert ps_requests.Request(auth).get_requests(status="active") == []
        # Approved: the next run reuses the same request (ConflictOption reuse), reads, checks in.
        emu.faults({"approve_requests": True, "pending_approval": False})
        assert_value(ma.get_secret(acct.path()), acct.password, f"{acct.path()} after approval")
        state = emu.state()
        assert (state["requests_pending"], state["requests_open"]) == (0, 0)
    finally:
        emu.faults({"pending_approval": False, "approve_requests": True})
