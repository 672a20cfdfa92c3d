"""Runtime settings (pydantic-settings): every setting has an env name and a default."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BUDGETWATCH_", extra="ignore")

    db: str = Field(default="budgetwatch.db", description="SQLite store of the embedded engine")
    profile: str = Field(default="baseline", description="policy profile: a shipped name or a YAML file")
    commit_every: int = Field(default=100_000, gt=0, description="events between engine commits")
    http_port: int = Field(default=8080, description="port of `budgetwatch serve`")
    kafka_bootstrap: str = Field(default="localhost:9092", description="Kafka bootstrap servers")
    partitions: int = Field(default=8, gt=0, description="partitions of budget-events")
    replication_factor: int = Field(default=1, gt=0, description="replication of the topics")
    store: str = Field(default="memory://", description="Faust table store: memory:// or rocksdb://")
    web_port: int = Field(default=6066, description="Faust worker web port (/metrics)")
