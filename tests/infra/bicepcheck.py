"""A static model of who gets which role on what, read from Bicep with tree-sitter-bicep.

No Bicep compiler runs on our machines, so this is the check we can do offline: parse each file,
resolve every role assignment to (principal, scope resource, role name from infra/roles.json) and
test the security table of DESIGN.md against that model. ``violations`` returns readable findings;
an empty list means every invariant held.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import tree_sitter as ts
import tree_sitter_bicep as tsb

PARSER = ts.Parser(ts.Language(tsb.language()))
ROLE_ASSIGNMENT = "Microsoft.Authorization/roleAssignments"
ROLE_DEFINITION = "Microsoft.Authorization/roleDefinitions"
STORAGE = "Microsoft.Storage/storageAccounts"
CONTAINER = "Microsoft.Storage/storageAccounts/blobServices/containers"
IDENTITY = "Microsoft.ManagedIdentity/userAssignedIdentities"
DEPLOYMENT_SCOPE = "<deployment scope>"  # an assignment without `scope:` applies to the whole resource group
READ_ROLES = {"StorageBlobDataReader", "Reader"}
SHARED_READ = {"models", "code"}  # the orchestrator's containers every silo job reads: global models, job code


def text(node) -> str:
    return node.text.decode()


def errors(source: str) -> list[str]:
    """Syntax errors (ERROR or MISSING nodes) with their line numbers."""
    found = []

    def walk(n):
        if n.is_error or n.is_missing:
            found.append(f"line {n.start_point[0] + 1}: {text(n)[:60]!r}")
        for c in n.children:
            walk(c)
    walk(PARSER.parse(source.encode()).root_node)
    return found


def _props(obj) -> dict:
    """``{key: value node}`` of a Bicep object literal."""
    out = {}
    for prop in obj.named_children:
        if prop.type == "object_property":
            key, value = prop.named_children[0], prop.named_children[-1]
            out[text(key).strip("'")] = value
    return out


def _literal(node) -> str | None:
    """The value of a plain string literal, None for anything computed."""
    if node is not None and node.type == "string" and all(c.type == "string_content" for c in node.named_children):
        return "".join(text(c) for c in node.named_children)
    return None


@dataclass
class Resource:
    symbol: str
    type: str
    existing: bool
    condition: str | None
    loop_var: str | None
    loop_over: str | None
    body: dict
    loop_node: object = None  # the loop's iterable expression, for evaluation (armsim)

    @property
    def name(self) -> str | None:
        return _literal(self.body.get("name"))

    @property
    def parent(self) -> str | None:
        p = self.body.get("parent")
        return text(p) if p is not None and p.type == "identifier" else None


@dataclass
class Module:
    symbol: str
    path: str
    condition: str | None
    body: dict


@dataclass
class Grant:
    assignment: str       # the roleAssignments symbol
    principal: str        # identity symbol, or "param:<name>" for a principal passed in
    scope: str            # resource symbol, or DEPLOYMENT_SCOPE
    role: str             # key in roles.json builtIn, or "custom:<key>"
    condition: str | None


@dataclass
class BicepFile:
    path: str
    resources: dict[str, Resource] = field(default_factory=dict)
    modules: dict[str, Module] = field(default_factory=dict)
    params: set[str] = field(default_factory=set)
    param_defaults: dict = field(default_factory=dict)  # name → default value node (params without one: absent)
    variables: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    grants: list[Grant] = field(default_factory=list)
    source: str = ""

    def container_name(self, symbol: str) -> str | None:
        r = self.resources.get(symbol)
        return r.name if r is not None and r.type == CONTAINER else None

    def account_of(self, symbol: str) -> str | None:
        """The storage account symbol a resource belongs to (itself for an account), following ``parent:``."""
        while symbol in self.resources:
            r = self.resources[symbol]
            if r.type == STORAGE:
                return symbol
            symbol = r.parent
        return None


def _unwrap(body):
    """(condition text, loop variable, loop iterable, object node) of a resource or module body."""
    condition = loop_var = loop_over = None
    if body.type == "for_statement":
        variable, iterable = body.named_children[0], body.named_children[1]
        loop_var = text(variable.named_children[0] if variable.type == "for_loop_parameters" else variable)
        loop_over = text(iterable) if iterable.type == "identifier" else None
        body = body.named_children[-1]
    if body.type == "if_statement":
        condition, body = text(body.named_children[0]), body.named_children[-1]
    return condition, loop_var, loop_over, body


def _module(decl) -> Module:
    condition, _, _, body = _unwrap(decl.named_children[-1])
    return Module(text(decl.named_children[0]), _literal(decl.named_children[1]), condition, _props(body))


def _resource(decl) -> Resource:
    symbol, type_ = text(decl.named_children[0]), _literal(decl.named_children[1]).split("@")[0]
    existing = any(c.type == "existing" for c in decl.children)
    body = decl.named_children[-1]
    iterable = body.named_children[1] if body.type == "for_statement" else None
    condition, loop_var, loop_over, body = _unwrap(body)
    return Resource(symbol, type_, existing, condition, loop_var, loop_over, _props(body), iterable)


def _role_names(f: BicepFile, node, res: Resource) -> list[str]:
    """roleDefinitionId → role keys: ``roles.builtIn.X``, a loop over a list of those, or a custom role resource."""
    src = text(node)
    builtin = re.findall(r"roles\.builtIn\.(\w+)", src)
    if builtin:
        return builtin
    if res.loop_var and re.search(rf"\b{res.loop_var}\b", src) and res.loop_over in f.variables:
        return re.findall(r"roles\.builtIn\.(\w+)", text(f.variables[res.loop_over]))
    ref = re.match(r"^(\w+)\.id$", src)
    if ref and ref[1] in f.resources and f.resources[ref[1]].type == ROLE_DEFINITION:
        defined = " ".join(text(v) for v in f.resources[ref[1]].body.values())
        return [f"custom:{k}" for k in sorted(set(re.findall(r"roles\.custom\.(\w+)", defined)))]
    return [f"<unresolved {src}>"]


def _principal(f: BicepFile, node, res: Resource) -> str:
    src = text(node)
    m = re.match(r"^(\w+)\.properties\.principalId$", src)
    if m and m[1] in f.resources:
        return m[1]
    if src in f.params:
        return f"param:{src}"
    if res.loop_var == src and res.loop_over in f.params:
        return f"param:{res.loop_over}"
    return f"<unresolved {src}>"


def parse(path: str | Path, source: str | None = None) -> BicepFile:
    source = Path(path).read_text() if source is None else source
    f = BicepFile(str(path), source=source)
    root = PARSER.parse(source.encode()).root_node
    for decl in root.named_children:
        if decl.type == "parameter_declaration":
            f.params.add(text(decl.named_children[0]))
            if any(c.type == "=" for c in decl.children):
                f.param_defaults[text(decl.named_children[0])] = decl.named_children[-1]
        elif decl.type == "module_declaration":
            m = _module(decl)
            f.modules[m.symbol] = m
        elif decl.type == "variable_declaration":
            f.variables[text(decl.named_children[0])] = decl.named_children[-1]
        elif decl.type == "output_declaration":
            f.outputs[text(decl.named_children[0])] = decl.named_children[-1]
        elif decl.type == "resource_declaration":
            r = _resource(decl)
            f.resources[r.symbol] = r
    for r in f.resources.values():
        if r.type != ROLE_ASSIGNMENT:
            continue
        props = _props(r.body["properties"])
        scope = r.body.get("scope")
        for role in _role_names(f, props["roleDefinitionId"], r):
            f.grants.append(Grant(r.symbol, _principal(f, props["principalId"], r),
                                  text(scope) if scope is not None else DEPLOYMENT_SCOPE, role, r.condition))
    return f


def violations(f: BicepFile) -> list[str]:
    """Every breach of the security table found in one file."""
    out = [f"{f.path}: syntax error {e}" for e in errors(f.source)]
    for r in f.resources.values():
        if r.type == STORAGE and not r.existing:
            props = _props(r.body["properties"]) if "properties" in r.body else {}
            value = props.get("allowSharedKeyAccess")
            if value is None or text(value) != "false":
                out.append(f"{f.path}: storage account {r.symbol} does not set allowSharedKeyAccess: false")
    for m in re.finditer(r"\blist\w*\s*\(", f.source):
        out.append(f"{f.path}: {m[0]}...) reads keys or SAS tokens; identities only")
    for name, value in f.outputs.items():
        if re.search(r"keys?$|secret|sas(token|url)?$|connectionstring|password", name, re.I) or \
                re.search(r"connectionstring|accountkey|sastoken", text(value), re.I):
            out.append(f"{f.path}: output {name} looks like a secret")
    data_accounts = {f.account_of(s) for s, r in f.resources.items() if r.type == CONTAINER and r.name == "data"}
    for g in f.grants:
        where = f"{f.path}: {g.assignment} gives {g.principal} {g.role} on {g.scope}"
        if g.role.startswith("<") or g.principal.startswith("<"):
            out.append(f"{where}: cannot resolve it statically")
            continue
        target = f.resources.get(g.scope)
        own_identity = g.principal in f.resources and f.resources[g.principal].type == IDENTITY
        account = f.account_of(g.scope) if target is not None else None
        if own_identity and target is not None and account is not None and target.existing:
            if not (f.container_name(g.scope) in SHARED_READ and g.role in READ_ROLES):
                out.append(f"{where}: an identity may only get roles on storage declared beside it "
                           f"(another party's storage, except reading global models and job code, is off limits)")
        if data_accounts and not own_identity:
            if g.scope == DEPLOYMENT_SCOPE or account in data_accounts and f.container_name(g.scope) != "outbox":
                out.append(f"{where}: only the silo's own identity may hold roles reaching its data")
            elif f.container_name(g.scope) == "outbox" and g.role not in READ_ROLES:
                out.append(f"{where}: the orchestrator may only read a silo outbox")
        if data_accounts and own_identity and f.container_name(g.scope) == "data" and g.role not in READ_ROLES:
            out.append(f"{where}: silo jobs only read their data")
    return out


def _normalized(condition: str) -> str:
    condition = re.sub(r"\s+", "", condition)
    while condition.startswith("(") and condition.endswith(")"):
        condition = condition[1:-1]
    return condition


def _guarded(node, condition: str) -> bool:
    """True if ``node`` sits in the true branch of a ternary ``condition ? ... : ...`` (same condition)."""
    child, parent = node, node.parent
    while parent is not None:
        if parent.type == "ternary_expression" and parent.named_children[1].id == child.id and \
                _normalized(text(parent.named_children[0])) == _normalized(condition):
            return True
        child, parent = parent, parent.parent
    return False


def unguarded_conditional_reads(f: BicepFile) -> list[str]:
    """Reads of a conditional module's ``outputs`` (or a conditional resource's ``properties``) that are not
    behind the same condition in a ternary. ARM evaluates such a read even where the reading resource or
    module is itself conditional (or skipped), and fails the deployment with DeploymentNotFound /
    ResourceNotFound when the condition is false; ``cond ? m.outputs.x : ''`` is the form it skips."""
    conditional = {m.symbol: ("outputs", m.condition) for m in f.modules.values() if m.condition}
    conditional |= {r.symbol: ("properties", r.condition) for r in f.resources.values() if r.condition}
    found = []

    def walk(n, owner):
        if n.type in ("resource_declaration", "module_declaration", "output_declaration", "variable_declaration"):
            owner = text(n.named_children[0])
        if n.type == "member_expression" and n.named_children[0].type == "identifier":
            symbol, member = text(n.named_children[0]), text(n.named_children[-1])
            if symbol in conditional and member == conditional[symbol][0] and symbol != owner \
                    and not _guarded(n, conditional[symbol][1]):
                found.append(f"{f.path}: {owner} reads {text(n.parent)[:60]} outside "
                             f"`{_normalized(conditional[symbol][1])} ? ... : ...`")
        for c in n.children:
            walk(c, owner)
    walk(PARSER.parse(f.source.encode()).root_node, None)
    return found
