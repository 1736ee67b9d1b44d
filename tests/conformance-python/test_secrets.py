"""Secrets Safe through `secrets_safe_library.secrets_safe.SecretsSafe`, `folders.Folder` and
`safes.Safe`: every value comes from seed.yaml."""

from __future__ import annotations

import re

import pytest
from secrets_safe_library import exceptions, folders, safes, secrets_safe

from support import (
    API_URL,
    APP,
    DECODE_QUIRK_FILE,
    DEPLOYER,
    OUTSIDER,
    READER,
    SEED,
    assert_value,
)

GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# The emulator's default FolderPath separator (docs/emulator.md, --folder-path-separator).
FOLDER_PATH_SEP = "\\"


def separator_for(s) -> str:
    """'/' unless a segment contains it; then '|' (SecretsSafe(separator=...))."""
    return "|" if any("/" in seg for seg in [*s.segments, s.title]) else "/"


def readable_id(s):
    return s.path()


def plain_secrets(principal):
    """Readable secrets the library returns exactly (all but the decode-quirk file)."""
    return [s for s in SEED.readable(principal) if s.path() != DECODE_QUIRK_FILE]


# ------------------------------------------------------------------ get_secret


@pytest.mark.parametrize("sec", plain_secrets(READER), ids=readable_id)
def test_get_secret_every_readable_secret(connect, sec):
    auth, _, _ = connect(READER, api_version="3.1")
    sep = separator_for(sec)
    ss = secrets_safe.SecretsSafe(authentication=auth, separator=sep)
    assert_value(ss.get_secret(sec.path(sep)), sec.value, sec.path())


@pytest.mark.parametrize("version", [None, "3.0", "3.1", "3.2"])
def test_get_secrets_batch_every_api_version(connect, version):
    # get_secret_by_path unwraps the 3.2 {TotalCount, Data} shape itself.
    auth, _, _ = connect(READER, api_version=version)
    wanted = [s for s in plain_secrets(READER) if separator_for(s) == "/"]
    got = secrets_safe.SecretsSafe(authentication=auth).get_secrets([s.path() for s in wanted])
    assert sorted(got) == sorted(s.path() for s in wanted)
    for s in wanted:
        assert_value(got[s.path()], s.value, s.path())


def test_get_secret_oauth_principal(connect):
    auth, _, _ = connect(APP, api_version="3.2")
    ss = secrets_safe.SecretsSafe(authentication=auth)
    mine = [s for s in plain_secrets(APP) if separator_for(s) == "/"]
    for s in mine:
        assert_value(ss.get_secret(s.path()), s.value, s.path())


def test_get_secret_deployer_reads_two_safes(connect):
    auth, _, _ = connect(DEPLOYER)
    ss = secrets_safe.SecretsSafe(authentication=auth)
    safes_read = set()
    for s in plain_secrets(DEPLOYER):
        if separator_for(s) == "/":
            assert_value(ss.get_secret(s.path()), s.value, s.path())
            safes_read.add(s.safe)
    assert len(safes_read) >= 2


def metadata_cases():
    mine = SEED.readable(READER)
    return [
        next(s for s in mine if s.kind == "credential" and "/" not in s.title),
        next(s for s in mine if s.kind == "credential" and "/" in s.title),
        next(s for s in mine if s.kind == "text"),
    ]


@pytest.mark.parametrize("sec", metadata_cases(), ids=readable_id)
def test_get_secret_with_metadata(connect, sec):
    auth, _, _ = connect(READER, api_version="3.1")
    sep = separator_for(sec)
    got = secrets_safe.SecretsSafe(authentication=auth, separator=sep).get_secret_with_metadata(sec.path(sep))
    path = sec.path(sep)
    assert sorted(got) == sorted([path, f"{path}-metadata"])
    assert_value(got[path], sec.value, sec.path())
    meta = got[f"{path}-metadata"]
    assert meta["Title"] == sec.title
    assert meta["SecretType"] == sec.api_type
    assert meta["Username"] == sec.username
    assert meta["Folder"] == sec.segments[-1]
    assert meta["FolderPath"] == FOLDER_PATH_SEP.join(sec.segments)
    assert GUID.match(meta["Id"]) and GUID.match(meta["FolderId"])
    # The text of a Text secret is in Password (the library never reads Text).
    assert_value(meta["Password"], sec.value, f"{sec.path()} metadata Password")


def test_file_secret_metadata_and_download(connect):
    auth, _, _ = connect(READER)
    files = [s for s in plain_secrets(READER) if s.kind == "file"]
    assert files
    ss = secrets_safe.SecretsSafe(authentication=auth)
    for f in files:
        got = ss.get_secret_with_metadata(f.path())
        meta = got[f"{f.path()}-metadata"]
        assert meta["SecretType"] == "File"
        assert meta["FileName"] == f.file_name
        assert meta["Password"] is None, "a file's content is not in the lookup"
        assert_value(got[f.path()], f.value, f.path())
        assert_value(ss.get_file_secret_data(meta["Id"]), f.value, f"{f.path()} by id")


def test_file_download_is_decoded_by_guessing(connect):
    # Library quirk: get_file_secret_data returns response.text. The download is
    # application/octet-stream without a charset, so requests guesses the encoding
    # (charset-normalizer); for a short non-ASCII file the guess is wrong. The bytes on the wire
    # are exact.
    sec = SEED.secret(DECODE_QUIRK_FILE)
    auth, _, session = connect(READER)
    ss = secrets_safe.SecretsSafe(authentication=auth)
    meta = ss.get_secret_with_metadata(sec.path())[f"{sec.path()}-metadata"]
    raw = session.get(f"{API_URL}/secrets-safe/secrets/{meta['Id']}/file/download", timeout=30)
    assert raw.status_code == 200
    assert raw.headers["Content-Type"] == "application/octet-stream"
    assert_value(raw.content, sec.value.encode("utf-8"), f"{sec.path()} bytes")
    text = ss.get_file_secret_data(meta["Id"])
    assert_value(text, raw.content.decode(raw.apparent_encoding), f"{sec.path()} as the library decodes it")
    garbled = text != sec.value
    assert garbled, f"{sec.path()}: the library now decodes this file exactly; update README finding"


def test_title_with_slash_needs_another_separator(connect):
    sec = next(s for s in SEED.readable(READER) if "/" in s.title)
    auth, _, _ = connect(READER)
    # With '/', the title's own slash splits it: the library looks up a folder that does not exist.
    with pytest.raises(exceptions.LookupError, match="Secret was not found"):
        secrets_safe.SecretsSafe(authentication=auth).get_secret(sec.path("/"))
    ss = secrets_safe.SecretsSafe(authentication=auth, separator="|")
    assert_value(ss.get_secret(sec.path("|")), sec.value, sec.path())


# ------------------------------------------------------------------ folders of secrets


def test_get_all_secrets_by_folder_path(connect):
    folder = max(SEED.readable_folders(READER), key=lambda f: len(f.secret_titles))
    auth, _, _ = connect(READER)
    got = secrets_safe.SecretsSafe(authentication=auth).get_all_secrets_by_folder_path(folder.path())
    # Library quirk: keys are "<FolderPath>/<Title>", and FolderPath is the server's (backslashes).
    prefix = FOLDER_PATH_SEP.join(folder.segments)
    want_keys = {f"{prefix}/{t}" for t in folder.secret_titles}
    want_keys |= {f"{k}-metadata" for k in want_keys}
    assert set(got) == want_keys
    for t in folder.secret_titles:
        sec = SEED.secret(f"{folder.path()}/{t}")
        assert_value(got[f"{prefix}/{t}"], sec.value, sec.path())
        assert got[f"{prefix}/{t}-metadata"]["Title"] == t


def test_list_secrets_in_a_folder(connect):
    auth, _, _ = connect(READER, api_version="3.1")
    ss = secrets_safe.SecretsSafe(authentication=auth)
    for folder in SEED.readable_folders(READER):
        got = ss.list_secrets(path=folder.path(), separator="/")
        assert sorted(x["Title"] for x in got) == sorted(folder.secret_titles), folder.path()


def test_list_secrets_all_and_by_title(connect):
    auth, _, _ = connect(READER, api_version="3.1")
    ss = secrets_safe.SecretsSafe(authentication=auth)
    mine = SEED.readable(READER)
    assert sorted(x["Title"] for x in ss.list_secrets()) == sorted(s.title for s in mine)
    title = mine[0].title
    got = ss.list_secrets(title=title)
    assert [x["Title"] for x in got] == [s.title for s in mine if s.title.lower() == title.lower()]
    assert ss.list_secrets(path="no-such-safe/folder", separator="/") == []
    assert len(ss.list_secrets(limit=2)) == min(2, len(mine))
    assert len(ss.list_secrets(limit=1000, offset=len(mine) - 1)) == 1


def test_list_secrets_version_32_is_wrapped(connect):
    # Library quirk: list_secrets, unlike get_secret_by_path, does not unwrap the 3.2 shape.
    auth, _, _ = connect(READER, api_version="3.2")
    got = secrets_safe.SecretsSafe(authentication=auth).list_secrets()
    assert isinstance(got, dict) and sorted(got) == ["Data", "TotalCount"]
    assert got["TotalCount"] == len(SEED.readable(READER)) == len(got["Data"])


def test_list_secrets_by_folder_id_and_get_secret_by_id(connect):
    auth, _, _ = connect(READER, api_version="3.1")
    ss = secrets_safe.SecretsSafe(authentication=auth)
    for folder in SEED.readable_folders(READER):
        listed = ss.list_secrets(path=folder.path(), separator="/")
        if not listed:
            continue
        by_id = ss.list_secrets_by_folder_id(listed[0]["FolderId"])
        assert sorted(x["Title"] for x in by_id) == sorted(folder.secret_titles)
        for item in listed:
            one = ss.get_secret_by_id(item["Id"])
            assert one["Id"] == item["Id"] and one["Title"] == item["Title"]
            sec = SEED.secret(f"{folder.path()}/{item['Title']}")
            if sec.kind != "file":
                assert_value(one["Password"], sec.value, f"{sec.path()} by id")


def test_decrypt_false_leaves_password_out(connect):
    auth, _, _ = connect(READER, api_version="3.1")
    ss = secrets_safe.SecretsSafe(authentication=auth, decrypt=False)
    sec = next(s for s in SEED.readable(READER) if s.kind == "credential")
    listed = ss.list_secrets(path=sec.folder(), separator="/", title=sec.title)
    assert len(listed) == 1 and "Password" not in listed[0]
    assert listed[0]["Username"] == sec.username
    # Library bug: get_secret indexes ["Password"] unconditionally, so decrypt=False crashes.
    with pytest.raises(KeyError, match="Password"):
        ss.get_secret(sec.path())


# ------------------------------------------------------------------ not found and refusals


def test_unknown_title_and_folder_are_not_found(connect, emu):
    auth, _, _ = connect(READER)
    ss = secrets_safe.SecretsSafe(authentication=auth)
    sec = next(s for s in SEED.readable(READER) if s.kind == "credential" and "/" not in s.title)
    for path in (f"{sec.folder()}/no-such-title", "no-such-safe/no-such-folder/x"):
        # 200 [] from the server; the library raises its own "Secret was not found".
        with pytest.raises(exceptions.LookupError, match=re.escape(f"{path}, Secret was not found")):
            ss.get_secret(path)
    # No sign-out happened: the session still works.
    assert_value(ss.get_secret(sec.path()), sec.value, sec.path())
    assert emu.state()["sessions_open"] == 1


def test_secret_of_another_team_is_refused_and_the_library_signs_out(connect, emu):
    auth, _, _ = connect(READER)
    ss = secrets_safe.SecretsSafe(authentication=auth)
    other = SEED.unreadable(READER)[0]
    with pytest.raises(exceptions.LookupError, match="statuscode: 403") as e:
        ss.get_secret(other.path())
    assert "Error getting secret by path" in str(e.value)
    # The library signs out before raising on any unexpected status.
    assert emu.state()["sessions_open"] == 0
    mine = next(s for s in SEED.readable(READER) if s.kind == "text")
    with pytest.raises(exceptions.LookupError, match="statuscode: 401"):
        ss.get_secret(mine.path())


def test_client_side_path_validation_sends_nothing(connect, emu):
    auth, _, _ = connect(READER)
    ss = secrets_safe.SecretsSafe(authentication=auth)
    before = emu.calls("GET secrets-safe/secrets")
    with pytest.raises(exceptions.LookupError, match="Invalid secret path"):
        ss.get_secret("just-a-title")
    with pytest.raises(exceptions.OptionsError):
        ss.get_secret("/".join(["f"] * 9))  # folder depth 8 > 7
    with pytest.raises(exceptions.LookupError, match="Invalid separator"):
        secrets_safe.SecretsSafe(authentication=auth, separator="//")
    assert emu.calls("GET secrets-safe/secrets") == before


# ------------------------------------------------------------------ folders and safes


def test_list_folders(connect):
    auth, _, _ = connect(READER, api_version="3.1")
    fl = folders.Folder(auth)
    mine = SEED.readable_folders(READER)
    got = fl.list_folders()
    assert sorted(f["FolderPath"] for f in got) == sorted(FOLDER_PATH_SEP.join(f.segments) for f in mine)
    by_path = {f["FolderPath"]: f for f in got}
    for f in mine:
        item = by_path[FOLDER_PATH_SEP.join(f.segments)]
        assert item["Name"] == f.name
        assert GUID.match(item["Id"])
        if f.is_safe:
            assert item["ParentId"] is None
        else:
            assert by_path[FOLDER_PATH_SEP.join(f.segments[:-1])]["Id"] == item["ParentId"]
        assert fl.get_by_id(item["Id"])["Name"] == f.name

    roots = fl.list_folders(root_only=True)
    assert sorted(f["Name"] for f in roots) == sorted(f.name for f in mine if f.is_safe)

    # folder_path: the folder and everything below it (include_subfolders defaults to True).
    deep = max(mine, key=lambda f: len(f.segments))
    base = SEED.folder("/".join(deep.segments[:2])) if len(deep.segments) > 2 else deep
    under = fl.list_folders(folder_path=base.path())
    want = [f for f in mine if f.segments[: len(base.segments)] == base.segments]
    assert sorted(f["Name"] for f in under) == sorted(f.name for f in want)
    # include_subfolders=False: the folder and its direct children only.
    safe = SEED.folder(base.segments[0])
    direct = fl.list_folders(folder_path=safe.path(), include_subfolders=False)
    want = [f for f in mine if f.segments[:1] == safe.segments and len(f.segments) <= 2]
    assert sorted(f["Name"] for f in direct) == sorted(f.name for f in want)


def test_list_folders_by_partial_name(connect):
    # folderName is "the partial name of the folder" (the library's docstring, from the API guide).
    auth, _, _ = connect(READER)
    fl = folders.Folder(auth)
    mine = SEED.readable_folders(READER)
    target = max(mine, key=lambda f: len(f.name))
    part = target.name[1:-1].upper()
    got = fl.list_folders(folder_name=part)
    want = [f.name for f in mine if part.lower() in f.name.lower()]
    assert sorted(f["Name"] for f in got) == sorted(want) and target.name in want
    assert fl.list_folders(folder_name="zz-no-such-folder-zz") == []


def test_safes(connect):
    auth, _, _ = connect(READER)
    sf = safes.Safe(auth)
    got = sf.list()
    want = sorted(f.name for f in SEED.readable_folders(READER) if f.is_safe)
    assert sorted(x["Name"] for x in got) == want
    for item in got:
        assert GUID.match(item["Id"])
        assert sf.get_by_id(item["Id"])["Name"] == item["Name"]


def test_safe_of_another_team_is_refused(connect, emu):
    # The outsider looks up a safe id it may not read: 403, and the library signs out.
    auth_r, _, _ = connect(READER)
    safe_id = safes.Safe(auth_r).list()[0]["Id"]
    auth_o, _, _ = connect(OUTSIDER)
    with pytest.raises(exceptions.LookupError, match="statuscode: 403"):
        safes.Safe(auth_o).get_by_id(safe_id)
    with pytest.raises(exceptions.LookupError, match="statuscode: 404"):
        safes.Safe(auth_r).get_by_id("00000000-0000-4000-8000-000000000000")


def test_raw_session_call_shape(connect):
    # What the library hands its callers is requests' JSON; check the wire shape once per version.
    auth, _, session = connect(READER)
    sec = next(s for s in SEED.readable(READER) if s.kind == "credential" and "/" not in s.title)
    q = {"path": sec.folder(), "separator": "/", "title": sec.title}
    for version, wrapped in ((None, False), ("3.0", False), ("3.1", False), ("3.2", True)):
        params = dict(q, **({"version": version} if version else {}))
        r = session.get(f"{API_URL}/secrets-safe/secrets", params=params, timeout=30)
        assert r.status_code == 200
        body = r.json()
        assert isinstance(body, dict) == wrapped, version
        items = body["Data"] if wrapped else body
        assert len(items) == 1 and items[0]["Title"] == sec.title
    bad = session.get(f"{API_URL}/secrets-safe/secrets", params=dict(q, version="9.9"), timeout=30)
    assert bad.status_code == 400
