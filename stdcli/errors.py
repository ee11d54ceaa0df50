"""Errors as users read them: one line each."""

from __future__ import annotations


def one_line(error: BaseException, limit: int | None = None) -> str:
    """The error's message on one line (whitespace runs collapsed), its type's name if it has none, cut to `limit`
    characters with an ellipsis."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."
