"""The hostile probes use the integration suite's real Redis, host and harness."""

from tests.integration.conftest import gates, harness, host, open_session, shared_host

__all__ = ["gates", "harness", "host", "open_session", "shared_host"]
