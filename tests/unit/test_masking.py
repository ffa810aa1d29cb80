"""A URL's password is masked in every form, even when the URL does not parse."""

from __future__ import annotations

import io
import json

import pytest

from runner.log import EventLog


@pytest.mark.parametrize(
    ("url", "password"),
    [
        ("postgresql://app:Tr0ub4dor@3xyz@db.internal/app", "Tr0ub4dor@3xyz"),
        ("postgresql://app:p@ss:w/rd%@db.internal/app", "p@ss:w/rd%"),
        ("postgresql://app:p%40ss@db.internal/app", "p%40ss"),
        ('mysql://app:quo"te\\slash@db/app', 'quo"te\\slash'),
    ],
)
def test_every_form_of_the_password_is_masked(url: str, password: str) -> None:
    stream = io.StringIO()
    log = EventLog("json", stream)
    log.add_url_secret(url)
    decoded = password.replace("%40", "@")
    log.emit("x", f"failed on {url}", error=f"found: {password[2:]}@db.internal",
             traceback=f"File env.py\n  url = {decoded}\n  {password.replace('%', '%%')}")
    output = stream.getvalue()
    record = json.loads(output)
    text = output + " ".join(str(value) for value in record.values())
    for start in range(len(password) - 3):
        assert password[start : start + 4] not in text, output
    assert "@db" in record["message"]


def test_a_url_in_text_is_masked_without_registration() -> None:
    log = EventLog()
    assert log.mask("connect to postgresql+psycopg://u:s3cret@h:5432/db failed") == (
        "connect to postgresql+psycopg://u:***@h:5432/db failed"
    )
    assert log.mask("sqlite:////data/app.db and mysql://root@h/db") == (
        "sqlite:////data/app.db and mysql://root@h/db"
    )
