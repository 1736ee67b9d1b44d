"""What a user of BeyondTrust's official Python library (beyondtrust-bips-library) writes to do
ps-agent's job: sign in with an API key, fetch secrets and managed-account passwords, write one
file each, sign out. bench/compare/run measures it beside ps-agent against the same emulator.

    python fetch.py --api-url https://127.0.0.1:PORT/BeyondTrust/api/public/v3 --root DIR \
        --secret NAME=safe/folder/title ... --account NAME=system/account ...

The API key and run-as user come from PS_API_KEY and PS_RUNAS; the CA from REQUESTS_CA_BUNDLE
(verification stays on). Each file is written to a temporary name and renamed. Exit status 1
when anything failed. Values are never printed.
"""

import argparse
import logging
import os
import sys

import requests
from secrets_safe_library import authentication, managed_account, secrets_safe


def pair(v: str) -> tuple[str, str]:
    name, sep, path = v.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{v!r} is not NAME=PATH")
    return name, path


def write(root: str, name: str, value: str) -> None:
    tmp = os.path.join(root, f".{name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    os.rename(tmp, os.path.join(root, name))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--api-url", required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--secret", type=pair, action="append", default=[])
    p.add_argument("--account", type=pair, action="append", default=[])
    args = p.parse_args()
    key, runas = os.environ.get("PS_API_KEY"), os.environ.get("PS_RUNAS")
    if not key or not runas:
        print("fetch.py: PS_API_KEY and PS_RUNAS are required", file=sys.stderr)
        return 2
    os.makedirs(args.root, mode=0o700, exist_ok=True)
    log = logging.getLogger("bips")
    log.setLevel(logging.ERROR)
    session = requests.Session()
    auth = authentication.Authentication(
        req=session,
        timeout_connection=10,
        timeout_request=30,
        api_url=args.api_url,
        verify_ca=True,
        logger=log,
        api_key=f"{key};runas={runas};",
        api_version="3.1",
    )
    resp = auth.get_api_access()
    if resp.status_code != 200:
        print(f"fetch.py: sign-in answered {resp.status_code}", file=sys.stderr)
        return 1
    failed = False
    try:
        if args.secret:
            # The library's batch call: one GET per secret, in order.
            got = secrets_safe.SecretsSafe(authentication=auth, logger=log).get_secrets([path for _, path in args.secret])
            for name, path in args.secret:
                if path in got:
                    write(args.root, name, got[path])
                else:
                    print(f"fetch.py: {name}: {path} not returned", file=sys.stderr)
                    failed = True
        ma = managed_account.ManagedAccount(authentication=auth, logger=log)
        for name, path in args.account:
            # Lookup, request, credentials, check-in.
            write(args.root, name, ma.get_secret(path))
    except Exception as e:  # noqa: BLE001 - the library raises its own and requests' errors
        print(f"fetch.py: {type(e).__name__}: {str(e)[:300]}", file=sys.stderr)
        failed = True
    finally:
        auth.sign_app_out()
        session.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
