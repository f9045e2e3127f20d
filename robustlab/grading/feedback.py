"""What a failed check raises: a message the student can act on."""

from __future__ import annotations

__all__ = ["Feedback"]


class Feedback(AssertionError):
    """A failed check, with the message a student should read."""
