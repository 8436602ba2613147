"""The keepalived commands as text (render/haproxy_host/keepalived_*.sh via scripts.py); the lab
runs them on real Debian hosts with systemd (tests/lab/test_lab_ha.py)."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from components.haproxy_host.scripts import (
    SCRIPTS_DIR,
    install_script,
    keepalived_apply_script,
    keepalived_restore_script,
    uninstall_script,
)
from tests.unit.render.test_haproxy_host_scripts import STAND_INS, Host

CONFIG = "global_defs {\n    router_id edge-1\n}\n"


def _apply() -> str:
    return keepalived_apply_script(CONFIG, "203.0.113.0/24", None)


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_keepalived_commands_parse(shell: str) -> None:
    for script in (_apply(), keepalived_restore_script(), install_script(with_keepalived=True)):
        result = subprocess.run([shell, "-n"], input=script, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


def test_keepalived_commands_carry_both_libraries_verbatim_and_stop_at_the_first_error() -> None:
    for script, name in ((_apply(), "keepalived_apply.sh"), (keepalived_restore_script(), "keepalived_restore.sh")):
        assert script.startswith("set -eu\n") and f"source-ip-edge {name}" in script
        for part in ("lib.sh", "keepalived_lib.sh", name):
            assert (SCRIPTS_DIR / part).read_text() in script
    assert (SCRIPTS_DIR / "keepalived_lib.sh").read_text() in uninstall_script()


def test_apply_carries_the_config_and_the_check_script_byte_for_byte() -> None:
    script = _apply()
    assert CONFIG in script and (SCRIPTS_DIR / "check_haproxy.sh").read_text() in script
    assert "VIP_NETWORK=203.0.113.0/24\nVIP_INTERFACE=''\n" in script


def test_interface_is_quoted() -> None:
    assert "VIP_INTERFACE='eth 0'" in keepalived_apply_script(CONFIG, "203.0.113.0/24", "eth 0")


def test_the_password_comes_on_stdin_never_from_an_argument() -> None:
    apply_text = (SCRIPTS_DIR / "keepalived_apply.sh").read_text()
    assert "IFS= read -r vrrp_password" in apply_text
    assert 'chmod 600 "$staging"' in apply_text, "the live file holds the password: root only"


def test_install_adds_keepalived_only_for_a_vip() -> None:
    assert "WITH_KEEPALIVED=yes\n" in install_script(with_keepalived=True)
    assert "WITH_KEEPALIVED=yes" not in install_script()


def test_keepalived_packages_are_listed_apart_and_go_with_keepalived(tmp_path: Path) -> None:
    # Removing haproxy.vip deletes only the keepalived command: its restore must take off what the
    # install added for keepalived, and leave haproxy's packages to the install's own delete.
    host = Host(tmp_path, "pidfile")
    keepalived_dir = tmp_path / "etc" / "keepalived"
    host.params = replace(
        host.params,
        keepalived_conf=str(keepalived_dir / "keepalived.conf"),
        keepalived_pidfile=str(tmp_path / "keepalived.pid"),
        check_script=str(keepalived_dir / "source-ip-edge-check-haproxy"),
        loaded_file=str(tmp_path / "keepalived.loaded"),
    )
    host.env["PATH"] = f"{STAND_INS}:{host.env['PATH']}"  # the package manager's stand-ins
    (host.dpkg / "installed").write_text("base-files\n")
    state = Path(host.params.state_dir)

    installed = host.run(install_script(host.params, with_keepalived=True))
    assert installed.returncode == 0, installed.stderr
    assert (state / "keepalived.installed").read_text().split() == ["keepalived"]
    assert sorted((state / "installed").read_text().split()) == ["haproxy", "liblua5.3-0", "socat"]
    assert "package=no\n" in (state / "keepalived.before").read_text()

    restored = host.run(keepalived_restore_script(host.params))
    assert restored.returncode == 0, restored.stderr
    assert (host.dpkg / "calls").read_text().splitlines()[-1].split() == ["purge", "-y", "-q", "keepalived"]
    assert sorted((host.dpkg / "installed").read_text().split()) == ["base-files", "haproxy", "liblua5.3-0", "socat"]
    assert not (state / "keepalived.installed").exists() and not (state / "keepalived.before").exists()
    assert (state / "installed").exists() and (state / "before").exists(), "haproxy's record stays"
