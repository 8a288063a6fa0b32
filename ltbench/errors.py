"""One exception type for user-facing input errors, so the CLI can print one clear line."""


class LTBenchError(Exception):
    """Bad input: missing or corrupt data, a wrong config key, a missing checkpoint.

    The message names the file, line or key and what was expected.
    """


class DataError(LTBenchError):
    """Missing, unreadable or malformed dataset files."""
