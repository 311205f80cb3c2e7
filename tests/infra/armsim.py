"""What ARM would compute for the expressions of a parsed Bicep file, for one sample deployment.

No Bicep compiler or ARM runs here, so the app settings ``main.bicep`` writes are evaluated from the
parse tree (``bicepcheck``) with a small interpreter: literals, interpolation, params (defaults or given
values), variables, ternaries, the ARM functions the templates use, resource ids and names, and the few
runtime properties the settings read (storage endpoints, identity ids, the Application Insights
connection string), which get values of the documented shape. Anything else raises ``EvalError``, so a
template that starts reading something this does not model fails the test instead of being guessed.
"""
from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import bicepcheck as bc

SUBSCRIPTION = "00000000-0000-0000-0000-00000000c0de"
TENANT = "00000000-0000-0000-0000-0000000000e1"
STORAGE_SUFFIX = "core.windows.net"


class EvalError(ValueError):
    pass


def _guid(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "|".join(parts)))


class Ref:
    """A resource symbol, or a path into its runtime ``properties``."""

    def __init__(self, symbol: str, path: tuple[str, ...] = ()):
        self.symbol, self.path = symbol, path


class Arm:
    def __init__(self, f: bc.BicepFile, params: dict | None = None, *, group: str = "rg-fl",
                 location: str = "westeurope"):
        self.f, self.params, self.group, self.location = f, dict(params or {}), group, location
        self.group_id = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}"
        self.locals: dict = {}  # loop variables while a loop's body is evaluated

    def instances(self, symbol: str) -> list[dict]:
        """The evaluated body of a resource, once per loop item (condition ignored: what it creates when on)."""
        r = self.f.resources[symbol]
        items = self.value(r.loop_node) if r.loop_node is not None else [None]
        out = []
        for item in items:
            self.locals = {r.loop_var: item} if r.loop_var else {}
            try:
                out.append({k: self.value(v) for k, v in r.body.items() if k not in ("parent", "dependsOn")})
            finally:
                self.locals = {}
        return out

    # -- expressions ---------------------------------------------------------------------------------------
    def value(self, node):
        kind = node.type
        if kind == "string":
            return "".join(self._string_part(c) for c in node.named_children)
        if kind == "number":
            return int(bc.text(node))
        if kind == "boolean":
            return bc.text(node) == "true"
        if kind == "null":
            return None
        if kind == "parenthesized_expression":
            return self.value(node.named_children[0])
        if kind == "array":
            return [self.value(c) for c in _items(node)]
        if kind == "object":
            return {k: self.value(v) for k, v in bc._props(node).items()}
        if kind == "identifier":
            return self.symbol(bc.text(node))
        if kind == "unary_expression" and bc.text(node.children[0]) == "!":
            return not self.value(node.named_children[0])
        if kind == "binary_expression":
            return self._binary(node)
        if kind == "ternary_expression":
            condition, yes, no = node.named_children
            return self.value(yes) if self.value(condition) else self.value(no)
        if kind == "member_expression":
            return self.member(self.value(node.named_children[0]), bc.text(node.named_children[-1]), node)
        if kind == "subscript_expression":
            return self.member(self.value(node.named_children[0]), self.value(node.named_children[1]), node)
        if kind == "call_expression":
            name = bc.text(node.named_children[0])
            args = [self.value(a) for a in node.named_children[1].named_children]
            return self.call(name, args)
        raise EvalError(f"cannot evaluate {kind}: {bc.text(node)[:60]}")

    def _string_part(self, child):
        if child.type == "string_content":
            return bc.text(child)
        if child.type == "interpolation":
            return str(self.value(child.named_children[0]))
        if child.type == "escape_sequence":
            return {"\\'": "'", "\\\\": "\\", "\\n": "\n", "\\$": "$"}[bc.text(child)]
        raise EvalError(f"string part {child.type}")

    def _binary(self, node):
        left, op, right = node.children
        a, b = self.value(left), self.value(right)
        ops = {"==": lambda: a == b, "!=": lambda: a != b, "&&": lambda: a and b, "||": lambda: a or b}
        if bc.text(op) not in ops:
            raise EvalError(f"operator {bc.text(op)}")
        return ops[bc.text(op)]()

    def symbol(self, name: str):
        if name in self.locals:
            return self.locals[name]
        if name in self.params:
            return self.params[name]
        if name in self.f.param_defaults:
            return self.value(self.f.param_defaults[name])
        if name in self.f.params:
            raise EvalError(f"param {name} has no default; give it a value")
        if name in self.f.variables:
            return self.value(self.f.variables[name])
        if name in self.f.resources:
            return Ref(name)
        raise EvalError(f"unknown symbol {name}")

    def member(self, obj, key, node):
        if isinstance(obj, Ref):
            if not obj.path:
                if key == "id":
                    return self.resource_id(obj.symbol)
                if key == "name":
                    return self.name(obj.symbol)
                if key == "properties":
                    return Ref(obj.symbol, ("properties",))
                raise EvalError(f"{obj.symbol}.{key}")
            return self.runtime_property(obj.symbol, obj.path + (key,))
        if isinstance(obj, dict) and key in obj:
            return obj[key]
        if isinstance(obj, list) and isinstance(key, int) and 0 <= key < len(obj):
            return obj[key]
        raise EvalError(f"no member {key!r} in {bc.text(node)[:60]}")

    # -- resources -----------------------------------------------------------------------------------------
    def name(self, symbol: str) -> str:
        return self.value(self.f.resources[symbol].body["name"])

    def resource_id(self, symbol: str) -> str:
        r = self.f.resources[symbol]
        if r.parent:
            return f"{self.resource_id(r.parent)}/{r.type.rsplit('/', 1)[1]}/{self.name(symbol)}"
        return f"{self.group_id}/providers/{r.type}/{self.name(symbol)}"

    def runtime_property(self, symbol: str, path: tuple[str, ...]):
        """Values ARM returns after deployment, in their documented shape."""
        r, name, dotted = self.f.resources[symbol], self.name(symbol), ".".join(path)
        if r.type == bc.STORAGE and path[:2] == ("properties", "primaryEndpoints") and len(path) == 3:
            return f"https://{name}.{path[2]}.{STORAGE_SUFFIX}/"
        if r.type == bc.IDENTITY and path in (("properties", "principalId"), ("properties", "clientId")):
            return _guid(self.resource_id(symbol), path[1])
        if r.type == "Microsoft.Insights/components" and path == ("properties", "ConnectionString"):
            return (f"InstrumentationKey={_guid(self.resource_id(symbol))};"
                    f"IngestionEndpoint=https://{self.location}-0.in.applicationinsights.azure.com/")
        if r.type == bc.STORAGE and path == ("properties", "primaryEndpoints"):
            return Ref(symbol, path)  # an endpoint is read next
        raise EvalError(f"no simulated runtime value for {symbol}.{dotted}")

    # -- ARM functions -------------------------------------------------------------------------------------
    def call(self, name: str, args: list):
        if name == "subscription":
            return {"subscriptionId": SUBSCRIPTION, "tenantId": TENANT, "id": f"/subscriptions/{SUBSCRIPTION}"}
        if name == "resourceGroup":
            return {"name": self.group, "id": self.group_id, "location": self.location}
        if name == "environment":
            return {"suffixes": {"storage": STORAGE_SUFFIX},
                    "authentication": {"loginEndpoint": "https://login.microsoftonline.com/"}}
        if name == "uniqueString":
            return "".join("abcdefghijklmnopqrstuvwxyz234567"[b % 32] for b in
                           hashlib.sha256("|".join(args).encode()).digest()[:13])
        if name == "take":
            return args[0][:args[1]]
        if name == "guid":
            return _guid(*args)
        if name == "items":
            return [{"key": k, "value": v} for k, v in sorted(args[0].items())]
        if name == "union" and all(isinstance(a, dict) for a in args):
            return {k: v for a in args for k, v in a.items()}
        if name == "empty":
            return not args[0]
        if name == "resourceId":
            return f"{self.group_id}/providers/{args[0]}/{'/'.join(args[1:])}"
        if name == "subscriptionResourceId":
            return f"/subscriptions/{SUBSCRIPTION}/providers/{args[0]}/{'/'.join(args[1:])}"
        if name == "loadJsonContent":
            return json.loads((Path(self.f.path).parent / args[0]).read_text())
        raise EvalError(f"function {name}() is not simulated")


def _items(array) -> list:
    """An array's elements (comments, which Bicep allows between them, are nodes too)."""
    return [c for c in array.named_children if c.type != "comment"]


def app_settings(f: bc.BicepFile, app_symbol: str, params: dict | None = None) -> dict[str, str]:
    """``siteConfig.appSettings`` of the Function App resource, as name → value for one deployment."""
    arm = Arm(f, params)
    site_config = bc._props(bc._props(f.resources[app_symbol].body["properties"])["siteConfig"])
    out = {}
    for entry in _items(site_config["appSettings"]):
        pair = arm.value(entry)
        out[pair["name"]] = str(pair["value"])
    return out
