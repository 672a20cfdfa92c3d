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

import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(顶层)"
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = (
                f"未知字段；允许的字段见 README「Notifications」（channels: {', '.join(CHANNELS)}）"
            )
        elif item["type"] == "missing":
            msg = "缺少必填字段"
        lines.append(f"  - {where}: {msg}")
    return "\n".join(lines)


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
        raise DirectoryError(f"{path}: 不是有效的 YAML（{err}）；请修正语法") from None
    return parse_directory(data, origin=str(path))
