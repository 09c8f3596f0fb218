"""Fixtures of the transport tests: one set of test certificates per module, and the policy
that trusts their CA."""

from __future__ import annotations

import pytest

from envelope.transport import TLSPolicy
from tests.transport.servers import Certificates, issue_certificates


@pytest.fixture(scope="module")
def certs() -> Certificates:
    return issue_certificates()


@pytest.fixture
def policy(certs: Certificates) -> TLSPolicy:
    return TLSPolicy(ca_data=certs.ca_pem)
