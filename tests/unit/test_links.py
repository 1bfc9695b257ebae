"""The Certificate → target links and their reverse map (who to wake when a target changes)."""

from __future__ import annotations

from signet.controller.watchcache import Links

SECRET = ("ns", "web-tls")
OTHER = ("ns", "other-tls")


def test_lone_and_shared_users_are_found_and_forgotten() -> None:
    links: Links[tuple[str, str]] = Links()
    links.link(("ns", "a"), SECRET)
    assert links.users(SECRET) == [("ns", "a")]
    links.link(("ns", "b"), SECRET)  # two Certificates naming one Secret (SecretInUse)
    links.link(("ns", "c"), SECRET)
    assert sorted(links.users(SECRET)) == [("ns", "a"), ("ns", "b"), ("ns", "c")]
    links.unlink(("ns", "b"))
    links.link(("ns", "c"), OTHER)  # moved to another Secret
    assert links.users(SECRET) == [("ns", "a")]
    assert links.users(OTHER) == [("ns", "c")]
    links.unlink(("ns", "a"))
    assert links.users(SECRET) == []
    assert links.targets == {("ns", "c"): OTHER}
    links.unlink(("ns", "a"))  # unknown: nothing happens
    links.link(("ns", "a"), SECRET)
    links.link(("ns", "a"), SECRET)  # relinking the same target is a no-op
    assert links.users(SECRET) == [("ns", "a")]
