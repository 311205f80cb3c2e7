"""Silo policy: the silo owner's rules, kept in the silo's own storage (``policy/policy.json``).

The silo runner reads the policy from the silo's storage, never from the job request, so the
orchestrator cannot override it: it names the orchestrator keys whose tickets the silo accepts, the
signers whose code it runs, the tasks it allows, a minimum privacy level, a daily round budget and its
own update transforms, which run before the job's (``fedfunc.pipeline``).

``min_privacy`` is enforced fail-closed until differential privacy exists: a job request carries no
privacy settings yet, so a silo that sets a minimum refuses every job (rule ``policy.min_privacy``)
rather than pretend its data was protected.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fedfunc.contracts import SiloJobRequest
from fedfunc.pipeline.config import TransformSpec
from fedfunc.registry import SILO_NAME
from fedfunc.security import Refused
from fedfunc.security.keys import key_id, parse_public_b64

POLICY_CONTAINER = "policy"
POLICY_BLOB = "policy.json"
POLICY_OBJECT = f"{POLICY_CONTAINER}/{POLICY_BLOB}"
USAGE_WINDOW = timedelta(days=1)


class MinPrivacy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_epsilon: float | None = Field(None, gt=0, description="largest DP ε this silo accepts per run")
    secure_aggregation: bool = Field(False, description="require secure aggregation")


class SiloPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    silo: str = Field(pattern=SILO_NAME, description="this silo's name; tickets for another silo are refused")
    orchestrator_keys: list[str] = Field(min_length=1, description="base64 Ed25519 keys allowed to issue tickets")
    trusted_signers: list[str] = Field(default_factory=list, description="base64 Ed25519 keys allowed to sign code")
    allowed_tasks: list[str] = Field(default_factory=list)
    min_privacy: MinPrivacy | None = None
    max_rounds_per_day: int | None = Field(None, ge=0)
    update_transforms: list[TransformSpec] = Field(
        default_factory=list, description="update transforms this silo applies to every update it sends, before "
                                          "the signed bundle's (e.g. its own tighter clip); no job can skip them")

    @field_validator("orchestrator_keys", "trusted_signers")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        for k in v:
            parse_public_b64(k)
        return v

    @property
    def signer_ids(self) -> list[str]:
        return [key_id(parse_public_b64(k)) for k in self.trusted_signers]


def parse_policy(raw: bytes | None) -> SiloPolicy:
    """The policy from its stored bytes; a missing or invalid policy refuses the job (fail closed)."""
    if raw is None:
        raise Refused("policy.missing", POLICY_OBJECT, "this silo has no policy, so it runs no job")
    try:
        return SiloPolicy.model_validate_json(raw)
    except ValidationError as e:
        first = e.errors()[0]
        raise Refused("policy.invalid", POLICY_OBJECT,
                      f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def enforce(policy: SiloPolicy, request: SiloJobRequest, usage: int) -> None:
    """Refuse a job the silo's own rules forbid. ``usage``: other jobs this silo started in the last 24 h."""
    job = f"job {request.job_key}"
    if request.silo != policy.silo:
        raise Refused("policy.silo", job, f"request is for silo {request.silo!r}, this is silo {policy.silo!r}")
    if request.task not in policy.allowed_tasks:
        raise Refused("policy.allowed_tasks", f"task {request.task!r}",
                      f"not in this silo's allowed tasks {policy.allowed_tasks}")
    if policy.min_privacy is not None:
        raise Refused("policy.min_privacy", job, f"this silo requires {policy.min_privacy.model_dump(exclude_none=True)}"
                      " but the job carries no privacy guarantee (differential privacy is not available yet)")
    if policy.max_rounds_per_day is not None and usage >= policy.max_rounds_per_day:
        raise Refused("policy.max_rounds_per_day", job,
                      f"this silo already ran {usage} jobs in the last 24 h (limit {policy.max_rounds_per_day})")


def write_policy(silo_connection_string: str, policy: SiloPolicy, *, replace: bool) -> SiloPolicy:
    """Store the policy with the silo's own key. ``replace=False`` keeps an existing policy and returns it."""
    blob = BlobServiceClient.from_connection_string(silo_connection_string).get_blob_client(POLICY_CONTAINER, POLICY_BLOB)
    try:
        blob.upload_blob(policy.model_dump_json(indent=2).encode(), overwrite=replace)
        return policy
    except ResourceExistsError:
        return parse_policy(blob.download_blob().readall())


def recent_usage(audit_lines: list[dict], job_key: str, now: datetime | None = None) -> int:
    """Distinct jobs (other than ``job_key``) this silo started within ``USAGE_WINDOW`` of ``now``."""
    since = (now or datetime.now(timezone.utc)) - USAGE_WINDOW
    return len({e["job"] for e in audit_lines
                if e.get("kind") == "job_started" and e.get("job") != job_key
                and datetime.fromisoformat(e["at"]) >= since})
