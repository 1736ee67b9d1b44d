"""TLS as the library really uses it: verification on, the emulator's CA trusted through
REQUESTS_CA_BUNDLE (set by ./run) or through the library's own `verify_ca=<path>` option."""

from __future__ import annotations

import socket
import ssl
from urllib.parse import urlsplit

import certifi
import pytest
import requests
from requests.adapters import HTTPAdapter
from secrets_safe_library import exceptions, secrets_safe

from support import APP, CA, ORIGIN, READER, SEED, assert_value

HOST, PORT = urlsplit(ORIGIN).hostname, urlsplit(ORIGIN).port


def a_secret():
    return next(s for s in SEED.readable(READER) if s.kind == "credential" and "/" not in s.title)


def handshake(ctx: ssl.SSLContext, server_hostname: str) -> str:
    with socket.create_connection((HOST, PORT), timeout=10) as sock:
        with ctx.wrap_socket(sock, server_hostname=server_hostname) as tls:
            return tls.version()


def test_verification_is_on_untrusted_ca_is_refused(connect, monkeypatch):
    # With only the public CAs trusted (certifi), the library cannot sign in: nothing is skipped.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    with pytest.raises(requests.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        connect(READER)


def test_verify_ca_path_option(connect, monkeypatch):
    # The library's own option: verify_ca="<CA bundle path>", with no CA environment variable.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    auth, _, session = connect(READER, verify_ca=CA)
    assert session.verify == CA
    s = a_secret()
    assert_value(secrets_safe.SecretsSafe(authentication=auth).get_secret(s.path()), s.value, s.path())


def test_verify_ca_path_is_overridden_by_requests_ca_bundle(connect, emu, monkeypatch):
    # Library pitfall: Authentication sets session.verify=<path>, but requests lets
    # REQUESTS_CA_BUNDLE replace a session-level `verify` on every call that passes none, which is
    # every call except the token call. A container with REQUESTS_CA_BUNDLE set to the system
    # bundle therefore fails at SignAppIn although verify_ca names the right CA.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    with pytest.raises(requests.exceptions.SSLError):
        connect(READER, verify_ca=CA)
    # OAuth: the token call passes verify=<path> explicitly and succeeds; SignAppIn fails.
    tokens = emu.calls("POST auth/connect/token")
    with pytest.raises(requests.exceptions.SSLError):
        connect(APP, verify_ca=CA)
    assert emu.calls("POST auth/connect/token") == tokens + 1


def test_verify_ca_empty_string_is_refused():
    from secrets_safe_library import authentication

    with pytest.raises(exceptions.OptionsError):
        authentication.Authentication(
            api_url=f"{ORIGIN}/BeyondTrust/api/public/v3", api_key="k" * 128, verify_ca="  "
        )


@pytest.mark.parametrize("name", ["127.0.0.1", "localhost"])
def test_chain_passes_openssl_strict_verification(name):
    # Python 3.13's ssl.create_default_context() and urllib3 2.x on Python >= 3.13 (so the
    # library there, e.g. in BeyondTrust's secrets-agent image) set VERIFY_X509_STRICT, which
    # refuses a leaf without an Authority Key Identifier. Emulate that on this interpreter.
    ctx = ssl.create_default_context(cafile=CA)
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT | ssl.VERIFY_X509_PARTIAL_CHAIN
    assert handshake(ctx, name) in ("TLSv1.2", "TLSv1.3")


def test_tls12_is_offered():
    ctx = ssl.create_default_context(cafile=CA)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    assert handshake(ctx, "127.0.0.1") == "TLSv1.2"


class StrictAdapter(HTTPAdapter):
    """An adapter whose TLS context is what urllib3 builds on Python >= 3.13."""

    def init_poolmanager(self, *args, **kwargs):
        ctx = ssl.create_default_context(cafile=CA)
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT | ssl.VERIFY_X509_PARTIAL_CHAIN
        kwargs["ssl_context"] = ctx
        return super().init_poolmanager(*args, **kwargs)


def test_library_flow_over_strict_tls(connect):
    with requests.Session() as s:
        s.mount("https://", StrictAdapter())
        auth, _, _ = connect(READER, session=s)
        sec = a_secret()
        assert_value(secrets_safe.SecretsSafe(authentication=auth).get_secret(sec.path()), sec.value, sec.path())
