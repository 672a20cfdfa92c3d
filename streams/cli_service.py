"""`budgetwatch serve`: registers the long-running service on the CLI app."""

from __future__ import annotations

import socket
from typing import Annotated, Any

import typer
from aiohttp import web
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams import board, render
from streams.cli import DbOption, ProfileOption, app, log_to_stderr, open_engine, settings
from streams.errors import BudgetwatchError
from streams.service import Service, build_app, optional_workers


class ServiceSettings(BaseSettings):
    """Settings only `serve` reads (the shared ones are in streams.settings)."""

    model_config = SettingsConfigDict(extra="ignore")

    http_host: str = Field(
        default="127.0.0.1", validation_alias=AliasChoices("BUDGETWATCH_HTTP_HOST"),
        description="address `budgetwatch serve` listens on",
    )
    grafana_url: str | None = Field(
        default=None, validation_alias=AliasChoices("GRAFANA_URL"),
        description="Grafana base URL; alert transitions become annotations when set",
    )
    grafana_token: str | None = Field(
        default=None, validation_alias=AliasChoices("GRAFANA_TOKEN"),
        description="Grafana service-account token (annotations:write)",
    )


PORT_HELP = "HTTP port (env BUDGETWATCH_HTTP_PORT; default 8080)"
HOST_HELP = "listen address (env BUDGETWATCH_HTTP_HOST; default 127.0.0.1)"
LIVE_HELP = "wall-clock time: close business days as the calendar moves (default: event time)"
TICK_HELP = "--live: seconds between checks of the wall clock"


@app.command("serve")
def serve_cmd(
    port: Annotated[int | None, typer.Option("--port", help=PORT_HELP)] = None,
    host: Annotated[str | None, typer.Option("--host", help=HOST_HELP)] = None,
    db: DbOption = None,
    profile: ProfileOption = None,
    live: Annotated[bool, typer.Option("--live", help=LIVE_HELP)] = False,
    tick: Annotated[float, typer.Option("--tick", min=0.1, help=TICK_HELP)] = 60.0,
    departments: Annotated[
        str | None,
        typer.Option("--departments", help="department directory YAML for notifications [env BUDGETWATCH_DEPARTMENTS]"),
    ] = None,
) -> None:
    """Serve HTTP ingest, continuous processing, /metrics and the JSON API."""
    log_to_stderr()
    extra = ServiceSettings()
    listen_host = host or extra.http_host
    listen_port = port if port is not None else settings().http_port
    # Bound before anything is processed: a serve that cannot listen must not have moved
    # the store's business clock on its way out.
    listeners = _listen(listen_host, listen_port)
    listen_port = listeners[0].getsockname()[1]  # the real one when --port 0
    try:
        engine = open_engine(db, profile)
        service = Service(engine, live=live, tick_seconds=tick)
        service.prepare()
    except BaseException:
        for listener in listeners:
            listener.close()
        raise
    application = build_app(
        service,
        routes=[board.register],  # the warning board; users from BUDGETWATCH_USERS
        workers=optional_workers(
            service, grafana_url=extra.grafana_url, grafana_token=extra.grafana_token,
            departments=departments,
        ),
    )
    mode = "实时时钟" if live else "事件时间"
    grafana = "，Grafana 注释已开启" if extra.grafana_url else ""
    render.console().print(
        f"budgetwatch 服务：http://{listen_host}:{listen_port} "
        f"（{mode}；数据库 {engine.store.path}）{grafana}；Ctrl+C 停止",
        highlight=False,
    )
    try:
        web.run_app(application, sock=listeners, print=None, access_log=None)
    finally:
        service.close()
        engine.store.close()


def _listen(host: str, port: int) -> list[socket.socket]:
    """Sockets on every address ``host`` resolves to (localhost: ::1 and 127.0.0.1), as
    aiohttp would bind them itself."""
    listeners: list[socket.socket] = []
    try:
        seen: set[tuple[int, Any]] = set()
        for family, kind, proto, _, address in socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        ):
            if (family, address) in seen:
                continue
            seen.add((family, address))
            listener = socket.socket(family, kind, proto)
            listeners.append(listener)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            listener.bind((address[0], port, *address[2:]))  # once picked, one port for all
            listener.listen(128)
            if port == 0:  # the port the system picked for the first address
                port = listener.getsockname()[1]
    except OSError as err:
        for listener in listeners:
            listener.close()
        raise BudgetwatchError(
            f"无法在 {host}:{port} 上监听（{err.strerror or err}）："
            "端口可能已被占用，请换一个 --port 或设置 BUDGETWATCH_HTTP_PORT；数据库未被改动"
        ) from None
    return listeners
