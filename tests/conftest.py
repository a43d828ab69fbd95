"""Shared pytest fixtures."""

pytest_plugins = ["tests.fixtures_models", "tests.fake_openai"]
