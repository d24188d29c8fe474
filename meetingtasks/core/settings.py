"""Settings: one typed object, read from ``MEETINGTASKS_*`` env vars and an optional YAML file.

Precedence, highest first: keyword arguments, environment (``MEETINGTASKS_REDIS_URL`` ...), the YAML file
named by ``MEETINGTASKS_CONFIG``, defaults. The YAML file takes the meeting system's ``config.yaml``
sections (``message_queue``, ``task_scheduler``, ``event_bus``, ``task_dispatcher``), whose keys map onto
the flat fields below (see ``YAML_SECTIONS``); flat field names are accepted at the top level too.

Use :func:`load_settings` where a person reads the error: it turns a validation failure into one line that
names the key and the reason.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlsplit

import yaml
from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from meetingtasks.core.backoff import RetryPolicy
from meetingtasks.core.errors import ConfigurationError
from meetingtasks.core.priority import Priority
from meetingtasks.core.redaction import redact_text, redact_url
from meetingtasks.core.secret_fields import parse_keys
from meetingtasks.core.sentinel import SENTINEL_SCHEMES, URL_FORM, SentinelUrl

log = logging.getLogger(__name__)

ENV_PREFIX = "MEETINGTASKS_"
CONFIG_ENV = "MEETINGTASKS_CONFIG"
#: File in the data directory where ``meetingtasks up`` records the embedded Redis URL.
REDIS_URL_FILE = "redis.url"
#: File in the data directory where a generated gateway secret is recorded (``up``, ``gateway --generate-secret``).
GATEWAY_SECRET_FILE = "gateway.secret"
#: The console's ``user:password``, written by ``up`` in the data directory when none is configured.
CONSOLE_AUTH_FILE = "console.auth"
REDIS_SCHEMES = ("redis", "rediss", "unix", *SENTINEL_SCHEMES)
#: How to make a real secret, said by every refusal of a placeholder.
GENERATE_SECRET_HINT = 'generate a real one with `python -c "import secrets; print(secrets.token_urlsafe(32))"`'
#: What marks a secret as a placeholder (deploy/env.example ships ``change-me-...`` values; its test checks
#: that every value there is caught): these pass a length check and open the platform to anyone who read the
#: example. Compared lowercase with ``-``, ``_`` and spaces removed.
PLACEHOLDER_MARKERS = ("changeme", "replaceme", "yoursecret", "yourpassword")
#: Whole values that are stand-ins, never secrets (same comparison).
PLACEHOLDER_VALUES = frozenset({"secret", "password", "passwd", "admin", "default", "xxx", "xxxxxxxx", "todo"})

#: YAML section -> {yaml key: settings field}. ``None`` means accepted for compatibility, not used.
YAML_SECTIONS: dict[str, dict[str, str | None]] = {
    "message_queue": {
        "enabled": None,
        "type": "broker_type",
        "queue_name": None,
        "workers": "worker_concurrency",
        "visibility_timeout": "visibility_timeout_s",
        "poll_interval": "pump_interval_s",
        "max_retries": "max_retries",
        "enable_dead_letter_queue": "dead_letter_enabled",
        "redis_url": "redis_url",
        "max_message_size": "max_message_bytes",
        "max_deliveries": "max_deliveries",
    },
    "task_scheduler": {
        "enabled": None,
        "check_interval": "pump_interval_s",
        "poll_interval": "pump_interval_s",
        "timezone": "timezone",
        "max_delay": "max_delay_s",
    },
    "event_bus": {
        "enabled": None,
        "type": None,
        "buffer_size": "local_bus_buffer",
        "max_stream_length": "stream_maxlen",
        "stream_maxlen": "stream_maxlen",
        "workers": None,
    },
    "task_dispatcher": {
        "enabled": None,
        "default_priority": "default_priority",
        "default_timeout": "default_timeout_s",
        "status_ttl": "status_ttl_s",
        "dedup_ttl": "dedup_ttl_s",
        "max_message_size": "max_message_bytes",
        "max_retries": "max_retries",
    },
}


#: Top-level YAML names that an application's own settings section reads (filled by
#: :class:`meetingtasks.core.app_settings.AppSettings` subclasses): not "unknown" here.
APP_SETTINGS_NAMES: set[str] = set()


def _flatten_yaml(doc: Any, path: str) -> dict[str, Any]:
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigurationError(f"{path}: the YAML file must hold a mapping of sections, not {type(doc).__name__}")
    flat: dict[str, Any] = {}
    for section, body in doc.items():
        mapping = YAML_SECTIONS.get(section)
        if mapping is None:
            if section in Settings.model_fields:
                flat[section] = body
            elif section not in APP_SETTINGS_NAMES:
                log.warning("%s: unknown section %r ignored (known: %s)", path, section, ", ".join(YAML_SECTIONS))
            continue
        if not isinstance(body, dict):
            raise ConfigurationError(f"{path}: section {section!r} must be a mapping")
        for key, value in body.items():
            if key not in mapping:
                log.warning("%s: unknown key %s.%s ignored (known: %s)", path, section, key, ", ".join(mapping))
            elif mapping[key] is not None:
                flat[mapping[key]] = value  # type: ignore[index]
    return flat


class YamlConfigSource(PydanticBaseSettingsSource):
    """Reads the YAML file named by ``MEETINGTASKS_CONFIG`` and flattens its sections into fields."""

    def __init__(self, settings_cls: type[BaseSettings], path: str | None) -> None:
        super().__init__(settings_cls)
        self.path = path

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ returns the whole mapping

    def __call__(self) -> dict[str, Any]:
        if not self.path:
            return {}
        return _flatten_yaml(read_config_file(self.path), self.path)


def read_config_file(path: str) -> Any:
    """The parsed YAML file ``path``; unreadable or invalid: a one-line :class:`ConfigurationError`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"{CONFIG_ENV}={path}: cannot read the file ({exc.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{CONFIG_ENV}={path}: not valid YAML ({exc})".replace("\n", " ")) from None


class Settings(BaseSettings):
    """Everything configurable, with units in the names (``_s`` seconds, ``_bytes`` bytes)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", validate_default=True)

    # --- Redis -------------------------------------------------------------------------------------------
    redis_url: str | None = Field(
        None, description="Broker URL for every service (redis://, rediss:// for TLS, unix://, "
        "sentinel://[user:password@]host:port[,host:port...]/<master name>/<db> for a Sentinel-managed primary, "
        "sentinels:// for it over TLS; user:password@ for AUTH/ACL); unset: the URL `up` recorded in data_dir, "
        "else redis://localhost:6379/0"
    )
    service_redis_urls: dict[str, str] = Field(
        default_factory=dict, description="Per-service broker URL overrides, e.g. {'ai': 'redis://ai-redis/0'}"
    )
    redis_tls_cert_reqs: Literal["required", "optional", "none"] = Field(
        "required", description="Certificate check for rediss:// URLs: required, optional or none"
    )
    redis_tls_ca_certs: str | None = Field(
        None, description="CA bundle (PEM) that verifies the Redis server certificate"
    )
    redis_tls_certfile: str | None = Field(None, description="Client certificate (PEM) for Redis TLS")
    redis_tls_keyfile: str | None = Field(None, description="Private key (PEM) of redis_tls_certfile")
    redis_sentinel_password: SecretStr | None = Field(
        None, description="Password of the sentinels themselves (sentinel:// URLs); the URL's user:password is the "
        "primary's"
    )
    min_replica_acks: int = Field(
        0, ge=0, description="Replicas that must confirm (WAIT) a write that accepts work before it returns or acks: "
        "dispatch, dispatch_batch, publish_event, task outcomes, dead letters; 0: no wait (fastest)"
    )
    replica_ack_timeout_ms: int = Field(
        1_000, ge=1, description="Longest WAIT for min_replica_acks; fewer confirmations by then: dispatch and "
        "publish_event raise ReplicationTimeout, workers log a warning and go on"
    )
    redis_socket_timeout_s: float = Field(
        10.0, gt=0, description="Socket timeout of the platform's own Redis connections"
    )
    dispatch_retry_s: float = Field(
        5.0, ge=0, description="How long dispatch keeps trying to connect to an unreachable Redis before failing"
    )
    dispatch_spin_us: int = Field(
        200, ge=0, le=10_000,
        description="How long a single dispatch, and a solo worker's Redis calls, poll for Redis's reply before "
                    "blocking (0: always blocks)",
    )
    solo_batch_ms: float = Field(
        4.0, ge=0, le=100,
        description="How long (ms) a fetched message may wait in a worker before it goes back to its queue if one of "
                    "a higher priority waits: the rest of a solo batch, a prefork or threads worker's reserve; 0: one "
                    "message per fetch, no reserve",
    )
    redis_outage_grace_s: float = Field(
        15.0, ge=0, description="How long a worker retries its own bookkeeping writes before handing the message back"
    )
    broker_type: Literal["redis"] = Field(
        "redis", description="Broker kind; only redis (the YAML message_queue.type key maps here)"
    )
    key_prefix: str = Field("mt:", min_length=1, description="Prefix of the platform's own Redis keys")
    data_dir: Path = Field(
        Path(".meetingtasks"), description="Where `up` keeps Redis data and records the Redis URL, the gateway secret "
        "and the encryption keys"
    )

    # --- queues and delivery -----------------------------------------------------------------------------
    visibility_timeout_s: float = Field(
        30.0, gt=0, description="Lease of a delivered message; renewed while its task runs, restored to its queue "
        "once expired"
    )
    restore_interval_s: float = Field(
        2.0, gt=0, description="How often workers sweep expired leases back onto the queues"
    )
    lease_renew_interval_s: float | None = Field(
        None, gt=0, description="How often a worker renews the leases it holds; unset: a third of "
        "visibility_timeout_s (at least 0.2 s)"
    )
    max_deliveries: int = Field(
        5, ge=1, description="Deliveries without finishing before a task is dead-lettered as poison"
    )
    max_message_bytes: int = Field(
        1_048_576, ge=1024, description="Message size limit: dispatch refuses larger messages, workers dead-letter them"
    )
    worker_concurrency: int | None = Field(None, ge=1, description="Pool size of a worker; unset: the CPU count")
    worker_pool: Literal["prefork", "threads", "solo"] = Field(
        "prefork", description="Default worker pool: prefork, threads or solo"
    )

    # --- retries and time limits ---------------------------------------------------------------------------
    max_retries: int = Field(3, ge=0, description="Default retries of a task type (its own max_retries wins)")
    retry_backoff_base_s: float = Field(
        1.0, ge=0, description="Retry backoff: base * 2**retry, capped at retry_backoff_max_s"
    )
    retry_backoff_max_s: float = Field(300.0, ge=0, description="Longest retry backoff")
    retry_jitter: bool = Field(
        True, description="Full jitter on the retry backoff (a random wait between 0 and the computed one)"
    )
    default_timeout_s: float = Field(300.0, gt=0, description="Soft time limit of task types that set none")
    hard_timeout_grace_s: float = Field(5.0, ge=0, description="The hard time limit comes this much after the soft one")
    dead_letter_enabled: bool = Field(
        True, description="False: tasks that exhaust their retries end FAILED without a dead letter"
    )

    # --- scheduling -----------------------------------------------------------------------------------------
    pump_interval_s: float = Field(
        0.2, gt=0, description="How often workers and beat move due tasks from the delayed set onto their queues"
    )
    pump_batch: int = Field(1000, ge=1, description="Most delayed tasks one pump call moves")
    max_delay_s: float = Field(366 * 86_400, gt=0, description="Longest delay or ETA dispatch accepts")
    timezone: str = Field("UTC", description="Beat's time zone for crontab entries")
    beat_lock_timeout_s: int = Field(
        10, ge=2, description="A killed beat's lock blocks its standby this long; renewed every beat tick"
    )
    beat_max_interval_s: float = Field(1.0, gt=0, description="Longest sleep between two beat ticks")
    queue_depths_interval_s: float = Field(30.0, gt=0, description="How often beat refreshes the depth snapshot")
    stream_trim_interval_s: float = Field(
        30.0, gt=0, description="How often beat trims the event streams (what every consumer group acknowledged)"
    )

    # --- dispatcher and status --------------------------------------------------------------------------------
    default_priority: Priority | None = Field(
        None, description="Overrides every task type's default priority; unset: each type's own"
    )
    status_ttl_s: int = Field(
        7 * 86_400, ge=1, description="Lifetime of a status record (after the due time for a delayed task)"
    )
    dedup_ttl_s: int = Field(3_600, ge=1, description="De-duplication window of a dedup_key")
    reprioritize_scan_max: int = Field(
        100_000, ge=1, description="Queue entries `reprioritize` reads at most looking for a queued task (newest "
        "first, 2,000 per script call); a task deeper in its queue is refused, nothing changes"
    )
    watchdog_interval_s: float = Field(0.5, gt=0, description="How often timeouts and callbacks are checked")
    callback_retry_s: float = Field(10.0, gt=0, description="Wait before a callback whose dispatch failed is retried")
    callback_retry_max_s: float = Field(
        300.0, gt=0, description="Longest wait between retries of a callback's dispatch (doubles from callback_retry_s)"
    )

    profile_poll_interval_s: float = Field(
        0.5, gt=0, description="How often a process that runs tasks re-reads which task types are to be profiled "
        "(`meetingtasks profile`): a requested profile starts within this"
    )
    profile_keep: int = Field(10, ge=1, description="Profiles kept per task type (the newest)")
    profile_max_bytes: int = Field(
        1_000_000, ge=4096, description="Largest profile kept; past it the pyinstrument session is dropped and the "
        "text kept"
    )

    # --- WebSocket gateway ------------------------------------------------------------------------------------------
    gateway_host: str = Field("127.0.0.1", description="Address the WebSocket gateway binds to")
    gateway_port: int = Field(8765, ge=0, le=65535, description="Port of the WebSocket gateway")
    gateway_token_ttl_s: int = Field(3_600, ge=1, description="Default lifetime of `meetingtasks token`")
    gateway_client_rate_per_s: float = Field(20.0, gt=0, description="Frames per second one client may send")
    gateway_client_burst: int = Field(
        40, ge=1, description="Frames one client may send at once before gateway_client_rate_per_s applies"
    )
    gateway_max_inflight: int = Field(100, ge=1, description="Unfinished tasks one client may have")
    gateway_max_frame_bytes: int = Field(
        65_536, ge=256, description="Largest frame a client may send (UTF-8 bytes); 16 times that closes the socket "
        "(1009)"
    )
    gateway_idle_timeout_s: float = Field(300.0, gt=0, description="Close a silent session with nothing running")
    gateway_send_queue: int = Field(1_000, ge=1, description="Frames held for a slow client before it is dropped")
    gateway_ws_impl: Literal["websockets-sansio", "websockets", "wsproto"] = Field(
        "websockets-sansio", description="uvicorn's WebSocket implementation (sans-I/O: least memory per connection)"
    )
    gateway_task_types: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Narrows the task types clients may submit (comma-separated) to these, "
        "among those declared client=True; empty: every client type"
    )
    gateway_max_connections_per_client: int = Field(
        16, ge=1, description="WebSocket connections one client id may hold at once; the next one is closed (1008)"
    )

    # --- events -------------------------------------------------------------------------------------------------
    stream_maxlen: int = Field(
        100_000, ge=1, description="Hard cap of an event stream: past it, a warning (log, exporter, `stats`); "
        "unacknowledged events are kept and publishes go on"
    )
    stream_groupless_retention_s: int = Field(
        86_400, ge=1, description="How long a stream that no consumer group reads (no bridge yet) keeps its events"
    )
    event_replay_retention_s: int = Field(
        3_600, ge=0, description="Acknowledged events stay in their stream this long (at most stream_maxlen "
        "of them) so that `meetingtasks events replay` can rewind them; 0: trimmed once acknowledged"
    )
    local_bus_buffer: int = Field(
        10_000, ge=1, description="Events the in-process bus holds before emit() returns False"
    )
    event_id_ttl_s: int = Field(600, ge=1, description="How long an event id is remembered as in its stream")
    event_max_attempts: int = Field(3, ge=1, description="Failed runs of a subscription before its dead letter")
    bridge_batch: int = Field(256, ge=1, description="Events a bridge reads per XREADGROUP")
    bridge_block_s: float = Field(0.5, gt=0, description="Longest wait of one XREADGROUP; bounds stop() time")
    bridge_claim_idle_s: float = Field(
        30.0, gt=0, description="An event unacknowledged this long is re-claimed (dead bridge, failed handler)"
    )
    bridge_claim_interval_s: float = Field(5.0, gt=0, description="How often a bridge looks for such events")
    reconnect_backoff_max_s: float = Field(5.0, gt=0, description="Longest wait between two reconnect attempts")

    # --- processes ------------------------------------------------------------------------------------------------
    include: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Modules every process imports (comma-separated): your task types and "
        "subscriptions"
    )
    gateway_secret: SecretStr | None = Field(
        None, description="HS256 secret of gateway tokens; unset: the one recorded in data_dir (`up`, `gateway "
        "--generate-secret`)"
    )
    encryption_keys: SecretStr | None = Field(
        None, description="Fernet keys (comma-separated) sealing secret task fields: the first seals, all open; "
        "default: the encryption.keys file in data_dir that `up` creates"
    )
    flower_basic_auth: SecretStr | None = Field(
        None, description="Flower's basic auth, user:password (several separated by commas)"
    )
    flower_allow_no_auth: bool = Field(False, description="Let Flower start without basic auth")
    log_json: bool = Field(
        False, description="One JSON object per log line (service, task_id, task_type, priority, attempt, trace_id)"
    )
    log_level: str = Field("INFO", description="Logging level")

    # --- operations (metrics, Flower, tracing) -----------------------------------------------------------------
    exporter_host: str = Field("127.0.0.1", description="Address the metrics exporter binds to")
    exporter_port: int = Field(9808, ge=0, le=65535, description="Port of the metrics exporter")
    flower_host: str = Field("127.0.0.1", description="Address Flower binds to (under `up`)")
    flower_port: int = Field(5555, ge=0, le=65535, description="Port of Flower (under `up`)")
    console_host: str = Field("127.0.0.1", description="Address the operator console binds to")
    console_port: int = Field(5556, ge=0, le=65535, description="Port of the operator console")
    console_basic_auth: SecretStr | None = Field(
        None, description="The console's HTTP basic auth, user:password; unset: the console.auth file in data_dir "
        "that `up` writes"
    )
    console_allow_no_auth: bool = Field(
        False, description="Let the console start without basic auth (only on a trusted, local interface)"
    )
    console_flower_url: str | None = Field(
        None, description="Flower's address as the operator's browser reaches it, for the console's link; unset: "
        "http://flower_host:flower_port/"
    )
    heartbeat_interval_s: float = Field(
        2.0, gt=0, description="How often workers and bridges write their heartbeat; 3 missed beats mark a worker down"
    )
    otlp_endpoint: str | None = Field(None, description="OTLP/HTTP traces endpoint, e.g. http://collector:4318")

    # --- message signing (Celery's auth serializer, see meetingtasks.core.signing) ----------------------------------
    signing_key: Path | None = Field(None, description="PEM RSA private key task messages are signed with")
    signing_key_password: SecretStr | None = Field(None, description="Password of signing_key, if it has one")
    signing_cert: Path | None = Field(None, description="PEM certificate of signing_key (names the signer)")
    signing_cert_store: Path | None = Field(
        None, description="Directory of trusted PEM certificates; workers run only messages signed by one of them"
    )
    signing_digest: Literal["sha256", "sha384", "sha512"] = Field(
        "sha256", description="Digest of the signatures; the same on every process"
    )

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is not None:
            check_redis_url(value)
        return value

    @field_validator("service_redis_urls")
    @classmethod
    def _check_service_urls(cls, value: dict[str, str]) -> dict[str, str]:
        for url in value.values():
            check_redis_url(url)
        return value

    @field_validator("include", "gateway_task_types", mode="before")
    @classmethod
    def _split_include(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("encryption_keys")
    @classmethod
    def _check_encryption_keys(cls, value: SecretStr | None) -> SecretStr | None:
        # A ConfigurationError (not a ValueError) leaves pydantic as it is: one line, at start-up.
        if value is not None and value.get_secret_value().strip():
            parse_keys(value.get_secret_value())
        return value

    @field_validator("signing_key", "signing_cert", "signing_cert_store", mode="before")
    @classmethod
    def _empty_path_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _check_signing(self) -> Settings:
        # A ConfigurationError (not a ValueError) leaves pydantic as it is: one line, at start-up.
        check_signing_files(self)
        return self

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        check_no_placeholder_secrets(self)
        return self

    @field_validator("default_priority", mode="before")
    @classmethod
    def _lower_priority(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The settings module is the one place that reads the process environment by hand.
        yaml_source = YamlConfigSource(settings_cls, os.environ.get(CONFIG_ENV))
        return (init_settings, env_settings, yaml_source)

    # --- derived values ---------------------------------------------------------------------------------------
    def broker_url(self, service: str | None = None) -> str:
        """The Redis URL for ``service`` (its override, the global URL, what ``up`` recorded, or localhost)."""
        if service is not None and service in self.service_redis_urls:
            return self.service_redis_urls[service]
        if self.redis_url:
            return self.redis_url
        recorded = self.recorded_redis_url()
        return recorded or "redis://localhost:6379/0"

    def recorded_redis_url(self) -> str | None:
        """The URL ``meetingtasks up`` wrote into the data directory, if it did."""
        try:
            text = (self.data_dir / REDIS_URL_FILE).read_text(encoding="utf-8").strip()
        except OSError:
            return None
        return text or None

    def gateway_signing_secret(self) -> str | None:
        """The gateway secret: ``MEETINGTASKS_GATEWAY_SECRET``, else the one recorded in the data directory."""
        if self.gateway_secret is not None and self.gateway_secret.get_secret_value():
            return self.gateway_secret.get_secret_value()
        try:
            text = (self.data_dir / GATEWAY_SECRET_FILE).read_text(encoding="utf-8").strip()
        except OSError:
            return None
        return text or None

    @property
    def signing_enabled(self) -> bool:
        """True when task messages are signed and workers run only signed ones (key, cert and store set)."""
        return self.signing_key is not None and self.signing_cert is not None and self.signing_cert_store is not None

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_retries=self.max_retries,
            base_s=self.retry_backoff_base_s,
            max_s=self.retry_backoff_max_s,
            jitter=self.retry_jitter,
        )

    @property
    def lease_interval_s(self) -> float:
        """How often a worker renews the leases of the messages it holds: a third of the visibility timeout."""
        return self.lease_renew_interval_s or max(0.2, self.visibility_timeout_s / 3)


def check_redis_url(url: str) -> None:
    """Raise ``ValueError`` naming the problem when ``url`` is not a usable Redis URL (its password shown as
    ``***``)."""
    shown = redact_url(url)
    parts = urlsplit(url)
    if parts.scheme not in REDIS_SCHEMES:
        raise ValueError(f"{shown!r} is not a Redis URL: use redis://, rediss:// (TLS), unix:// or {URL_FORM}")
    if parts.scheme in SENTINEL_SCHEMES:
        try:
            SentinelUrl.parse(url)
        except ValueError as exc:
            raise ValueError(f"{shown}: {exc}") from None
        return
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError(f"{shown!r} has no host")
    try:
        parts.port  # noqa: B018 - property access validates the port
    except ValueError:
        raise ValueError(f"{shown!r} has an invalid port") from None
    # Kombu and redis-py read the db as a number (redis://host/<db>, unix:///path?db=<db>): anything else starts
    # producers and then kills every worker at its first connection.
    db_texts = [value for key, value in parse_qsl(parts.query) if key == "db"]
    if parts.scheme != "unix":
        db_texts.append(parts.path.strip("/"))
    for db_text in db_texts:
        if db_text and not db_text.isdigit():
            raise ValueError(f"{shown!r}: the db must be a number, not {db_text!r}")


def is_placeholder(secret: str) -> bool:
    """True when ``secret`` is a placeholder (``change-me-...``, ``secret``...), not something generated."""
    normal = "".join(ch for ch in secret.lower() if ch not in "-_ \t")
    return normal in PLACEHOLDER_VALUES or any(marker in normal for marker in PLACEHOLDER_MARKERS)


def refuse_placeholder(name: str, secret: str | None, what: str = "is a placeholder") -> None:
    """Raise a one-line :class:`ConfigurationError` when ``secret`` is a placeholder (never echoing it)."""
    if secret is not None and is_placeholder(secret):
        raise ConfigurationError(f"{name} {what}, not a secret: {GENERATE_SECRET_HINT}")


def check_no_placeholder_secrets(settings: Settings) -> None:
    """Refuse every secret setting that holds a placeholder: the gateway secret, Flower's basic-auth
    passwords, the passwords in the Redis URLs, the signing key's password."""
    def plain(value: SecretStr | None) -> str | None:
        return None if value is None else value.get_secret_value()

    refuse_placeholder(f"{ENV_PREFIX}GATEWAY_SECRET", plain(settings.gateway_secret))
    refuse_placeholder(f"{ENV_PREFIX}SIGNING_KEY_PASSWORD", plain(settings.signing_key_password))
    refuse_placeholder(f"{ENV_PREFIX}REDIS_SENTINEL_PASSWORD", plain(settings.redis_sentinel_password))
    console_user, sep, console_password = (plain(settings.console_basic_auth) or "").partition(":")
    if sep:
        refuse_placeholder(f"{ENV_PREFIX}CONSOLE_BASIC_AUTH", console_password,
                           f"has a placeholder password for user {console_user!r}")
    for pair in (plain(settings.flower_basic_auth) or "").split(","):
        user, sep, password = pair.strip().partition(":")
        if sep:
            refuse_placeholder(f"{ENV_PREFIX}FLOWER_BASIC_AUTH", password,
                               f"has a placeholder password for user {user!r}")
    urls = {f"{ENV_PREFIX}REDIS_URL": settings.redis_url,
            **{f"{ENV_PREFIX}SERVICE_REDIS_URLS[{svc}]": url for svc, url in settings.service_redis_urls.items()}}
    for name, url in urls.items():
        if url:
            refuse_placeholder(name, urlsplit(url).password, "has a placeholder Redis password")


_SIGNING_FILES = ("signing_key", "signing_cert", "signing_cert_store")


def check_signing_files(settings: Settings) -> None:
    """Raise :class:`ConfigurationError` when message signing is configured in part, or a file of it cannot
    be read. Whether the files hold a usable key and certificates is :mod:`meetingtasks.core.signing`'s check."""
    given = [name for name in _SIGNING_FILES if getattr(settings, name) is not None]
    if settings.signing_key_password is not None and "signing_key" not in given:
        given.append("signing_key_password")
    if not given:
        return
    missing = [name for name in _SIGNING_FILES if getattr(settings, name) is None]
    if missing:
        raise ConfigurationError(
            f"message signing is configured in part: missing {', '.join(ENV_PREFIX + m.upper() for m in missing)} "
            f"(set {', '.join(ENV_PREFIX + m.upper() for m in _SIGNING_FILES)} together, or none)"
        )
    for name in ("signing_key", "signing_cert"):
        path: Path = getattr(settings, name)
        if not path.is_file() or not os.access(path, os.R_OK):
            why = "not a readable file" if path.exists() else "no such file"
            raise ConfigurationError(f"{ENV_PREFIX}{name.upper()}={path}: {why}")
    store: Path = settings.signing_cert_store  # type: ignore[assignment]
    if not store.is_dir() or not os.access(store, os.R_OK | os.X_OK):
        why = "not a readable directory" if store.exists() else "no such directory"
        raise ConfigurationError(f"{ENV_PREFIX}SIGNING_CERT_STORE={store}: {why}")
    if not any(entry.is_file() for entry in store.iterdir()):
        raise ConfigurationError(
            f"{ENV_PREFIX}SIGNING_CERT_STORE={store}: no certificate in the directory (workers would trust no one)"
        )


def load_settings(**overrides: Any) -> Settings:
    """Build :class:`Settings`, turning any validation failure into a one-line :class:`ConfigurationError`."""
    try:
        return Settings(**overrides)
    except (ValidationError, SettingsError) as exc:
        raise ConfigurationError(settings_error_line(Settings, exc)) from None


_SOURCE_FIELD = re.compile(r'field "([^"]+)"')


def settings_error_line(model: type[BaseModel], exc: ValidationError | SettingsError) -> str:
    """The one line of a settings class's refusal: the variable, the reason and what was given, rendered by
    :func:`shown_value` (a URL's password and a secret setting never appear: the line goes to terminals and
    logs). A value that is not JSON where JSON is read (pydantic-settings' ``SettingsError``) is said so."""
    if isinstance(exc, SettingsError):
        match = _SOURCE_FIELD.search(str(exc))
        field = match.group(1) if match else "settings"
        return f"{ENV_PREFIX}{field.upper()}: not valid JSON (this setting is read as JSON, e.g. " \
               f"{_JSON_EXAMPLES.get(field, '[...] or {...}')})"
    first = exc.errors()[0]
    loc = [str(p) for p in first["loc"]]
    field = ".".join(loc) or "settings"
    line = f"{ENV_PREFIX}{field.upper()}: {redact_text(first['msg'])}"
    value = first.get("input")
    shown = shown_value(model, loc[0] if loc else "", value)
    # A refused URL is named by the reason already (redacted): not printed twice.
    said = shown is None or shown in line or (isinstance(value, str) and redact_text(value) in line)
    return line if said else f"{line} (got {shown})"


_JSON_EXAMPLES = {"service_redis_urls": '{"ai": "redis://ai-redis:6379/0"}'}


def shown_value(model: type[BaseModel], field: str, value: Any) -> str | None:
    """How the rejected ``value`` of ``field`` may be shown in an error: its repr with the password of every URL
    in it masked; ``None`` (not shown at all) for a secret setting (a ``SecretStr`` field)."""
    info = model.model_fields.get(field)
    if info is not None and "SecretStr" in repr(info.annotation):
        return None
    return redact_text(repr(value))
