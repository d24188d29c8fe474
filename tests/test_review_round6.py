"""Hostile review of this round's additions (design.md section 6): each test is a promise the docs make that the
code broke when it was written. Real redis-server, real processes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from meetingtasks.errors import ConfigurationError
from meetingtasks.settings import load_settings
from tests.support.processes import ROOT

PASSWORD = "hunter2-not-for-logs"

#: URLs that a settings check refuses, each carrying a password: the one-line error must not print it.
BAD_URLS_WITH_PASSWORD = [
    f"sentinel://u:{PASSWORD}@h:notaport/mymaster/0",
    f"sentinel://u:{PASSWORD}@h:26379/mymaster/x",
    f"sentinels://u:{PASSWORD}@h:26379",
    f"redis://u:{PASSWORD}@h:badport/0",
]


@pytest.mark.parametrize("url", BAD_URLS_WITH_PASSWORD)
def test_a_refused_redis_url_never_prints_its_password(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a Redis URL with a password that the settings refuse (sentinel.py: "never echoing the password")
    monkeypatch.setenv("MEETINGTASKS_REDIS_URL", url)
    # When the settings load
    with pytest.raises(ConfigurationError) as refused:
        load_settings()
    # Then the one line names the setting and masks the password (it goes to terminals, CI logs, journald)
    message = str(refused.value)
    assert "MEETINGTASKS_REDIS_URL" in message
    assert PASSWORD not in message, message


def test_the_cli_error_of_a_refused_sentinel_url_masks_its_password(tmp_path: object) -> None:
    # Given a deployment whose Sentinel URL has a typo in a port
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MEETINGTASKS_DATA_DIR": str(tmp_path),
           "MEETINGTASKS_REDIS_URL": f"sentinel://admin:{PASSWORD}@s1:26379,s2:2637x/mymaster/0"}
    # When any command starts
    out = subprocess.run([sys.executable, "-m", "meetingtasks", "stats"], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    # Then it exits 1 with one line that does not print the password
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip().count("\n") == 0, out.stderr
    assert PASSWORD not in out.stderr + out.stdout, out.stderr
