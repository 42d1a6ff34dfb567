#!/usr/bin/env python3
"""Validate an in-toto Statement v1 / SLSA Provenance v1 JSON file.
Usage: validate_provenance.py FILE [SCHEMA_DIR]   exit 0 valid, 1 invalid.
Needs only `jsonschema` (pulled in by cyclonedx-python-lib[json-validation])."""
import json, pathlib, sys
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

d = pathlib.Path(sys.argv[2]) if len(sys.argv) > 2 else pathlib.Path(__file__).parent / "schemas" / "kiln-derived"
schemas = {p.name: json.loads(p.read_text()) for p in d.glob("*.schema.json")}
reg = Registry().with_resources(
    (s["$id"], Resource.from_contents(s)) for s in schemas.values())
doc = json.load(open(sys.argv[1], encoding="utf-8"))
top = schemas["slsa-provenance-v1.schema.json"]
v = Draft202012Validator(top, registry=reg, format_checker=Draft202012Validator.FORMAT_CHECKER)
errs = sorted(v.iter_errors(doc), key=lambda e: list(e.absolute_path))
for e in errs:
    print(f"{sys.argv[1]}: /{'/'.join(map(str, e.absolute_path))}: {e.message}", file=sys.stderr)
if not errs:
    print(f"{sys.argv[1]}: valid in-toto Statement v1 + SLSA Provenance v1")
sys.exit(1 if errs else 0)
