"""Runtime settings, read from the environment (prefix ``TICKETFLEET_``) and an optional ``.env`` file.

Every knob the fleet has lives here so that a worker on a GPU host, the CLI on a laptop and the tests
all agree on one definition. Secrets (URLs carry passwords) are ``SecretStr`` so they never end up in
logs or reprs by accident.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ticketfleet.core.errors import ConfigurationError
from ticketfleet.core.vocabulary import LANES, PROMPT_VERSION, TRIAGE_FIELD_NAMES, Lane

__all__ = ["LANES", "TRIAGE_FIELD_NAMES", "GatePolicy", "Lane", "Settings", "get_settings"]

DEFAULT_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
MISSING_DATABASE_URL = (
    "TICKETFLEET_DATABASE_URL is not set: point it at your PostgreSQL "
    "(postgresql://user:password@host:5432/db), or run `ticketfleet demo`, which starts an embedded one"
)
MISSING_REDIS_URL = (
    "TICKETFLEET_REDIS_URL is not set: point it at your Redis (redis://host:6379/0), "
    "or run `ticketfleet demo`, which starts an embedded one"
)


class GatePolicy(BaseModel):
    """Confidence gates of one triage field.

    Below ``review_below`` the item is flagged for a human; at or above ``auto_at`` the value may be
    written back to the source system automatically; in between it is a suggestion shown to agents.
    """

    review_below: float = Field(default=0.4, ge=0.0, le=1.0)
    auto_at: float = Field(default=0.8, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> GatePolicy:
        if self.review_below > self.auto_at:
            raise ValueError(f"review_below ({self.review_below}) must not exceed auto_at ({self.auto_at})")
        return self


DEFAULT_GATES = {
    "language": GatePolicy(review_below=0.6, auto_at=0.9),
    "sentiment": GatePolicy(),
    "intent": GatePolicy(),
    "priority": GatePolicy(),
}


class ApiSourceAuth(BaseModel):
    """Credentials of one source that delivers to the HTTP API (``ticketfleet serve``).

    A request authenticates with either an HMAC signature made with ``signing_secret`` or a bearer
    ``token``; ``hook_secret`` is the vendor's webhook secret (Zendesk signing secret, Zammad HMAC
    token) checked on ``/v1/hooks/{vendor}/{source}``.
    """

    model_config = ConfigDict(extra="forbid")

    signing_secret: SecretStr | None = None
    token: SecretStr | None = None
    hook_secret: SecretStr | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TICKETFLEET_", env_file=".env", extra="ignore")

    # --- services -------------------------------------------------------------------------------
    database_url: SecretStr | None = Field(
        default=None,
        description="postgresql+psycopg://user:pass@host/db. Unset: an embedded PostgreSQL is started.",
    )
    redis_url: SecretStr | None = Field(
        default=None,
        description="redis://host:6379/0 or redis+socket:///path.sock. Unset: an embedded Redis is started.",
    )
    data_dir: Path = Field(
        default=Path(".ticketfleet"),
        description="Where embedded PostgreSQL/Redis keep their files (only used when URLs are unset).",
    )

    # --- model ----------------------------------------------------------------------------------
    model: str = Field(
        default=DEFAULT_MODEL,
        description="Hugging Face model id, a local directory, or a .gguf file.",
    )
    model_revision: str = "main"
    engine_factory: str = Field(
        default="ticketfleet.engine:TransformersEngine.from_settings",
        description="module:callable(settings) -> Engine. The seam for alternative engines.",
    )
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N")
    max_new_tokens: int = Field(default=160, ge=1, le=2048)
    max_input_tokens: int = Field(default=1024, ge=64, description="Thread tokens kept per prompt.")
    prompt_version: str = PROMPT_VERSION
    intent_taxonomy: Path | None = Field(
        default=None, description="JSON file of allowed intents (default: the bundled support taxonomy)."
    )
    heads: Path | None = Field(
        default=None,
        description="A heads directory from `ticketfleet heads train`: fields with a head use it, the "
        "others keep prompted label scoring.",
    )

    gates: dict[str, GatePolicy] = Field(
        default_factory=lambda: dict(DEFAULT_GATES),
        description='Per-field gates as JSON, e.g. {"intent": {"review_below": 0.5, "auto_at": 0.9}}; '
        "fields not named keep their defaults.",
    )

    # --- batching -------------------------------------------------------------------------------
    batch_size: int = Field(default=16, ge=1, le=1024)
    # 16 x 1024: a full batch of drafts (prompt + max_new_tokens per row) decodes as one batch. A draft
    # batch split by the budget decodes its remainder separately, and every decode step re-reads the
    # weights: on SmolLM2/CPU one row costs ~33 ms a step, forty rows ~175 ms; see docs/engine.md.
    batch_max_tokens: int = Field(default=16384, ge=64, description="Token budget of one batch.")
    max_wait_ms: int = Field(default=50, ge=0, le=60_000, description="How long a batch may wait to fill.")

    # --- reliability ----------------------------------------------------------------------------
    max_attempts: int = Field(default=5, ge=1)
    retry_backoff_s: float = Field(default=5.0, ge=0)
    lease_seconds: int = Field(default=600, ge=1, description="A claimed batch older than this is reaped.")
    stuck_after_seconds: int = Field(
        default=120, ge=1, description="Pending/queued items older than this are re-sent by the reaper."
    )
    reaper_interval_seconds: float = Field(default=30.0, gt=0)
    nightly_backlog_cron: str = Field(default="0 2 * * *", description="minute hour dom month dow")

    # --- audit ----------------------------------------------------------------------------------
    audit_hmac_key: SecretStr | None = Field(
        default=None,
        description="Key that signs `ticketfleet audit head` output (HMAC-SHA256), ≥ 16 characters. "
        "Keep it outside the database.",
    )

    # --- import ---------------------------------------------------------------------------------
    max_body_chars: int = Field(default=20_000, ge=1, description="Longer message bodies are rejected.")

    # --- sources (connectors) -------------------------------------------------------------------
    sources_file: Path = Field(
        default=Path("sources.toml"),
        description="TOML file of [[sources]] to poll and write back to (see docs/connectors.md).",
    )
    source_backoff_base_s: float = Field(
        default=30.0, gt=0, description="First back-off of a failing source; doubles per failure."
    )
    source_backoff_cap_s: float = Field(
        default=1800.0, gt=0, description="Longest back-off; a permanently failing source waits this."
    )
    write_back_max_attempts: int = Field(default=6, ge=1)

    # --- personal data (docs/privacy.md) --------------------------------------------------------
    pii_key: SecretStr | None = Field(
        default=None,
        description="Master key of the PII vault: base64 of 32 random bytes (`ticketfleet pii keygen`). "
        "Unset: ingest refuses to run, unless pii_dev_key is on.",
    )
    pii_dev_key: bool = Field(
        default=False,
        description="Demo/development only: without pii_key, create a key file in data_dir and use it.",
    )
    pii_retention_days: float = Field(
        default=90.0, gt=0, description="Originals in the vault are purged this long after last activity."
    )

    # --- HTTP API (ticketfleet serve) -------------------------------------------------------------
    api_sources: dict[str, ApiSourceAuth] = Field(
        default_factory=dict,
        description='Per-source API credentials, JSON: {"shop": {"signing_secret": "…", "token": "…"}}.',
    )
    api_max_body_bytes: int = Field(default=1 << 20, ge=1, description="Larger request bodies get 413.")
    api_signature_tolerance_s: int = Field(
        default=300, ge=1, description="Replay window: signed timestamps further from now are refused."
    )
    api_ops_token: SecretStr | None = Field(
        default=None, description="When set, /healthz and /metrics need `Authorization: Bearer` with it."
    )
    api_nudge_min_interval_s: float = Field(
        default=1.0, ge=0, description="Vendor webhooks for one source nudge at most one poll per interval."
    )

    @field_validator("gates")
    @classmethod
    def _known_gate_fields(cls, value: dict[str, GatePolicy]) -> dict[str, GatePolicy]:
        unknown = set(value) - set(TRIAGE_FIELD_NAMES)
        if unknown:
            raise ValueError(
                f"gates for unknown field(s) {sorted(unknown)}; fields: {', '.join(TRIAGE_FIELD_NAMES)}"
            )
        return {**DEFAULT_GATES, **value}

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    def database_url_value(self) -> str | None:
        return self.database_url.get_secret_value() if self.database_url else None

    def require_database_url(self) -> str:
        """The database URL, or the one error every command and worker gives when it is missing."""
        url = self.database_url_value()
        if not url:
            raise ConfigurationError(MISSING_DATABASE_URL)
        return url

    def require_redis_url(self) -> str:
        url = self.redis_url_value()
        if not url:
            raise ConfigurationError(MISSING_REDIS_URL)
        return url

    def pii_key_value(self) -> str | None:
        return self.pii_key.get_secret_value() if self.pii_key else None

    def redis_url_value(self) -> str | None:
        return self.redis_url.get_secret_value() if self.redis_url else None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
