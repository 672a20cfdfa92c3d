"""Load a policy profile by name (shipped: baseline, provincial) or from a YAML file.

A profile's ``disposition.calendar`` may name a shipped holiday calendar
(``cn-mainland``) or a YAML file (relative to the profile's own file); it is read
here and handed to the pure model as data."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from alerts.profile import Profile, ProfileError, profile_from_mapping

SHIPPED = ("baseline", "provincial")
SHIPPED_CALENDARS = ("cn-mainland",)


def load_profile(name_or_path: str | None) -> Profile:
    name = name_or_path or "baseline"
    base: Path | None = None
    if name in SHIPPED:
        text = resources.files("alerts").joinpath(f"profiles/{name}.yaml").read_text("utf-8")
        origin = f"profile {name!r}"
    else:
        path = Path(name)
        if not path.exists():
            raise ProfileError(
                f"找不到策略 {name!r}：既不是内置策略（{', '.join(SHIPPED)}），也没有这个文件"
                f"（profile {name!r}: not a shipped profile and no such file）"
            )
        text = path.read_text("utf-8")
        origin = str(path)
        base = path.parent
    data = _yaml(text, origin)
    if isinstance(data, dict):
        disposition = data.get("disposition")
        if isinstance(disposition, dict) and isinstance(disposition.get("calendar"), str):
            calendar = _load_calendar(disposition["calendar"], base, origin)
            data = {**data, "disposition": {**disposition, "calendar": calendar}}
    return profile_from_mapping(data, origin=origin)


def _yaml(text: str, origin: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = " ".join(str(err).split())  # PyYAML's report spans lines; an error is one
        raise ProfileError(f"{origin}：不是有效的 YAML（not valid YAML: {where}）") from None
    except ValueError as err:
        # PyYAML builds an unquoted date as it reads: 2027-02-30 fails inside safe_load.
        raise ProfileError(
            f"{origin}：含有不存在的日期（{err}），如 2027-02-30；请改为实际日期（a date that does not exist）"
        ) from None


def _load_calendar(name: str, base: Path | None, origin: str) -> Any:
    if name in SHIPPED_CALENDARS:
        text = resources.files("alerts").joinpath(f"calendars/{name}.yaml").read_text("utf-8")
        return _yaml(text, f"calendar {name!r}")
    path = Path(name)
    if base is not None and not path.is_absolute():
        path = base / path
    if not path.exists():
        raise ProfileError(
            f"{origin}：disposition.calendar {name!r} 既不是内置日历（{', '.join(SHIPPED_CALENDARS)}），"
            f"也找不到文件 {path}（neither a shipped calendar nor a file）"
        )
    return _yaml(path.read_text("utf-8"), str(path))
