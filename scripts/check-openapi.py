#!/usr/bin/env python3
"""Checks docs/openapi.yaml: strict YAML (a key given twice in one mapping
is an error, as strict parsers make it) and a valid OpenAPI 3.0 document.

Needs PyYAML and openapi-spec-validator (`pip install openapi-spec-validator`,
which brings PyYAML); CI installs them.
"""

import sys
from pathlib import Path

import yaml
from openapi_spec_validator import validate

SPEC = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"


class StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses a mapping with a repeated key."""


def _mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def main() -> int:
    try:
        spec = yaml.load(SPEC.read_text(encoding="utf-8"), Loader=StrictLoader)
        validate(spec)
    except Exception as error:  # noqa: BLE001 (any failure is reported the same way)
        print(f"openapi: {SPEC.name} is not valid: {error}", file=sys.stderr)
        return 1
    print(f"openapi: {SPEC.name} is strict YAML and valid OpenAPI {spec['openapi']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
