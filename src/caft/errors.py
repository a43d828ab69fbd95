"""Errors that users see: each names the file, key or row that is wrong."""


class CaftError(Exception):
    """Base class for user-facing errors (bad config, bad input data, unreachable models)."""


class ConfigError(CaftError):
    """A config value is missing, unknown or of the wrong type."""


class DataError(CaftError):
    """An input table is missing, empty, or lacks a column or a valid value."""


class ModelLoadError(CaftError):
    """A model or tokenizer cannot be loaded from the configured source."""
