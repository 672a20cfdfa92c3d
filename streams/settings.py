"""Runtime settings (pydantic-settings): every setting has an env name and a default."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BUDGETWATCH_", extra="ignore")

    db: str = Field(default="budgetwatch.db", description="SQLite store of the embedded engine")
    profile: str = Field(default="baseline", description="policy profile: a shipped name or a YAML file")
    commit_every: int | None = Field(
        default=None,
        gt=0,
        description="events between engine commits; unset: 100,000, or 10 per tracked project if more",
    )
    synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL",
        description="SQLite durability of ingest: FULL survives a power cut; NORMAL only a process crash",
    )
    http_port: int = Field(default=8080, ge=1, le=65535, description="port of `budgetwatch serve`")
    kafka_bootstrap: str = Field(default="localhost:9092", description="Kafka bootstrap servers")
    partitions: int = Field(default=8, gt=0, description="partitions of budget-events")
    replication_factor: int = Field(default=1, gt=0, description="replication of the topics")
    store: str = Field(default="memory://", description="Faust table store: memory:// or rocksdb://")
    web_port: int = Field(default=6066, ge=1, le=65535, description="Faust worker web port (/metrics)")
    web_bind: str = Field(default="127.0.0.1", description="Faust web address (0.0.0.0 in Docker)")

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        bootstrap_servers(value)
        return value

    clock: str = Field(
        default="wall",
        pattern="^(wall|off)$",
        description="Faust clock: wall (the leader ticks today) or off (ticks only from the log)",
    )
    clock_interval: float = Field(default=60.0, gt=0, description="seconds between clock ticks")
    timezone: str = Field(default="Asia/Shanghai", description="time zone of the wall clock")
    dedup_days: int = Field(default=400, gt=0, description="Faust: days of event ids kept per project")
    # notifications and Alertmanager (streams/outbox.py)
    departments: str | None = Field(default=None, description="department directory YAML")
    alertmanager_url: str | None = Field(default=None, description="Alertmanager base URL")
    alertmanager_interval: float = Field(default=60.0, gt=0, description="seconds between re-sends")
    board_url: str | None = Field(
        default=None, pattern=r"^https?://[^\s/]+",
        description="the board's public address (https://budget.example.gov.cn): alerts pushed "
        "to Alertmanager link to their page there (generatorURL)",
    )
    smtp_host: str | None = Field(default=None, description="SMTP server for email notifications")
    smtp_port: int = Field(default=25, ge=1, le=65535, description="SMTP port")
    smtp_user: str | None = Field(default=None, description="SMTP user (optional)")
    smtp_password: str | None = Field(default=None, description="SMTP password (optional)")
    smtp_from: str = Field(default="budgetwatch@localhost", description="sender address")
    smtp_starttls: bool = Field(default=False, description="STARTTLS after connecting")
    smtp_tls: bool = Field(default=False, description="implicit TLS (port 465)")
    deliver_interval: float = Field(default=2.0, gt=0, description="seconds between outbox polls")
    delivery_max_attempts: int = Field(default=20, gt=0, description="then a delivery fails")
    delivery_backoff: float = Field(default=30.0, gt=0, description="first retry delay (doubles)")
    delivery_backoff_max: float = Field(default=3600.0, gt=0, description="longest retry delay")
    notify_timeout: float = Field(default=10.0, gt=0, description="HTTP/SMTP timeout per request")
    @model_validator(mode="after")
    def _one_kind_of_tls(self) -> Settings:
        if self.smtp_tls and self.smtp_starttls:
            raise ValueError(
                "BUDGETWATCH_SMTP_TLS 与 BUDGETWATCH_SMTP_STARTTLS 只能设一个：端口 465 用 TLS，"
                "端口 587/25 用 STARTTLS（smtp_tls and smtp_starttls exclude each other）"
            )
        return self

    notify_horizon_days: int = Field(
        default=30, ge=0,
        description="notify only transitions dated within this many days of the business clock "
        "(older ones — a backfilled history — stay in alerts --all, unsent); 0 = every transition",
    )


def bootstrap_servers(text: str) -> list[str]:
    """``host:port[,host:port…]`` as a list, each checked: kafka-python and Faust fail on a
    bad one with a traceback (a ValueError deep in the client) or after a long wait."""
    servers = [part.strip() for part in text.split(",") if part.strip()]
    if not servers:
        raise ValueError("Kafka 地址为空：应为 host:port，多个用逗号分隔（no bootstrap server）")
    for server in servers:
        host, sep, port = server.rpartition(":")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(
                f"Kafka 地址 {server!r} 应为 host:port，端口 1–65535，如 kafka:9092（not host:port）"
            )
    return servers
