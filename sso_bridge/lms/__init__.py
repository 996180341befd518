"""LMS adapters, a closed set chosen by `lms.type`."""

from __future__ import annotations

from collections.abc import Sequence

from ..db import Database
from ..fetch import outbound_session
from ..settings import LmsSettings, RuleSettings
from .base import LmsAdapter
from .builtin import BuiltinLms


def build_adapter(
    settings: LmsSettings,
    db: Database,
    rules: Sequence[RuleSettings],
    outbound_proxy: str | None,
) -> LmsAdapter:
    """The configured adapter (a closed set: `lms.type` is a Literal).

    ``rules`` tell the Moodle adapter how the rules spell each course, so that it reports
    an account's courses in those spellings. ``outbound_proxy`` is the bridge's proxy for
    its own requests: the LMS API is reached through it like metadata and JWKS are. Both
    are required: left out, either would be wrong without a sign.
    """
    if settings.type == "builtin":
        return BuiltinLms(db)
    if settings.type == "moodle":
        from .moodle import MoodleLms

        assert settings.api_url is not None and settings.api_token is not None
        return MoodleLms(
            settings.api_url,
            settings.api_token.get_secret_value(),
            timeout=settings.timeout,
            login=settings.moodle_login,
            student_role_id=settings.moodle_student_role_id,
            auth=settings.moodle_auth,
            managed_cohorts=settings.moodle_managed_cohorts,
            create_cohorts=settings.moodle_create_cohorts,
            cache_ttl=settings.moodle_cache_ttl,
            languages=settings.moodle_languages,
            rule_courses=[course for rule in rules for course in rule.courses],
            session=outbound_session(outbound_proxy),
        )
    if settings.type == "scim":
        from .scim import ScimLms

        assert settings.api_url is not None
        return ScimLms(
            settings.api_url,
            token=settings.api_token.get_secret_value() if settings.api_token else None,
            username=settings.api_username,
            password=settings.api_password.get_secret_value() if settings.api_password else None,
            timeout=settings.timeout,
            proxy=outbound_proxy,
        )
    raise AssertionError(f"unknown LMS adapter {settings.type!r}")
