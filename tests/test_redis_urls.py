"""REDIS_URL parsing: every accepted form, and one-line errors that name the wrong part (issue 17)."""

from __future__ import annotations

import pytest

from approvalbot.store.connections import RedisUrlError, parse


def test_sentinel_url_with_credentials_and_db():
    target = parse("redis+sentinel://app:p%40ss@10.0.0.1:26379,10.0.0.2:26380/mymaster/2", {})
    assert target.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380))
    assert (target.service, target.db, target.username, target.password) == ("mymaster", 2, "app", "p@ss")
    assert "p@ss" not in repr(target) and "p@ss" not in target.describe()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://x", "must start with"),
        ("redis+sentinel://h:1/", "needs the service name"),
        ("redis+sentinel://h/mymaster", "must be host:port"),
        ("redis+sentinel://h:99999/m", "no valid port"),
        ("redis+sentinel://h:1/m/x", "/SERVICE or /SERVICE/DB"),
        ("redis://127.0.0.1:abc", "malformed"),
        ("redis://", "no host"),
    ],
)
def test_malformed_urls_name_the_problem(url, says):
    with pytest.raises(RedisUrlError) as caught:
        parse(url, {})
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_tls_files_need_a_tls_url_and_must_exist(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    with pytest.raises(RedisUrlError, match="not rediss"):
        parse("redis://h:1", {"APPROVALBOT_REDIS_CA": str(ca)})
    with pytest.raises(RedisUrlError, match="no such file"):
        parse("rediss://h:1", {"APPROVALBOT_REDIS_CA": str(tmp_path / "missing")})
    with pytest.raises(RedisUrlError, match="set together"):
        parse("rediss://h:1", {"APPROVALBOT_REDIS_CERT": str(ca)})
    assert parse("rediss://h:1", {"APPROVALBOT_REDIS_CA": str(ca)}).tls["ssl_ca_certs"] == str(ca)
