"""Shared fixtures: an OpenAI client pointed at the tandem server that scripts/test-client.sh started."""

import os

import openai
import pytest


@pytest.fixture(scope="session")
def model() -> str:
    return os.environ.get("TANDEM_MODEL", "tiny-llama")


@pytest.fixture(scope="session")
def client() -> openai.OpenAI:
    base_url = os.environ.get("TANDEM_BASE_URL")
    if not base_url:
        pytest.fail("TANDEM_BASE_URL is not set; run scripts/test-client.sh")
    # No retries: a 429 or 5xx must show up as the error it is.
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=60)
