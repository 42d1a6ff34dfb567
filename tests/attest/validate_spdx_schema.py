#!/usr/bin/env python3
"""Validate an SPDX 2.3 JSON document against the official SPDX 2.3 JSON
Schema (schemas/spdx-2.3), which catches what pyspdxtools lets through
(unknown fields). Usage: validate_spdx_schema.py FILE. Exit 0 valid, 1 invalid."""
import json, pathlib, sys
from jsonschema import Draft7Validator

schema = json.loads((pathlib.Path(__file__).parent / "schemas" / "spdx-2.3" / "spdx-schema.json").read_text())
doc = json.load(open(sys.argv[1], encoding="utf-8"))
errs = sorted(Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.absolute_path))
for e in errs:
    print(f"{sys.argv[1]}: /{'/'.join(map(str, e.absolute_path))}: {e.message}", file=sys.stderr)
sys.exit(1 if errs else 0)
