"""The department directory: validation with clear errors, routing."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.directory import DirectoryError, load_directory, parse_directory

GOOD = """
default:
  name: 财政局绩效科
  email: jxk@czj.example.gov.cn
escalation:
  name: 财政局（升级）
  severities: [critical]
  dingtalk: {url: "https://oapi.dingtalk.com/robot/send?access_token=A", secret: SEC1}
departments:
  101:
    name: 教育局
    webhook: https://oa.example/hook
    wecom: https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=K
    email: [a@jyj.example, b@jyj.example]
  D102:
    name: 卫健委
"""


def test_good_directory_loads_and_routes(tmp_path: Path) -> None:
    path = tmp_path / "departments.yaml"
    path.write_text(GOOD, encoding="utf-8")
    d = load_directory(path)
    assert set(d.departments) == {"101", "D102"}  # YAML ints become string ids
    assert d.departments["101"].channels() == ["webhook", "wecom", "email"]
    assert d.default is not None and d.default.email == ("jxk@czj.example.gov.cn",)
    assert d.route("101")[0] == "101"
    assert d.route("unknown") == ("default", d.default)
    critical = {"department_id": "101", "severity": "critical", "previous_severity": None}
    warning = {"department_id": "101", "severity": "warning", "previous_severity": None}
    leaving = {"department_id": "101", "severity": "warning", "previous_severity": "critical"}
    assert [r for r, _ in d.recipients(critical)] == ["101", "escalation"]
    assert [r for r, _ in d.recipients(warning)] == ["101"]
    assert [r for r, _ in d.recipients(leaving)] == ["101", "escalation"]


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        (
            "departments:\n  '1': {name: 教育局, webhook: ftp://x}",
            "departments.1.webhook",
            "http(s)",
        ),
        (
            "departments:\n  '1': {name: 教育局, email: [not-an-address]}",
            "departments.1.email",
            "邮箱",
        ),
        ("departments:\n  '1': {webhook: 'https://x/y'}", "departments.1.name", "缺少必填字段"),
        ("departments:\n  '1': {name: a, slack: 'https://x'}", "departments.1.slack", "未知字段"),
        ("escalation: {name: b, severities: [urgent]}", "escalation.severities.0", "warning"),
        (
            "default: {name: c, dingtalk: {url: 'https://d/x', token: t}}",
            "default.dingtalk.token",
            "未知字段",
        ),
    ],
)
def test_errors_name_the_file_and_the_field(
    tmp_path: Path, text: str, where: str, what: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DirectoryError) as err:
        load_directory(path)
    message = str(err.value)
    assert str(path) in message
    assert where in message
    assert what in message
    assert "请" in message  # says what to do


def test_unreadable_or_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(DirectoryError, match="不存在"):
        load_directory(tmp_path / "missing.yaml")
    (tmp_path / "x.yaml").write_text("departments: [\n", encoding="utf-8")
    with pytest.raises(DirectoryError, match="YAML"):
        load_directory(tmp_path / "x.yaml")
    with pytest.raises(DirectoryError, match="映射"):
        parse_directory(["a"], origin="list.yaml")


def test_the_shipped_example_is_valid() -> None:
    d = load_directory(Path(__file__).resolve().parents[2] / "examples" / "departments.yaml")
    assert d.escalation is not None and d.default is not None
    assert all(c.channels() for c in d.departments.values())


@pytest.mark.parametrize(
    ("contact", "expected"),
    [
        ({"name": "教育局", "dingtalk": "https://oapi.dingtalk.com/robot/send?access_token=T"},
         "钉钉机器人应写作 {url: "),
        ({"name": "教育局", "wecom": {"url": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=K"}},
         "企业微信机器人应写作一个地址"),
        ({"name": "教育局", "webhook": "https://oapi.dingtalk.com/robot/send?access_token=T"},
         "这是钉钉机器人地址，请写在 dingtalk:"),
        ({"name": "教育局", "webhook": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=K"},
         "这是企业微信机器人地址，请写在 wecom:"),
        ({"name": "", "webhook": "https://hooks.example/x"}, "departments.D1.name: 不能为空"),
        ({"name": "教育局", "webhook": "ftp://x"}, "'ftp://x' 不是 http(s) 地址"),
    ],
)
def test_directory_mistakes_are_explained_in_chinese(contact: dict[str, object], expected: str) -> None:
    with pytest.raises(DirectoryError) as caught:
        parse_directory({"departments": {"D1": contact}})
    assert expected in str(caught.value) and "Value error" not in str(caught.value)


def test_secrets_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "d.yaml"
    path.write_text("departments:\n  D1:\n    name: 教育局\n    dingtalk:\n"
                    "      url: https://oapi.dingtalk.com/robot/send?access_token=${DING_TOKEN}\n"
                    "      secret: ${DING_SECRET}\n", "utf-8")
    monkeypatch.setenv("DING_TOKEN", "tok123")
    monkeypatch.delenv("DING_SECRET", raising=False)
    with pytest.raises(DirectoryError, match=r"引用的环境变量 DING_SECRET 未设置"):
        load_directory(path)
    monkeypatch.setenv("DING_SECRET", "SEC456")
    robot = load_directory(path).departments["D1"].dingtalk
    assert robot is not None and robot.url.endswith("access_token=tok123") and robot.secret == "SEC456"
