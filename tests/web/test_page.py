"""The workspace page in headless Chromium (Debian's chromium and chromium-driver, driven by
Selenium): sign in with a token, see the cost, the budget, the daily bars and the overruns."""

import shutil

import httpx
import pytest

from metering.core.periods import period_bounds
from metering.core.timeutil import format_time, parse_time
from metering.db.base import now_us
from tests.conftest import ADMIN_TOKEN
from tests.factories import BATCH, event
from tests.process import ServerProcess

pytestmark = pytest.mark.slow
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
HOUR = 3_600_000_000


@pytest.fixture
def server(db_url, db, tmp_path):
    proc = ServerProcess({"METERING_DATABASE_URL": db_url, "METERING_ADMIN_TOKEN": ADMIN_TOKEN,
                          "METERING_SCHEDULER__ENABLED": "false",
                          "METERING_REPORTS_DIR": str(tmp_path / "reports")}, tmp_path / "server.log").start(timeout=120)
    yield proc
    proc.stop()


@pytest.fixture
def browser():
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("chromium and chromium-driver are not installed (scripts/test.sh installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(30)
    driver.implicitly_wait(15)  # a submitted form's next page may still be loading (a busy CI machine)
    yield driver
    driver.quit()


def seed(base: str) -> str:
    """Usage this period for ws_1: a ghost running for 3 h and a stopped hour; a budget; a token."""
    now = now_us()
    start = max(now - 3 * HOUR, period_bounds(now, "month")[0])
    events = [
        event("sandbox.running", format_time(start), sandbox_id="sb_ghost", template="giga-pro"),
        event("sandbox.running", format_time(start), sandbox_id="sb_done", template="giga-mini"),
        event("sandbox.stopped", format_time(start + HOUR), sandbox_id="sb_done"),
        event("sandbox.running", format_time(start), workspace_id="ws_2", sandbox_id="sb_x"),
    ]
    with httpx.Client(base_url=base, headers=ADMIN, timeout=30) as http:
        assert http.post("/v1/events", json=events, headers=BATCH).status_code == 202
        assert http.put("/v1/workspaces/ws_1/budget", json={"amount": "0.010000", "thresholds": [50, 200]}
                        ).status_code == 200
        made = http.post("/v1/tokens", json={"name": "page", "scopes": ["usage:read"], "workspace_id": "ws_1"})
        return made.json()["token"]


def test_page_shows_cost_budget_chart_and_overruns(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    token = seed(server.url)
    browser.get(f"{server.url}/workspaces/ws_1")
    assert "/sign-in" in browser.current_url  # not signed in yet
    browser.find_element(By.ID, "token").send_keys("mtr_sk_" + "0" * 32)
    browser.find_element(By.ID, "sign-in").click()
    assert "lacks the usage:read scope" in browser.find_element(By.ID, "error").text
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.ID, "sign-in").click()
    WebDriverWait(browser, 15).until(lambda d: d.current_url == f"{server.url}/workspaces/ws_1")
    assert token not in browser.current_url and token not in browser.page_source
    (cookie,) = browser.get_cookies()
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and token not in cookie["value"]

    as_of = browser.find_element(By.ID, "cost").get_attribute("data-as-of")
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=30) as http:
        cost = http.get("/v1/workspaces/ws_1/cost", params={"as_of": as_of}).json()
        period_start = cost["period_start"]
        usage = http.get("/v1/workspaces/ws_1/usage", params={
            "start": period_start, "end": as_of, "as_of": as_of, "window": "day"}).json()
        daily = {}
        for item in usage["items"]:
            day = item["window_start"][:10]
            total = http.get("/v1/workspaces/ws_1/usage", params={
                "start": item["window_start"], "as_of": as_of,
                "end": min(as_of, format_time(parse_time(item["window_start"]) + 24 * HOUR),
                           key=parse_time)}).json()["total"]
            daily[day] = total
    assert browser.find_element(By.ID, "spent").text == cost["spent"] != "0.000000"
    assert browser.find_element(By.ID, "forecast").text == cost["forecast"]
    assert browser.find_element(By.ID, "hourly-rate").text == "0.400000"  # the ghost, giga-pro
    assert browser.find_element(By.ID, "budget-amount").text == "0.010000"
    assert browser.find_element(By.ID, "thresholds").text == "50% (crossed), 200% (crossed)"
    bars = browser.find_elements(By.CSS_SELECTOR, "#chart rect.bar")
    shown = {bar.get_attribute("data-day"): bar.get_attribute("data-amount") for bar in bars}
    assert {day: amount for day, amount in shown.items() if amount != "0.000000"} == daily
    assert len(bars) == (parse_time(as_of) - parse_time(period_start)) // (24 * HOUR) + 1
    tallest = max(bars, key=lambda b: int(b.get_attribute("height")))
    assert tallest.get_attribute("data-amount") == max(daily.values(), key=lambda a: int(a.replace(".", "")))
    assert int(tallest.get_attribute("height")) == 160 and tallest.is_displayed()
    rows = browser.find_elements(By.CSS_SELECTOR, "#overruns tr.overrun")
    assert [r.find_elements(By.TAG_NAME, "td")[0].text for r in rows] == ["sb_ghost", "sb_done"][:len(rows)]
    assert rows and rows[0].find_elements(By.TAG_NAME, "td")[0].text == "sb_ghost"

    # A bound token sees only its workspace.
    browser.get(f"{server.url}/workspaces/ws_2")
    assert "Not found" in browser.find_element(By.TAG_NAME, "h1").text
    assert "sb_x" not in browser.page_source
    # Signing out ends the session.
    browser.get(f"{server.url}/workspaces/ws_1")
    browser.find_element(By.CSS_SELECTOR, "form[action='/sign-out'] button").click()
    browser.get(f"{server.url}/workspaces/ws_1")
    assert "/sign-in" in browser.current_url
