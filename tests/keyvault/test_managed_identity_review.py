"""Security review of the managed-identity allowance (issue 13): the attacks that found a flaw,
kept as the proof of its fix. Plain http may reach loopback and exactly IMDS; an endpoint on
any other link-local host is refused before connecting, among the other refused endpoints of
``test_managed_identity.py``."""

from __future__ import annotations

import pytest

from envelope.transport._identity import is_host_local


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("169.254.169.254", True),
        ("169.254.169.253", False),
        ("169.254.169.255", False),
        ("169.254.0.1", False),
        ("[fe80::1]", False),
        ("[fe80::a9fe:a9fe]", False),
        ("[::ffff:169.254.169.254]", False),
        ("[::ffff:127.0.0.1]", False),
        ("169.254.169.254.nip.io", False),
        ("2852039166", False),  # 169.254.169.254 as one number
        ("0xa9.0xfe.0xa9.0xfe", False),
        ("10.0.0.4", False),
    ],
)
def test_plain_http_may_reach_loopback_and_exactly_imds(host: str, allowed: bool) -> None:
    assert is_host_local(host) is allowed
