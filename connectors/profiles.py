"""Load a policy profile by name (shipped: baseline, provincial) or from a YAML file."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from alerts.profile import Profile, ProfileError, profile_from_mapping

SHIPPED = ("baseline", "provincial")


def load_profile(name_or_path: str | None) -> Profile:
    name = name_or_path or "baseline"
    if name in SHIPPED:
        text = resources.files("alerts").joinpath(f"profiles/{name}.yaml").read_text("utf-8")
        origin = f"profile {name!r}"
    else:
        path = Path(name)
        if not path.exists():
            raise ProfileError(
                f"profile {name!r}: not a shipped profile ({', '.join(SHIPPED)}) and no such file"
            )
        text = path.read_text("utf-8")
        origin = str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ProfileError(f"{origin}: not valid YAML ({err})") from None
    return profile_from_mapping(data, origin=origin)
