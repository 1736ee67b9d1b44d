#!/usr/bin/env python3
"""The chart's schema for `config` must offer exactly the keys the webhook accepts.

    check_schema_drift.py REPO_ROOT

Reads the serde structs of the cluster configuration (crates/webhook-core/src/config.rs, plus the
inject-api structs it embeds) and walks them next to `properties.config` of
charts/ps-injector/values.schema.json. A field the webhook has and the schema lacks would make
`helm install` refuse a valid setting; a schema key the webhook lacks would let through a
setting the webhook refuses at start-up. Either is reported, with the path.
"""

import json
import os
import re
import sys

SOURCES = ["crates/webhook-core/src/config.rs", "crates/inject-api/src/agent_config.rs"]


def camel(snake):
    head, *rest = snake.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def parse_structs(text):
    """struct name -> list of (json key, rust type) for serde-deserialized named structs."""
    structs = {}
    for m in re.finditer(r"((?:#\[[^\]]*\]\s*|///[^\n]*\n\s*)*)pub struct (\w+)\s*\{(.*?)\n\}", text, re.S):
        attrs, name, body = m.group(1), m.group(2), m.group(3)
        if "Deserialize" not in attrs:
            continue
        camel_case = 'rename_all = "camelCase"' in attrs
        fields = []
        pending = ""
        for line in body.split("\n"):
            s = line.strip()
            if s.startswith("#[") or s.startswith("///") or s.startswith("//"):
                pending += s
                continue
            f = re.match(r"pub\s+(\w+)\s*:\s*(.+?),?$", s)
            if f:
                if re.search(r"serde\((?:[^)]*,\s*)?skip(?:_deserializing)?\s*[,)]", pending):
                    pending = ""
                    continue
                rename = re.search(r'rename\s*=\s*"([^"]+)"', pending)
                key = rename.group(1) if rename else (camel(f.group(1)) if camel_case else f.group(1))
                fields.append((key, f.group(2).strip()))
            pending = ""
        structs[name] = fields
    return structs


def inner(t):
    """Unwrap Option/Vec/BTreeMap to (kind, type): kind in {plain, list, map}."""
    t = t.strip()
    m = re.fullmatch(r"Option<(.+)>", t)
    if m:
        return inner(m.group(1))
    m = re.fullmatch(r"Vec<(.+)>", t)
    if m:
        return ("list", m.group(1).strip())
    m = re.fullmatch(r"BTreeMap<\s*String\s*,\s*(.+)>", t)
    if m:
        return ("map", m.group(1).strip())
    return ("plain", t)


def walk(structs, name, schema, path, problems):
    fields = structs[name]
    props = schema.get("properties")
    if props is None:
        problems.append(f"{path or 'config'}: the schema has no properties for struct {name}")
        return
    if schema.get("additionalProperties") is not False:
        problems.append(f"{path or 'config'}: the schema should refuse unknown keys (additionalProperties: false)")
    keys = {k for k, _ in fields}
    for k, t in fields:
        p = f"{path}.{k}" if path else k
        if k not in props:
            problems.append(f"config.{p}: the webhook accepts it (struct {name}), values.schema.json does not")
            continue
        kind, ty = inner(t)
        if ty in structs:
            node = props[k]
            if kind == "list":
                node = node.get("items", {})
            elif kind == "map":
                node = node.get("additionalProperties", {})
                if not isinstance(node, dict):
                    problems.append(f"config.{p}: schema map values should be objects")
                    continue
            walk(structs, ty, node, p if kind != "map" else p + ".<name>", problems)
    for k in props:
        if k not in keys:
            p = f"{path}.{k}" if path else k
            problems.append(f"config.{p}: values.schema.json offers it, the webhook's struct {name} has no such field")


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "."
    text = ""
    for s in SOURCES:
        with open(os.path.join(root, s)) as f:
            text += f.read() + "\n"
    structs = parse_structs(text)
    if "Config" not in structs:
        print("FAIL  cannot find `pub struct Config` in crates/webhook-core/src/config.rs")
        return 1
    with open(os.path.join(root, "charts/ps-injector/values.schema.json")) as f:
        schema = json.load(f)
    problems = []
    walk(structs, "Config", schema["properties"]["config"], "", problems)
    for p in problems:
        print(f"FAIL  schema drift: {p}")
    n = sum(1 for _ in structs)
    print(f"schema drift: config.rs ({n} structs) vs values.schema.json: "
          f"{'in step' if not problems else str(len(problems)) + ' difference(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
