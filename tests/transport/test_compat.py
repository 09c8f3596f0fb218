"""The private names of other libraries that envelope uses still work in the installed versions;
when an upgrade breaks one, the failure names the library, its version and the name."""

from __future__ import annotations

import httpx
import pytest

from envelope._compat import PRIVATE_USES, PrivateUse, private_use_problems


@pytest.mark.parametrize("use", PRIVATE_USES, ids=lambda use: use.name)
def test_private_name_works_as_relied_on(use: PrivateUse) -> None:
    problem = use.problem()
    assert problem is None, problem


def test_private_use_problems_is_empty_for_the_installed_versions() -> None:
    assert private_use_problems() == []


def test_a_broken_private_name_is_reported_with_library_version_and_name() -> None:
    def renamed_by_an_upgrade() -> None:
        httpx.Client._no_such_private_name  # type: ignore[attr-defined]  # noqa: B018

    use = PrivateUse("httpx", "httpx.Client._no_such_private_name", renamed_by_an_upgrade)

    problem = use.problem()

    assert problem is not None
    assert problem.startswith(
        f"httpx {httpx.__version__} broke httpx.Client._no_such_private_name: AttributeError: "
    )
