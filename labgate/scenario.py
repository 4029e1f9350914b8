"""Scenario files: what stack to stand up and which suites to run.

A scenario is plain YAML data validated on load. Every problem is reported as one line naming the
file and the field path, for example::

    scenarios/x.yaml: components.registry.version: expected a string

and the CLI and the pytest plugin exit with code 2 before anything is started.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from labgate.errors import ScenarioError

SUITES = ("oci", "oidc", "access", "admission", "rotation", "faults")
# the optional components each suite uses (the registry is always there)
SUITE_NEEDS = {
    "oci": (),
    "oidc": ("identity",),
    "access": ("identity",),
    "admission": ("kubernetes", "admission", "signer"),
    "rotation": ("kubernetes", "admission", "signer"),
    "faults": ("kubernetes", "admission", "identity"),
}
PROVIDERS = ("local", "kind", "k3d", "existing")
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class RegistryComponent(_Strict):
    """The OCI registry under test."""

    kind: Literal["auto", "zot", "distribution"] = "auto"
    version: str | None = Field(default=None, description="pinned version; the toolchain's pin when omitted")

    @field_validator("version")
    @classmethod
    def _non_empty(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must not be empty")
        return v

    @model_validator(mode="after")
    def _version_names_a_kind(self) -> "RegistryComponent":
        if self.version is not None and self.kind == "auto":
            raise ValueError("version: a version needs an explicit kind (zot or distribution)")
        return self


class ToolComponent(_Strict):
    """A helper program the suites drive (the official conformance program)."""

    version: str | None = None


class KubernetesComponent(_Strict):
    """etcd + kube-apiserver (no nodes: admission happens at the API)."""

    version: str | None = None


class AdmissionComponent(_Strict):
    kind: Literal["kyverno"] = "kyverno"
    version: str | None = None
    pull_robot: str | None = Field(default=None, description="robot whose credentials Kyverno uses to read the registry")
    cache_ttl: str = Field(default="30s", pattern=r"^\d+(s|m|h)$", description="imageVerifyCacheTTLDuration")


class IdentityComponent(_Strict):
    """The OpenID Connect provider humans log in through."""

    kind: Literal["pocket-id"] = "pocket-id"
    version: str | None = None


class Components(_Strict):
    registry: RegistryComponent = RegistryComponent()
    conformance: ToolComponent = ToolComponent()
    kubernetes: KubernetesComponent | None = None
    admission: AdmissionComponent | None = None
    signer: ToolComponent | None = None
    identity: IdentityComponent | None = None


class Robot(_Strict):
    """A CI robot: an htpasswd account with a password generated per run."""

    name: str
    groups: list[str] = []


class Human(_Strict):
    """A person who logs in through the identity provider."""

    name: str
    email: str | None = None
    groups: list[str] = []


class Identities(_Strict):
    groups: list[str] = []
    robots: list[Robot] = []
    humans: list[Human] = []

    @model_validator(mode="after")
    def _consistent(self) -> "Identities":
        seen: set[str] = set()
        for kind, people in (("robots", self.robots), ("humans", self.humans)):
            for i, who in enumerate(people):
                if not NAME_RE.match(who.name):
                    raise ValueError(f"{kind}[{i}].name: {who.name!r} is not a valid account name (lower-case letters, digits, . _ -)")
                if who.name in seen:
                    raise ValueError(f"{kind}[{i}].name: {who.name!r} is declared twice")
                seen.add(who.name)
                for g in who.groups:
                    if g not in self.groups:
                        raise ValueError(f"{kind}[{i}].groups: group {g!r} is not declared in identities.groups")
        return self


Action = Literal["read", "create", "update", "delete"]


class AccessPolicy(_Strict):
    """Who may do what on which repositories (zot accessControl is rendered from these)."""

    repositories: list[str]
    users: list[str] = []
    groups: list[str] = []
    actions: list[Action]


AccessAction = Literal["catalog", "pull", "tags", "push", "delete", "apikey", "oidc-login"]


class AccessOverride(_Strict):
    """A cell whose expectation is not what the policies imply (say why)."""

    identity: str
    action: AccessAction
    repository: str | None = None
    expect: Literal["allow", "deny"]
    why: str


class AccessTable(_Strict):
    """The truth table the access suite expands: identities × actions × repositories."""

    repositories: list[str]
    identities: list[str]
    actions: list[AccessAction] = ["catalog", "pull", "tags", "push", "delete", "apikey", "oidc-login"]
    overrides: list[AccessOverride] = []
    invalid_credentials: bool = Field(default=True, description="add rows for a wrong password and an unknown user")


class Access(_Strict):
    policies: list[AccessPolicy] = []
    anonymous_read: list[str] = Field(default=[], description="repository globs anyone may read")
    table: AccessTable | None = None


class SigningPolicy(_Strict):
    """The policy every admission test starts from (tests vary one field at a time). ``kinds``: the
    Kyverno policy kinds the admission and rotation cases run under, each case once per kind
    (ClusterPolicy verifyImages is deprecated since Kyverno 1.17; ImageValidatingPolicy replaces it)."""

    kinds: list[Literal["ClusterPolicy", "ImageValidatingPolicy"]] = ["ClusterPolicy", "ImageValidatingPolicy"]
    type: Literal["Cosign", "SigstoreBundle"] = "Cosign"
    count: int | None = Field(default=1, ge=1)
    failure_action: Literal["Enforce", "Audit"] = "Enforce"
    failure_policy: Literal["Fail", "Ignore"] = "Fail"
    mutate_digest: bool = True
    verify_digest: bool = True
    required: bool = True
    use_cache: bool = False
    timeout_seconds: int = Field(default=15, ge=1, le=30)

    @field_validator("kinds")
    @classmethod
    def _kinds(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one policy kind (ClusterPolicy, ImageValidatingPolicy)")
        if len(set(v)) != len(v):
            raise ValueError(f"each policy kind once: {v}")
        return v


class Signing(_Strict):
    """Keys are generated per run (ECDSA P-256, cosign's formats); ``ci_key`` is the one CI signs with."""

    keys: list[str] = ["K1", "K2", "other"]
    ci_key: str = "K1"
    rotation_key: str = "K2"
    policy: SigningPolicy = SigningPolicy()

    @model_validator(mode="after")
    def _known_keys(self) -> "Signing":
        for field in ("ci_key", "rotation_key"):
            if getattr(self, field) not in self.keys:
                raise ValueError(f"{field}: {getattr(self, field)!r} is not one of signing.keys")
        if len(self.keys) < 3 or len(set(self.keys)) != len(self.keys):
            raise ValueError("keys: at least three distinct key names (the CI key, the rotation key, a key nobody trusts)")
        return self


class OciSuiteOptions(_Strict):
    repository_prefix: str = "conformance"
    large_index_manifests: int = Field(default=40, ge=2, le=1000)


class SuiteOptions(_Strict):
    oci: OciSuiteOptions = OciSuiteOptions()


class Secret(_Strict):
    """Where a credential comes from: an environment variable or a file, never the scenario text."""

    password_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    password_file: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "Secret":
        if self.password_env and self.password_file:
            raise ValueError("password_env: give password_env or password_file, not both")
        return self


class ExistingRegistry(Secret):
    url: str = Field(pattern=r"^https?://[^/]+/?$", description="the registry as the harness reaches it")
    image_host: str | None = Field(default=None, description="host[:port] pod image references name (default: url's host)")
    repository: str = Field(description="a repository with at least one tag, for the pull and discovery checks")
    tag: str | None = Field(default=None, description="a tag in it (default: the first the tag list gives)")
    username: str | None = None

    @model_validator(mode="after")
    def _credentials(self) -> "ExistingRegistry":
        if self.username and not (self.password_env or self.password_file):
            raise ValueError("username: needs password_env or password_file (credentials never live in the scenario)")
        return self


class ExistingIdentity(_Strict):
    issuer: str = Field(pattern=r"^https?://", description="the issuer URL exactly as tokens name it")
    client_id: str | None = Field(default=None, description="a registered client, for the redirect negative matrix")
    redirect_uri: str | None = Field(default=None, description="that client's registered redirect URI")


class ExistingCluster(_Strict):
    kubeconfig: str | None = Field(default=None, description="default: $KUBECONFIG, then ~/.kube/config (read, never written)")
    context: str | None = None
    namespace: str = "default"
    signed_image: str | None = Field(default=None, description="an image reference the live policy admits")
    unsigned_image: str | None = Field(default=None, description="an image reference the live policy denies")


class Existing(_Strict):
    """A live deployment labgate attaches to read-only (provider: existing)."""

    registry: ExistingRegistry
    identity: ExistingIdentity | None = None
    kubernetes: ExistingCluster | None = None


class KindSettings(_Strict):
    """providers kind and k3d: the cluster."""

    node_image: Literal["built", "upstream"] = Field(
        default="built", description="built: assembled here offline from Debian and Go-built Kubernetes; upstream: kindest/node by digest")
    image: str | None = Field(default=None, description="upstream: the node image reference (default: the one kind pins)")
    cluster: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9-]{0,40}$",
                                description="reuse this existing kind cluster: labgate creates and deletes no cluster")
    keep: bool = Field(default=False, description="keep the cluster after the run (labgate prints how to attach and delete it)")


class GateSettings(_Strict):
    """What ``labgate gate`` allows when this scenario is the upgrade's target."""

    max_gap_seconds: dict[Literal["default", "pull", "oidc", "admission-signed", "admission-unsigned"], float] = Field(
        default={}, description="probe -> the longest run of failed availability probes the upgrade may cause (default 60)")


class Scenario(_Strict):
    name: str
    description: str | None = None
    provider: Literal["local", "kind", "k3d", "existing"] = "local"
    arch: Literal["auto", "amd64", "arm64"] = "auto"
    components: Components = Components()
    identities: Identities = Identities()
    access: Access = Access()
    signing: Signing = Signing()
    suites: list[Literal["oci", "oidc", "access", "admission", "rotation", "faults"]] = ["oci"]
    options: SuiteOptions = SuiteOptions()
    existing: Existing | None = None
    kind: KindSettings | None = None
    budgets: dict[str, float] = Field(default={}, description="phase -> seconds (stack-up, teardown, suite:oci, ...): over budget warns, naming the phase")
    gate: GateSettings | None = None

    # where the file came from; not part of the YAML
    source: str = Field(default="<memory>", exclude=True)

    @field_validator("suites")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        dup = sorted({s for s in v if v.count(s) > 1})
        if dup:
            raise ValueError(f"suite {dup[0]!r} is listed twice")
        return v

    @model_validator(mode="after")
    def _provider_section(self) -> "Scenario":
        if self.provider == "existing" and self.existing is None:
            raise ValueError("existing: provider existing needs an existing section (registry url, repository, credentials from env or file)")
        if self.provider != "existing" and self.existing is not None:
            raise ValueError(f"existing: only for provider existing (this scenario's provider is {self.provider})")
        if self.provider not in ("kind", "k3d") and self.kind is not None:
            raise ValueError(f"kind: only for providers kind and k3d (this scenario's provider is {self.provider})")
        return self

    @model_validator(mode="after")
    def _suite_needs(self) -> "Scenario":
        if self.provider == "existing":
            return self  # a live deployment brings its own components; the suites skip what it lacks
        for suite in ("admission", "rotation"):
            if suite in self.suites:
                for comp in ("kubernetes", "admission"):
                    if getattr(self.components, comp) is None:
                        raise ValueError(f"suites: {suite!r} needs components.{comp} (add `{comp}: {{}}` under components)")
        if self.components.admission is not None and self.components.kubernetes is None:
            raise ValueError("components.admission: kyverno needs components.kubernetes")
        adm = self.components.admission
        if adm is not None and adm.pull_robot is not None and adm.pull_robot not in {r.name for r in self.identities.robots}:
            raise ValueError(f"components.admission.pull_robot: {adm.pull_robot!r} is not a robot declared in identities.robots")
        return self

    @model_validator(mode="after")
    def _access_names(self) -> "Scenario":
        names = {r.name for r in self.identities.robots} | {h.name for h in self.identities.humans}
        for i, pol in enumerate(self.access.policies):
            for u in pol.users:
                if u not in names:
                    raise ValueError(f"access.policies[{i}].users: {u!r} is not declared in identities")
            for g in pol.groups:
                if g not in self.identities.groups:
                    raise ValueError(f"access.policies[{i}].groups: group {g!r} is not declared in identities.groups")
            if not pol.users and not pol.groups:
                raise ValueError(f"access.policies[{i}]: names neither users nor groups")
        table = self.access.table
        if table is not None:
            for i, ident in enumerate(table.identities):
                if ident != "anonymous" and ident not in names:
                    raise ValueError(f"access.table.identities[{i}]: {ident!r} is not declared in identities (or 'anonymous')")
            for i, ov in enumerate(table.overrides):
                if ov.identity != "anonymous" and ov.identity not in names:
                    raise ValueError(f"access.table.overrides[{i}].identity: {ov.identity!r} is not declared in identities")
        return self

    def for_suites(self, chosen: set[str]) -> "Scenario":
        """The scenario narrowed to ``chosen`` suites, with only the components they need: the
        command line asked for less (``pytest suites/oci``), so less is started."""
        suites = [s for s in self.suites if s in chosen]
        need = {c for s in suites for c in SUITE_NEEDS[s]}
        comps = self.components.model_copy(update={
            c: (getattr(self.components, c) if c in need else None) for c in ("kubernetes", "admission", "signer", "identity")
        })
        return self.model_copy(update={"suites": suites, "components": comps})

    def robot(self, name: str) -> Robot:
        for r in self.identities.robots:
            if r.name == name:
                return r
        raise KeyError(name)


# ---------------------------------------------------------------------------------------------
# loading and error formatting

_TYPE_WORDS = {
    "string_type": "expected a string",
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "bool_type": "expected true or false",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "missing": "required field is missing",
    "greater_than_equal": None,
    "less_than_equal": None,
}


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _model_at(loc: tuple[Any, ...], root: type[BaseModel] | None = None) -> type[BaseModel] | None:
    """The pydantic model class that owns the last element of ``loc`` (for 'did you mean')."""
    model: Any = root or Scenario
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return None
        ann = field.annotation
        args = getattr(ann, "__args__", None)
        if args:  # list[Robot] -> Robot
            ann = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), ann)
        model = ann
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _describe(err: dict[str, Any], root: type[BaseModel] | None = None) -> tuple[str, str]:
    loc = tuple(p for p in err["loc"] if p not in ("function-after",))
    kind = err["type"]
    if kind == "extra_forbidden":
        model = _model_at(loc, root)
        known = [k for k in (model.model_fields if model else {}) if k != "source"]
        hint = difflib.get_close_matches(str(loc[-1]), known, n=1)
        msg = "unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else f" (known keys: {', '.join(known)})")
        return _path(loc), msg
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return _path(loc), f"expected one of {expected} (got {err.get('input')!r})"
    if kind == "value_error":
        msg = str(err.get("ctx", {}).get("error", err["msg"]))
        # validators may name a sub-path as "sub.path: message"
        sub, sep, rest = msg.partition(": ")
        if sep and re.match(r"^[a-z_]+(\[\d+\])?(\.[a-z_]+)?$", sub):
            return _path(loc + (sub,)) if loc else sub, rest
        return _path(loc), msg
    word = _TYPE_WORDS.get(kind)
    if word:
        return _path(loc), word
    return _path(loc), err["msg"][0].lower() + err["msg"][1:]


_M = TypeVar("_M", bound=BaseModel)


def parse_scenario(data: Any, source: str = "<memory>") -> Scenario:
    if data is None:
        raise ScenarioError(f"{source}: the file is empty; expected a mapping with at least 'name'")
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    if "source" in data:
        raise ScenarioError(f"{source}: source: unknown key")
    return validate(Scenario, {**data, "source": source}, source)


def validate(model: type[_M], data: dict[str, Any], source: str) -> _M:
    """``model`` from ``data``, or one ScenarioError naming the file and the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        field, msg = _describe(errors[0], model)
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        raise ScenarioError(f"{source}: {field}: {msg}{more}") from None


def read_yaml(path: str | Path, what: str = "scenario", example: str = "scenarios/local.yaml") -> Any:
    """A YAML file's data, or one ScenarioError naming the file (missing, unreadable, bad syntax)."""
    shown = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(f"{shown}: no such {what} file", fix=f"pass an existing file, e.g. {example}") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{shown}: cannot read the {what} file: {exc.__class__.__name__}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ScenarioError(f"{shown}: {where}YAML syntax error: {problem}") from None


def load_scenario(path: str | Path) -> Scenario:
    return parse_scenario(read_yaml(path, example="--scenario scenarios/local.yaml"), str(path))
