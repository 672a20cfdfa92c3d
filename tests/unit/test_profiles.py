from pathlib import Path

import pytest

from alerts.profile import ProfileError
from connectors.profiles import load_profile
from tests.builders import day


def test_shipped_profiles() -> None:
    baseline = load_profile("baseline")
    assert [(f.checkpoint, f.floor) for f in baseline.low_execution.floors] == [("06-30", 0.30)]
    assert baseline.progress_gap.gap == 0.20 and baseline.behind_schedule.lag == 0.20
    assert baseline.stalled.days == 90
    provincial = load_profile("provincial")
    assert [(f.checkpoint, f.floor) for f in provincial.low_execution.floors] == [
        ("04-30", 0.25), ("06-30", 0.40), ("08-31", 0.60), ("10-31", 0.80)]
    assert provincial.progress_gap.gap == 0.10


def test_floor_in_force() -> None:
    provincial = load_profile("provincial")
    assert provincial.floor_on(day("2025-04-29"), 2025) is None
    assert provincial.floor_on(day("2025-04-30"), 2025).floor == 0.25  # type: ignore[union-attr]
    assert provincial.floor_on(day("2025-09-01"), 2025).floor == 0.60  # type: ignore[union-attr]


def test_a_user_profile_file(tmp_path: Path) -> None:
    path = tmp_path / "county.yaml"
    path.write_text('name: county\nlow_execution:\n  floors:\n    - {checkpoint: "09-30", floor: 0.6}\n', "utf-8")
    profile = load_profile(str(path))
    assert profile.name == "county"
    assert profile.low_execution.floors[0].severity == "critical"
    assert profile.stalled.days == 90  # defaults for what the file leaves out


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("name: x\nlow_execution: {floors: [{checkpoint: '6/30', floor: 0.3}]}", "MM-DD"),
        ("name: x\nprogress_gap: {gap: 2}", "progress_gap.gap"),
        ("name: x\nstalled: {dayz: 3}", "stalled.dayz"),
        ("name: x\nlow_execution: {floors: [{checkpoint: '08-31', floor: 0.6}, {checkpoint: '06-30', floor: 0.3}]}",
         "date order"),
        ("- just a list", "mapping"),
        ("name: [unclosed", "not valid YAML"),
    ],
)
def test_bad_profiles_name_the_problem(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, "utf-8")
    with pytest.raises(ProfileError) as caught:
        load_profile(str(path))
    assert reason in str(caught.value)
    assert str(path) in str(caught.value)


def test_unknown_profile_name() -> None:
    with pytest.raises(ProfileError, match="not a shipped profile"):
        load_profile("nationwide")
