"""Demo code, not part of the product: the courses the demo portal links to and the LMS shows."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Course:
    slug: str
    title: str
    summary: str
    minutes: int


COURSES: dict[str, Course] = {
    course.slug: course
    for course in (
        Course(
            "safety-101",
            "Workplace Safety 101",
            "Fire exits, first aid and how to report a hazard.",
            20,
        ),
        Course(
            "gdpr-basics",
            "GDPR Basics",
            "What personal data is, and how to handle it with care.",
            30,
        ),
        Course(
            "leadership", "Leading Teams", "Feedback, delegation and running a good one-to-one.", 45
        ),
    )
}
