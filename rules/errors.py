"""Errors of the rules package (one root)."""


class RulesError(Exception):
    """A ruleset could not be registered or evaluated. Not retryable: it is a programming error."""
