"""The one settings class. Nothing else in Corral reads the environment."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipelines.storage import child_location

# The longest a deploy call waits. Serve's HAProxy keeps a connection only so long after it reloads
# (every app or replica change reloads it): lifecycle gives it a minute more than this.
MAX_DEPLOY_TIMEOUT_S = 600.0


class CorralSettings(BaseSettings):
    """Every knob of Corral, read from `CORRAL_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="CORRAL_", extra="ignore")

    home: Path = Field(default=Path("~/.corral"), description="state: registry DB, artifacts, logs, tokens")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite under home")
    storage_uri: str | None = Field(
        default=None,
        description="artifact store: a directory or pyarrow.fs URI (s3://bucket/prefix?endpoint_override=host:port"
        "&scheme=http; credentials from the AWS_* variables); default home/artifacts",
    )
    logs_uri: str = Field(
        default="",
        description="inference-log root, a directory or URI like storage_uri; default <storage_uri>/logs when "
        "storage_uri is set, else home/logs",
    )
    host: str = "127.0.0.1"
    port: int = 8000
    url: str | None = Field(default=None, description="where clients reach Corral; default http://host:port")
    ray_address: str | None = Field(default=None, description="existing Ray cluster; default start one")
    num_cpus: int = Field(default=16, ge=1, description="logical CPUs of a local Ray head")
    num_gpus: int = Field(default=0, ge=0, description="logical GPUs of a local Ray head (testing placement)")
    dashboard_port: int = 8265
    metrics_port: int = Field(default=8080, description="Ray's Prometheus metrics export port")
    max_payload_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    inline_threads: int = Field(
        default=2, ge=1, le=64, description="worker threads per router replica for inline steps on large tables"
    )
    deploy_timeout_s: float = Field(
        default=300, gt=0, le=MAX_DEPLOY_TIMEOUT_S, description="a deploy's deadline unless X-Corral-Timeout-Ms says"
    )
    max_json_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, description="body limit of the control API's JSON endpoints"
    )
    max_code_files: int = Field(default=1_000, ge=1, description="files a step-code zip may hold")
    max_code_unpacked_bytes: int = Field(
        default=50 * 1024 * 1024, ge=1024, description="bytes a step-code zip may expand to"
    )
    request_timeout_s: float = Field(
        default=60, gt=0, le=3600, description="an inference request's deadline unless X-Corral-Timeout-Ms says"
    )
    assay_tick_s: float = Field(default=5.0, gt=0, description="how often the assay scheduler looks for due windows")
    explain_timeout_s: float = Field(
        default=120, gt=0, le=3600, description="default time budget of an explanation (params.timeout_s overrides)"
    )
    explainer_idle_s: float = Field(
        default=300, ge=1, description="idle seconds before a pipeline's explainer scales to zero replicas"
    )
    token: str | None = Field(default=None, description="SDK/CLI token; default the admin token file")
    admin_token_hash: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="sha256 (hex) of the admin token, for Corral started without `corral up` (KubeRay: from a Secret)",
    )

    @field_validator("home")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @model_validator(mode="after")
    def _default_logs_uri(self) -> CorralSettings:
        if not self.logs_uri:
            self.logs_uri = child_location(self.storage_uri, "logs") if self.storage_uri else str(self.home / "logs")
        return self

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'corral.db'}"

    @property
    def artifacts_uri(self) -> str:
        return self.storage_uri or str(self.home / "artifacts")

    @property
    def admin_token_path(self) -> Path:
        return self.home / "admin-token"

    @property
    def base_url(self) -> str:
        return self.url or f"http://{self.host}:{self.port}"


@lru_cache(maxsize=1)
def get_settings() -> CorralSettings:
    return CorralSettings()
