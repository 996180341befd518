"""The open-redirect guard on `next` and RelayState."""

from __future__ import annotations

import pytest

from sso_bridge.errors import NextNotAllowed
from sso_bridge.redirects import safe_next

LMS = "https://lms.example.com/moodle"
ALLOWED = ["courses.example.com"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, f"{LMS}/"),
        ("", f"{LMS}/"),
        ("/course/view.php?id=3", f"{LMS}/course/view.php?id=3"),
        ("/courses/safety-101#intro", f"{LMS}/courses/safety-101#intro"),
        ("https://lms.example.com/moodle/my/", "https://lms.example.com/moodle/my/"),
        ("https://LMS.example.com/x", "https://LMS.example.com/x"),
        ("https://courses.example.com/c/1", "https://courses.example.com/c/1"),
    ],
)
def test_accepted(value: str | None, expected: str) -> None:
    assert safe_next(value, LMS, ALLOWED) == expected


@pytest.mark.parametrize(
    "value",
    [
        "//evil.example",
        "///evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "/%5Cevil.example",
        "/%2F/evil.example",
        "/%2f%2fevil.example",
        "https:evil.example",
        "https:/evil.example",
        "http://evil.example",
        "https://evil.example",
        "https://evil.example/lms.example.com",
        "https://lms.example.com.evil.example/",
        "https://lms.example.com@evil.example/",
        "https://user:pass@lms.example.com/",
        "https://evil.example\\@lms.example.com/",
        "https://evil.example#@lms.example.com/",
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        "java%09script:alert(1)",
        "jav\tascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "/%09/evil.example",
        "/\t/evil.example",
        "/%0d%0aSet-Cookie:x=1",
        "/ /evil.example",
        "%2F%2Fevil.example",
        "ftp://lms.example.com/",
        "http://lms.example.com/moodle",  # a downgrade from the https LMS
        "https://lms.example.com:8443/",  # another port is another origin
        "/" + "a" * 2100,
        "lms.example.com/moodle",
        "../evil",
    ],
)
def test_refused(value: str) -> None:
    with pytest.raises(NextNotAllowed):
        safe_next(value, LMS, ALLOWED)
