"""The department directory: who receives which alerts, over which channels.

A YAML file (env ``BUDGETWATCH_DEPARTMENTS``)::

    default:                 # departments not listed below
      name: 财政局绩效科
      email: [jxk@czj.example.gov.cn]
    escalation:              # the bureau gets a copy of these severities
      name: 财政局绩效科（预警升级）
      severities: [critical]
      dingtalk: {url: "https://oapi.dingtalk.com/robot/send?access_token=…", secret: "SEC…"}
    departments:
      "101":
        name: 教育局
        webhook: https://oa.example.gov.cn/hooks/budget
        dingtalk: {url: "https://oapi.dingtalk.com/robot/send?access_token=…", secret: "SEC…"}
        wecom: https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…
        email: [cw@jyj.example.gov.cn]

Validation errors name the file and the field and say what to change.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from budget.events import problem_zh

CHANNELS = ("webhook", "dingtalk", "wecom", "email")
DEFAULT = "default"
ESCALATION = "escalation"
_EMAIL = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$")


class DirectoryError(ValueError):
    """The department directory cannot be used; the message says where and what to fix."""


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{value!r} 不是 http(s) 地址，应形如 https://host/path")
    return value


class DingTalkRobot(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(
        description="robot webhook, https://oapi.dingtalk.com/robot/send?access_token=…"
    )
    secret: str | None = Field(default=None, description="加签 secret (SEC…); None when unsigned")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)


class Contact(BaseModel):
    """One recipient (a department, the default contact or the bureau) and its channels."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    webhook: str | None = None
    dingtalk: DingTalkRobot | None = None
    wecom: str | None = None
    email: tuple[str, ...] = ()

    @field_validator("webhook", "wecom")
    @classmethod
    def _urls(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value)

    @field_validator("webhook")
    @classmethod
    def _not_a_robot(cls, value: str | None) -> str | None:
        # A robot answers HTTP 200 with an errcode to the generic webhook's JSON: the
        # delivery was recorded as done and nothing reached the group.
        host = urlsplit(value).hostname or "" if value else ""
        if host == "oapi.dingtalk.com":
            raise ValueError("这是钉钉机器人地址，请写在 dingtalk: {url: …, secret: …} 下，而不是 webhook")
        if host == "qyapi.weixin.qq.com":
            raise ValueError("这是企业微信机器人地址，请写在 wecom: 下，而不是 webhook")
        return value

    @field_validator("email", mode="before")
    @classmethod
    def _emails(cls, value: Any) -> Any:
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        for address in value:
            if not isinstance(address, str) or not _EMAIL.match(address):
                raise ValueError(f"{address!r} 不是有效的邮箱地址")
        return value

    def channels(self) -> list[str]:
        """The configured channel names, in a fixed order."""
        found = []
        if self.webhook:
            found.append("webhook")
        if self.dingtalk:
            found.append("dingtalk")
        if self.wecom:
            found.append("wecom")
        if self.email:
            found.append("email")
        return found


class Escalation(Contact):
    severities: tuple[Literal["warning", "critical"], ...] = ("critical",)

    def wants(self, transition: dict[str, Any]) -> bool:
        """The bureau gets transitions of an alert at (or leaving) an escalated severity,
        and every alert whose disposition is overdue (the disposition loop's escalation)."""
        return (
            transition.get("transition") == "disposition_overdue"
            or transition.get("severity") in self.severities
            or transition.get("previous_severity") in self.severities
        )


class Directory(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    departments: dict[str, Contact] = Field(default_factory=dict)
    default: Contact | None = None
    escalation: Escalation | None = None

    @model_validator(mode="before")
    @classmethod
    def _string_keys(cls, data: Any) -> Any:
        # YAML reads `101:` as an int; department ids are strings.
        if isinstance(data, dict) and isinstance(data.get("departments"), dict):
            data = dict(data)
            data["departments"] = {str(k): v for k, v in data["departments"].items()}
        return data

    def route(self, department_id: str) -> tuple[str, Contact | None]:
        """(recipient key, contact) for a department: its own entry, else the default."""
        contact = self.departments.get(department_id)
        if contact is not None:
            return department_id, contact
        return DEFAULT, self.default

    def contact(self, recipient: str) -> Contact | None:
        if recipient == DEFAULT:
            return self.default
        if recipient == ESCALATION:
            return self.escalation
        return self.departments.get(recipient)

    def recipients(self, transition: dict[str, Any]) -> list[tuple[str, Contact | None]]:
        """Who gets this transition: the department (or default) and maybe the bureau."""
        found = [self.route(str(transition.get("department_id", "")))]
        if self.escalation is not None and self.escalation.wants(transition):
            found.append((ESCALATION, self.escalation))
        return found


def _explain(err: ValidationError, origin: str) -> str:
    lines = [f"{origin}: 部门目录无效，请按提示修改该文件后重试："]
    for item in err.errors(include_url=False):
        loc = [str(p) for p in item["loc"]]
        where = ".".join(loc) or "(顶层)"
        kind, msg = item["type"], str(item["msg"]).removeprefix("Value error, ")
        if kind == "extra_forbidden":
            msg = f"未知字段；允许的字段见 README「Notifications」（channels: {', '.join(CHANNELS)}）"
        elif kind == "missing":
            msg = "缺少必填字段"
        elif loc and loc[-1] == "dingtalk" and kind in ("model_type", "dict_type", "model_attributes_type"):
            msg = "钉钉机器人应写作 {url: https://oapi.dingtalk.com/robot/send?access_token=…, secret: SEC…}"
        elif loc and loc[-1] == "wecom" and kind == "string_type":
            msg = "企业微信机器人应写作一个地址：https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…"
        elif kind != "value_error":  # this module's own checks are in Chinese already
            msg = f"{problem_zh(kind, item.get('ctx'), msg)}（{msg}）"
        lines.append(f"  - {where}: {msg}")
    return "\n".join(lines)


_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_environment(data: Any, origin: str, environ: Mapping[str, str]) -> Any:
    """``${NAME}`` in any text of the directory is the environment variable NAME: robot
    tokens and secrets need not sit in a file that is copied around."""
    if isinstance(data, str):
        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in environ:
                raise DirectoryError(f"{origin}: 引用的环境变量 {name} 未设置（${{{name}}}）；请设置后重试")
            return environ[name]
        return _ENV_REFERENCE.sub(value, data)
    if isinstance(data, dict):
        return {k: expand_environment(v, origin, environ) for k, v in data.items()}
    if isinstance(data, list):
        return [expand_environment(v, origin, environ) for v in data]
    return data


def parse_directory(data: Any, *, origin: str = "<directory>") -> Directory:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise DirectoryError(
            f"{origin}: 部门目录应为 YAML 映射（含 departments / default / escalation），"
            f"实际是 {type(data).__name__}"
        )
    try:
        return Directory.model_validate(data)
    except ValidationError as err:
        raise DirectoryError(_explain(err, origin)) from None


def load_directory(path: str | Path) -> Directory:
    """Read and validate a directory file; errors name the file and the field."""
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise DirectoryError(
            f"{path}: 部门目录文件不存在；请检查 BUDGETWATCH_DEPARTMENTS 或 --departments 的路径"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise DirectoryError(
            f"{path}: 无法读取部门目录（{err}）；请确认文件为 UTF-8 编码且可读"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = " ".join(str(err).split())
        raise DirectoryError(f"{path}: 不是有效的 YAML（{where}）；请修正语法") from None
    return parse_directory(expand_environment(data, str(path), os.environ), origin=str(path))
