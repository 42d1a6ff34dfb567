#!/usr/bin/env python3
"""Validate a CycloneDX JSON SBOM.

Usage: validate_cdx.py FILE [1.5|1.6]
  1. JSON-schema validation with cyclonedx-python-lib's JsonStrictValidator
     (needs `pip install 'cyclonedx-python-lib[json-validation]'`).
  2. Semantic checks the schema cannot express: specVersion matches, bom-refs
     unique, every dependency ref / dependsOn resolves, purls parse, license
     expressions are valid SPDX expressions (license_expression, pulled in by
     spdx-tools), via Bom.from_json(...).validate() plus direct checks.
Exit status: 0 valid, 1 invalid, 2 usage error.
"""
import json
import re
import sys
import warnings

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

VERSIONS = {"1.5": SchemaVersion.V1_5, "1.6": SchemaVersion.V1_6}


def semantic_errors(doc, want_version):
    errs = []
    if doc.get("specVersion") != want_version:
        errs.append(f"specVersion is {doc.get('specVersion')!r}, expected {want_version!r}")
    comps = []
    def walk(cs):
        for c in cs or []:
            comps.append(c)
            walk(c.get("components"))
    if "component" in doc.get("metadata", {}):
        comps.append(doc["metadata"]["component"])
    walk(doc.get("components"))
    refs = [c["bom-ref"] for c in comps if "bom-ref" in c]
    dup = sorted({r for r in refs if refs.count(r) > 1})
    if dup:
        errs.append(f"duplicate bom-ref: {dup}")
    known = set(refs)
    for d in doc.get("dependencies", []):
        for r in [d["ref"], *d.get("dependsOn", [])]:
            if r not in known:
                errs.append(f"dependency reference {r!r} does not match any bom-ref")
    from packageurl import PackageURL
    from license_expression import ExpressionError, get_spdx_licensing
    lic = get_spdx_licensing()
    for c in comps:
        if "purl" in c:
            try:
                PackageURL.from_string(c["purl"])
            except ValueError as e:
                errs.append(f"component {c.get('name')!r}: bad purl {c['purl']!r}: {e}")
        for choice in c.get("licenses", []):
            if "expression" in choice:
                expr = choice["expression"]
                try:
                    parsed = lic.parse(expr)
                except ExpressionError as e:
                    errs.append(f"component {c.get('name')!r}: invalid license expression {expr!r}: {e}")
                    continue
                unknown = [k for k in lic.unknown_license_keys(parsed) if not k.startswith("LicenseRef-")]
                if unknown:
                    errs.append(f"component {c.get('name')!r}: unknown SPDX ids {unknown} in {expr!r}")
                if re.search(r"\b(and|or|with)\b", expr):
                    errs.append(f"component {c.get('name')!r}: lowercase operator in {expr!r} (SPDX D.2: operators are case-sensitive)")
    # cyclonedx-python-lib's own model checks (dangling dependency refs etc.)
    try:
        from cyclonedx.model.bom import Bom
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Bom.from_json(doc).validate()
    except Exception as e:  # noqa: BLE001 - report any model-level failure
        errs.append(f"cyclonedx model: {type(e).__name__}: {e}")
    return errs


def main() -> int:
    if len(sys.argv) not in (2, 3) or (len(sys.argv) == 3 and sys.argv[2] not in VERSIONS):
        print(__doc__, file=sys.stderr)
        return 2
    path = sys.argv[1]
    want = sys.argv[2] if len(sys.argv) == 3 else "1.6"
    with open(path, encoding="utf-8") as f:
        data = f.read()
    failed = False
    errors = JsonStrictValidator(VERSIONS[want]).validate_str(data, all_errors=True)
    for e in errors or []:
        d = e.data  # the underlying jsonschema.ValidationError
        print(f"{path}: schema: /{'/'.join(map(str, d.absolute_path))}: {d.message}", file=sys.stderr)
        failed = True
    if not failed:
        for msg in semantic_errors(json.loads(data), want):
            print(f"{path}: semantic: {msg}", file=sys.stderr)
            failed = True
    if failed:
        return 1
    print(f"{path}: valid CycloneDX {want}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
