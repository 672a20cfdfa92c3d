"""End to end in a real headless Chromium (Debian `chromium`, driven by Playwright):
a department logs in, sees only its alerts and records a disposition; the bureau sees it;
the board drops an alert without reload when a payment clears it. Screenshots of the main
pages go to tests/artifacts/ (gitignored)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import yaml

from streams.auth import hash_secret
from tests.board_helpers import ALERT_EDU, ALERT_HEALTH, PASSWORDS, TOKENS, prepare
from tests.integration.serve_process import serve

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="no /usr/bin/chromium: install Debian's chromium (apt-get install chromium)"
)


@pytest.fixture()
def board_url(tmp_path: Path) -> Iterator[str]:
    prepare(tmp_path / "serve.db")
    users = tmp_path / "users.yaml"
    users.write_text(yaml.safe_dump({"users": [
        {"login": "jyj", "name": "教育局财务科", "role": "department", "department_id": "D101",
         "password_hash": hash_secret(PASSWORDS["jyj"])},
        {"login": "jxk", "name": "财政局绩效科", "role": "bureau",
         "password_hash": hash_secret(PASSWORDS["jxk"]), "token_hash": hash_secret(TOKENS["jxk"])},
    ]}, allow_unicode=True), encoding="utf-8")
    with serve(tmp_path, extra_env={"BUDGETWATCH_USERS": str(users)}) as url:
        yield url


def test_department_disposes_bureau_sees_and_the_board_updates_live(board_url: str) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extras)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            dept = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 900})
            page = dept.new_page()
            page.goto(f"{board_url}/")
            assert page.url.endswith("/login")
            page.fill("input[name=login]", "jyj")
            page.fill("input[name=password]", PASSWORDS["jyj"])
            page.click("button[type=submit]")
            page.wait_for_selector(f'tr[data-alert="{ALERT_EDU}"]')
            assert page.locator(f'tr[data-alert="{ALERT_HEALTH}"]').count() == 0
            assert "卫生健康委员会" not in page.content()
            assert "教育局财务科" in page.inner_text("[data-testid=user]")
            page.screenshot(path=str(ARTIFACTS / "board-department.png"), full_page=True)

            page.click(f'tr[data-alert="{ALERT_EDU}"] a')
            page.wait_for_selector("form.dispose")
            page.select_option("select[name=action]", "continue")
            page.fill("textarea[name=note]", "项目已完成招标，7月起按进度支付")
            page.click("form.dispose button[type=submit]")
            page.wait_for_selector("p.notice")
            assert "已处置" in page.inner_text("[data-testid=disposition-status]")
            assert "jyj" in page.inner_text("[data-testid=latest]")
            page.screenshot(path=str(ARTIFACTS / "alert-disposed.png"), full_page=True)

            page.goto(f"{board_url}/projects/P1")
            page.wait_for_selector("#chart canvas")
            page.screenshot(path=str(ARTIFACTS / "project.png"), full_page=True)

            bureau = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 900})
            bpage = bureau.new_page()
            bpage.goto(f"{board_url}/login")
            bpage.fill("input[name=login]", "jxk")
            bpage.fill("input[name=password]", PASSWORDS["jxk"])
            bpage.click("button[type=submit]")
            bpage.wait_for_selector(f'tr[data-alert="{ALERT_HEALTH}"]')
            assert "已处置" in bpage.inner_text(f'tr[data-alert="{ALERT_EDU}"]')
            bpage.screenshot(path=str(ARTIFACTS / "board-bureau.png"), full_page=True)

            # a payment clears P2's alert: the list drops it without a reload
            payment = {"type": "payment", "event_id": "P2-PAY-BIG", "occurred_on": "2025-07-02",
                       "project_id": "P2", "amount": "600000.00"}
            answer = httpx.post(f"{board_url}/events?wait=1", content=orjson.dumps(payment),
                                headers={"Authorization": f"Bearer {TOKENS['jxk']}"}, timeout=30)
            assert answer.status_code == 200 and answer.json()["processed"] is True
            bpage.wait_for_selector(f'tr[data-alert="{ALERT_HEALTH}"]', state="detached")
            assert bpage.locator(f'tr[data-alert="{ALERT_EDU}"]').count() == 1
            bpage.screenshot(path=str(ARTIFACTS / "board-bureau-after-payment.png"), full_page=True)

            bpage.goto(f"{board_url}/alerts/{ALERT_EDU}")
            assert "项目已完成招标" in bpage.inner_text("[data-testid=latest]")
            bpage.goto(f"{board_url}/reductions")
            bpage.screenshot(path=str(ARTIFACTS / "reductions.png"), full_page=True)
        finally:
            browser.close()
