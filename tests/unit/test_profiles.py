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
    assert profile.disposition.calendar is None  # no calendar named: deadlines count Mon–Fri
    assert not profile.work_calendar.holidays
    assert profile.uncovered_calendar_years(day("2020-01-01"), day("2030-12-31")) == []


def test_shipped_profiles_count_deadlines_on_the_national_calendar() -> None:
    for name in ("baseline", "provincial"):
        profile = load_profile(name)
        assert profile.disposition.calendar is not None and profile.disposition.calendar.name == "cn-mainland"
        assert not profile.work_calendar.is_working_day(day("2025-10-08"))  # National Day week
        assert profile.work_calendar.is_working_day(day("2025-10-11"))  # a make-up Saturday
        assert profile.uncovered_calendar_years(day("2025-01-02"), day("2026-06-30")) == []
        assert profile.uncovered_calendar_years(day("2025-01-02"), day("2027-01-04")) == [2027]
        # a deadline set on 2026-12-31 counts days of 2027; a backfill from 2024 counts 2024's
        assert profile.uncovered_calendar_years(day("2026-12-01"), day("2026-12-31")) == [2027]
        assert profile.uncovered_calendar_years(day("2024-11-01"), day("2025-03-31")) == [2024]


def test_a_user_calendar_file_next_to_the_profile(tmp_path: Path) -> None:
    (tmp_path / "local.yaml").write_text(
        "name: local\nyears:\n  2027:\n    holidays: [2027-01-01, '2027-02-05..2027-02-11']\n"
        "    workdays: [2027-02-20]\n", "utf-8")
    path = tmp_path / "county.yaml"
    path.write_text("name: county\ndisposition: {deadline_working_days: 5, calendar: local.yaml}\n", "utf-8")
    profile = load_profile(str(path))
    calendar = profile.work_calendar
    assert calendar.covers(2027) and not calendar.covers(2025)
    assert len(calendar.holidays) == 8 and calendar.is_working_day(day("2027-02-20"))
    assert calendar.add_working_days(day("2027-02-04"), 1) == day("2027-02-12")
    assert profile.uncovered_calendar_years(day("2027-03-01"), day("2027-06-30")) == []


@pytest.mark.parametrize(
    ("calendar", "reason"),
    [
        ("years: {2025: {workdays: [2025-10-09]}}", "is a weekday already"),
        ("years: {2025: {holidays: [2026-01-01]}}", "is not in 2025"),
        ("years: {2025: {holidays: ['2025-10-08..2025-10-01']}}", "ends before it starts"),
        ("years: {2025: {holidays: ['10/01']}}", "not a date or a YYYY-MM-DD..YYYY-MM-DD range"),
        ("years: {2025: {holidays: [2025-10-11], workdays: [2025-10-11]}}", "both a holiday and a working day"),
    ],
)
def test_bad_calendars_name_the_problem(tmp_path: Path, calendar: str, reason: str) -> None:
    (tmp_path / "cal.yaml").write_text(calendar, "utf-8")
    path = tmp_path / "p.yaml"
    path.write_text("name: p\ndisposition: {calendar: cal.yaml}\n", "utf-8")
    with pytest.raises(ProfileError) as caught:
        load_profile(str(path))
    assert reason in str(caught.value) and "disposition.calendar" in str(caught.value)


def test_a_missing_calendar_is_named(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("name: p\ndisposition: {calendar: cn-atlantis}\n", "utf-8")
    with pytest.raises(ProfileError, match="neither a shipped calendar"):
        load_profile(str(path))
@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("name: x\nlow_execution: {floors: [{checkpoint: '6/30', floor: 0.3}]}", "MM-DD"),
        ("name: x\nlow_execution: {floors: [{checkpoint: '06-31', floor: 0.3}]}", "'06-31' is not a day of the year"),
        ("name: x\nlow_execution: {floors: [{checkpoint: '02-30', floor: 0.3}]}", "not a day of the year"),
        ("name: x\nprogress_gap: {gap: 2}", "progress_gap.gap"),
        ("name: x\nstalled: {dayz: 3}", "stalled.dayz"),
        ("name: x\nlow_execution: {floors: [{checkpoint: '08-31', floor: 0.6}, {checkpoint: '06-30', floor: 0.3}]}",
         "date order"),
        ("- just a list", "mapping"),
        ("name: [unclosed", "不是有效的 YAML（not valid YAML"),
        ("name: x\ndescription: 2025-02-30", "不存在的日期"),
        # Chinese first, in the words of event rejections
        ("name: x\nprogress_gap: {gap: 2}", "progress_gap.gap：应不大于 1.0（progress_gap.gap: "),
        ("name: x\nstalled: {dayz: 3}", "stalled.dayz 不是可用的设置项，请检查拼写"),
        ("name: x\nbehind_schedule: {severity: fatal}",
         "behind_schedule.severity：取值应为 'warning'、'critical' 之一"),
        ("name: x\nlow_execution: {floors: [{checkpoint: '6/30', floor: 0.3}]}",
         "low_execution.floors.0.checkpoint：检查点 '6/30' 应写作 月-日"),
        ("- just a list", "策略文件应为“设置项: 值”的映射"),
    ],
)
def test_bad_profiles_name_the_problem(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, "utf-8")
    with pytest.raises(ProfileError) as caught:
        load_profile(str(path))
    assert reason in str(caught.value)
    assert str(caught.value).startswith(f"{path}：")
    assert "\n" not in str(caught.value)


def test_unknown_profile_name() -> None:
    with pytest.raises(ProfileError, match="not a shipped profile"):
        load_profile("nationwide")

