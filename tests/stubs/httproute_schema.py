"""What the Kubernetes API server does with an HTTPRoute written to it, from the extract of the Gateway API's v1
types (tests/contracts/gateway_httproute_v1_extract.json, see its `_source`): the CRD's structural schema
prunes unknown fields, applies defaults, and refuses a value that breaks it with the API server's wording.

Used by the API STUB (tests/stubs/kube_stub.py) on every HTTPRoute write, and by the gateway tests to check the
guardian's requests against the same official constraints. Only the keywords the extract uses are known;
an x-kubernetes-validations rule is known by its text (RULES): an extract with another one fails loudly.
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

EXTRACT = json.loads((Path(__file__).resolve().parents[1] / "contracts" / "gateway_httproute_v1_extract.json")
                     .read_text())
SCHEMA: dict[str, Any] = EXTRACT["schema"]
# the CEL rules of the extract, as Python (the API server evaluates them with CEL)
RULES = {
    "(size(self.group) == 0 && self.kind == 'Service') ? has(self.port) : true":
        lambda obj: not (len(obj.get("group", "")) == 0 and obj.get("kind") == "Service") or "port" in obj,
}
_TYPES = {"object": dict, "array": list, "string": str, "integer": int}


def _type_ok(value: Any, kind: str) -> bool:
    return isinstance(value, _TYPES[kind]) and not (kind == "integer" and isinstance(value, bool))


def _go_type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}.get(
        type(value), "null")


def normalize(value: Any, schema: dict[str, Any] = SCHEMA, where: str = "") -> tuple[Any, list[str]]:
    """`value` as the API server stores it (unknown fields pruned, defaults applied) and the field errors
    it would answer with (empty: valid)."""
    errors: list[str] = []
    kind = schema.get("type")
    if kind and not _type_ok(value, kind):
        return value, [f"{where}: Invalid value: \"{_go_type(value)}\": {where} in body must be of type {kind}: "
                       f"\"{_go_type(value)}\""]
    if kind == "object" and not schema.get("x-kubernetes-preserve-unknown-fields"):
        props = schema.get("properties") or {}
        value = {k: v for k, v in value.items() if k in props}  # pruned
        for key, sub in props.items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
        for key in schema.get("required") or []:
            if key not in value:
                errors.append(f"{where}.{key}".lstrip(".") + ": Required value")
        for key in list(value):
            value[key], more = normalize(value[key], props[key], f"{where}.{key}".lstrip("."))
            errors += more
        for rule in schema.get("x-kubernetes-validations") or []:
            if rule["rule"] not in RULES:
                raise AssertionError(f"the extract has a rule the stub cannot evaluate: {rule['rule']}")
            if not errors and not RULES[rule["rule"]](value):
                errors.append(f"{where}: Invalid value: \"object\": {rule['message']}")
    elif kind == "array":
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{where}: Too many: {len(value)}: must have at most {schema['maxItems']} items")
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{where}: Invalid value: {len(value)}: {where} in body should have at least "
                          f"{schema['minItems']} items")
        items = []
        for i, item in enumerate(value):
            item, more = normalize(item, schema["items"], f"{where}[{i}]")
            items.append(item)
            errors += more
        value = items
    elif kind == "string":
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{where}: Invalid value: \"{value}\": {where} in body should be at least "
                          f"{schema['minLength']} chars long")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{where}: Too long: may not be more than {schema['maxLength']} bytes")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{where}: Invalid value: \"{value}\": {where} in body should match '{schema['pattern']}'")
    elif kind == "integer":
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{where}: Invalid value: {value}: {where} in body should be greater than or equal to "
                          f"{schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{where}: Invalid value: {value}: {where} in body should be less than or equal to "
                          f"{schema['maximum']}")
    return value, errors


__all__ = ["EXTRACT", "RULES", "SCHEMA", "normalize"]
