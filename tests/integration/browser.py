"""Debian's chromium, headless, through chromium-driver and Selenium: the console as a help
desk sees it. Screenshots go to ``artifacts/screenshots`` (or ``$MAILFARM_ARTIFACTS``),
one per step of each flow, kept after the run for a person to look at.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("MAILFARM_ARTIFACTS", REPO / "artifacts")) / "screenshots"
FLAGS = (
    "--headless=new",
    "--no-sandbox",  # CI runs as root, where chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--no-first-run",
    "--metrics-recording-only",
    "--password-store=basic",
    "--window-size=1280,1000",
)


def chromium_paths() -> tuple[str, str]:
    binary = shutil.which("chromium") or "/usr/bin/chromium"
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return binary, driver


class Browser:
    def __init__(self, base_url: str, profile: Path) -> None:
        binary, driver = chromium_paths()
        options = webdriver.ChromeOptions()
        options.binary_location = binary
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        self.driver = webdriver.Chrome(options=options, service=Service(driver))
        self.driver.set_page_load_timeout(60)
        self.base = base_url
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def fill(self, css: str, text: str) -> None:
        field = self.find(css)
        field.clear()
        field.send_keys(text)

    def submit(self, css: str) -> None:
        self.click(self.find(css))

    def click(self, element: WebElement) -> None:
        """Click and wait for the next page (the old one's <html> goes stale)."""
        old = self.find("html")
        element.click()
        WebDriverWait(self.driver, 60).until(lambda d: _stale(old))

    def text(self, css: str = "main") -> str:
        return self.find(css).text

    @property
    def path(self) -> str:
        return self.driver.current_url.removeprefix(self.base)

    def shot(self, name: str) -> Path:
        path = ARTIFACTS / (re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".png")
        self.driver.save_screenshot(str(path))
        return path

    def sign_in(self, login: str, password: str) -> None:
        self.open("/console/signin")
        self.fill("#login", login)
        self.fill("#password", password)
        self.submit("#signin")

    def quit(self) -> None:
        self.driver.quit()


def _stale(element: WebElement) -> bool:
    try:
        element.is_enabled()
    except Exception:  # StaleElementReferenceException: the page was replaced
        return True
    return False
