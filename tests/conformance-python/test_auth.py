"""Authentication: API key (PS-Auth) and OAuth client credentials through
`secrets_safe_library.authentication.Authentication`, sign-out, and the refusals the library
surfaces."""

from __future__ import annotations

import pytest
import requests
from requests.adapters import HTTPAdapter
from secrets_safe_library import authentication, exceptions, secrets_safe
from urllib3.util.retry import Retry

from support import (
    API_URL,
    APP,
    AUTH_FAILED,
    DEPLOYER,
    ORIGIN,
    OUTSIDER,
    READER,
    SEED,
    api_key_string,
    assert_value,
)

COOKIE = "ASP.NET_SessionId"


def has_session_cookie(session: requests.Session) -> bool:
    # A bare bool: pytest's assertion introspection would otherwise print the cookie jar.
    return COOKIE in session.cookies


def user_info_ok(resp, principal):
    body = resp.json()
    assert body["UserName"] == principal
    assert body["Name"] == principal
    assert body["UserId"] == SEED.user_id(principal)
    assert set(body) >= {"UserId", "SID", "EmailAddress", "UserName", "Name"}


def first_readable(principal):
    return next(s for s in SEED.readable(principal) if s.kind == "credential" and "/" not in s.title)


# ------------------------------------------------------------------ API key


@pytest.mark.parametrize(
    "user,style",
    [
        (READER, "readme"),  # <key>; runas=<user>;
        (READER, "terraform"),  # <key>;runas=<user>;
        (DEPLOYER, "readme"),  # <key>; runas=<user>; pwd=[<pwd>];
        (DEPLOYER, "terraform"),  # <key>;runas=<user>;pwd=[<pwd>];
        (DEPLOYER, "nobracket"),  # <key>; runas=<user>; pwd=<pwd>;   (emulator leniency)
    ],
)
def test_api_key_sign_in_and_read(connect, user, style):
    auth, resp, session = connect(user, api_key=api_key_string(user, style=style))
    user_info_ok(resp, user)
    assert has_session_cookie(session), "SignAppIn set the session cookie"
    s = first_readable(user)
    got = secrets_safe.SecretsSafe(authentication=auth).get_secret(s.path())
    assert_value(got, s.value, s.path())


def test_api_key_pwd_ignored_for_a_user_without_password(connect):
    # Emulator choice (docs/emulator.md §3): a pwd sent for a user without one is ignored.
    _, resp, _ = connect(READER, api_key=api_key_string(READER, pwd="anything"))
    user_info_ok(resp, READER)


def test_api_key_without_runas_is_refused_by_the_library_validator():
    # The library checks 128..263 characters: a bare GUID-style (older) key cannot be used at all.
    with pytest.raises(exceptions.OptionsError):
        authentication.Authentication(api_url=API_URL, api_key="0a1b2c3d-0000-4000-8000-000000000000")


REFUSALS = {
    "unknown key": lambda: api_key_string(READER, key="f" * 128),
    "key not registered for the run-as user": lambda: api_key_string(READER, key=SEED.api_key_not_for(READER)),
    "unknown run-as user": lambda: f"{SEED.api_key_for(READER)}; runas=nobody-here;",
    "missing pwd": lambda: api_key_string(DEPLOYER, pwd=None),
    "wrong pwd": lambda: api_key_string(DEPLOYER, pwd="not-the-password"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_api_key_refusals_are_returned_not_raised(connect, emu, case):
    # get_api_access() hands back the SignAppIn response; the caller must check status_code.
    before = emu.state()["sessions_open"]
    _, resp, session = connect(READER, api_key=REFUSALS[case](), expect=None)
    assert resp.status_code == 401
    assert resp.json() == AUTH_FAILED
    assert not has_session_cookie(session), "no session cookie after a refused SignAppIn"
    assert emu.state()["sessions_open"] == before


def test_outsider_reads_only_its_own_safe(connect):
    auth, resp, _ = connect(OUTSIDER)
    user_info_ok(resp, OUTSIDER)
    ss = secrets_safe.SecretsSafe(authentication=auth)
    own = SEED.readable(OUTSIDER)[0]
    assert_value(ss.get_secret(own.path()), own.value, own.path())


# ------------------------------------------------------------------ OAuth


def test_oauth_token_and_sign_in(connect, emu):
    client = SEED.oauth_client_of(APP)
    tokens = emu.calls("POST auth/connect/token")
    auth, resp, session = connect(APP, api_version="3.1")
    assert emu.calls("POST auth/connect/token") == tokens + 1
    user_info_ok(resp, APP)
    assert has_session_cookie(session), "SignAppIn set the session cookie"
    token = auth._api_token  # what the library re-sends as Bearer on every call
    jwt_shaped = isinstance(token, str) and token.count(".") == 2
    assert jwt_shaped, "the library kept a JWT-shaped access token"
    # The library's oauth() call on its own: the token response fields.
    body = auth.oauth().json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == client["token_ttl_seconds"]
    assert body["scope"] == "publicapi"
    fresh = body["access_token"] != token
    assert fresh, "a new token per token call"
    s = SEED.readable(APP)[0]
    assert_value(secrets_safe.SecretsSafe(authentication=auth).get_secret(s.path()), s.value, s.path())


def test_oauth_wrong_secret_raises_authentication_failure(connect, emu):
    client = SEED.oauth_client_of(APP)
    wrong = client["client_secret"][:-1] + ("A" if client["client_secret"][-1] != "A" else "B")
    signins = emu.calls("POST auth/signappin")
    with pytest.raises(exceptions.AuthenticationFailure) as e:
        connect(APP, client_secret=wrong)
    assert "statuscode: 400" in str(e.value)
    assert '"invalid_client"' in str(e.value)
    assert emu.calls("POST auth/signappin") == signins, "no SignAppIn after a refused token"


def test_oauth_unknown_client_raises_authentication_failure():
    client = SEED.oauth_client_of(APP)
    auth = authentication.Authentication(
        req=requests.Session(),
        api_url=API_URL,
        client_id="00000000-0000-4000-8000-000000000000",
        client_secret=client["client_secret"],
    )
    with pytest.raises(exceptions.AuthenticationFailure, match="statuscode: 400"):
        auth.get_api_access()


def test_oauth_refusal_with_the_readme_retry_adapter_is_retried(emu):
    # The library's examples mount Retry(total=3, status_forcelist=[400, ...], POST allowed): the
    # token endpoint's 400 is retried three times and surfaces as requests' RetryError
    # ("too many 400 error responses", as seen in real agent logs), not AuthenticationFailure.
    client = SEED.oauth_client_of(APP)
    with requests.Session() as s:
        retry = Retry(
            total=3,
            backoff_factor=0.01,
            status_forcelist=[400, 408, 500, 502, 503, 504],
            allowed_methods=["GET", "POST"],
        )
        s.mount("https://", HTTPAdapter(max_retries=retry))
        auth = authentication.Authentication(
            req=s,
            api_url=API_URL,
            client_id=client["client_id"],
            client_secret=client["client_secret"][::-1],
        )
        before = emu.calls("POST auth/connect/token")
        with pytest.raises(requests.exceptions.RetryError, match="too many 400 error responses"):
            auth.get_api_access()
        assert emu.calls("POST auth/connect/token") == before + 4


def test_library_validator_rejects_the_legacy_prefix():
    # The emulator serves /eEye.RetinaCS.Server/api/public/v3 too; the library refuses any URL
    # without /BeyondTrust/api/public/v before sending anything.
    with pytest.raises(exceptions.OptionsError, match="/BeyondTrust/api/public/v"):
        authentication.Authentication(
            api_url=f"{ORIGIN}/eEye.RetinaCS.Server/api/public/v3", api_key=api_key_string(READER)
        )


# ------------------------------------------------------------------ sessions


def test_sign_out_closes_the_session(connect, emu):
    auth, _, _ = connect(READER)
    ss = secrets_safe.SecretsSafe(authentication=auth)
    s = first_readable(READER)
    assert_value(ss.get_secret(s.path()), s.value, s.path())
    assert emu.state()["sessions_open"] == 1, "exactly this test's session is open"
    assert auth.sign_app_out() is True
    assert emu.state()["sessions_open"] == 0
    # The library still sends its PS-Auth header with every call; the emulator authorizes by the
    # session cookie only, so the call after sign-out is refused.
    with pytest.raises(exceptions.LookupError, match="statuscode: 401"):
        ss.get_secret(s.path())


def test_sign_out_twice_is_harmless(connect):
    auth, _, _ = connect(READER)
    assert auth.sign_app_out() is True
    assert auth.sign_app_out() is True


def test_expired_session_is_not_renewed_by_the_library(connect, emu):
    auth, _, _ = connect(READER)
    ss = secrets_safe.SecretsSafe(authentication=auth)
    s = first_readable(READER)
    emu.faults({"expire_sessions": True})
    with pytest.raises(exceptions.LookupError, match="statuscode: 401"):
        ss.get_secret(s.path())
    # A new sign-in on the same Authentication object recovers.
    assert auth.get_api_access().status_code == 200
    assert_value(ss.get_secret(s.path()), s.value, s.path())


def test_two_sessions_of_one_user_are_independent(connect, emu):
    a1, _, s1 = connect(READER)
    a2, _, s2 = connect(READER)
    distinct = s1.cookies[COOKIE] != s2.cookies[COOKIE]
    assert distinct, "a new session cookie per SignAppIn"
    assert emu.state()["sessions_open"] == 2
    a1.sign_app_out()
    s = first_readable(READER)
    assert_value(secrets_safe.SecretsSafe(authentication=a2).get_secret(s.path()), s.value, s.path())
