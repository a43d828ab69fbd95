"""Shared pytest fixtures."""

pytest_plugins = ["tests.fixtures_models", "tests.fixtures_chains", "tests.fake_openai"]
