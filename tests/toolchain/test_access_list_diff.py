"""What `pulumi preview --diff` shows of a change in a long access list: the summary lines of the
list command's text (counts, first and last network, hash), the list itself as `[secret]`, never
its networks; and the changed list reaches the host. The built engine, HAProxyHost's command
(access_list_command) over a throwaway sshd."""

import ipaddress
from pathlib import Path

from tests.toolchain.helpers import new_project, run_pulumi
from tests.toolchain.test_remote_command import SshServer, sshd  # noqa: F401 (the fixture)

ROOT = Path(__file__).resolve().parents[2]


def _networks(count: int) -> list[str]:
    base = int(ipaddress.ip_address("10.0.0.0"))
    return [f"{ipaddress.ip_address(base + 2 * i)}/32" for i in range(count)]


def test_a_preview_shows_a_summary_of_a_list_change_not_the_list(
    sshd: SshServer,  # noqa: F811
    pulumi_env: dict[str, str],
    tmp_path: Path,
) -> None:
    scratch = tmp_path / "host"
    scratch.mkdir()
    listed = tmp_path / "deny.txt"
    networks = _networks(20_000)
    listed.write_text("\n".join(networks) + "\n")
    project = new_project(
        "access_list_diff",
        tmp_path,
        pulumi_env,
        ["pulumi-resource-command"],
        {
            "repo": str(ROOT),
            "scratch": str(scratch),
            "listFile": str(listed),
            "port": str(sshd.port),
            "user": sshd.user,
            "hostKey": sshd.host_key,
        },
        secrets={"privateKey": sshd.client_key},
    )
    run_pulumi(pulumi_env, project, "up", "--yes", "--skip-preview")
    assert (scratch / "deny.acl").read_text().splitlines()[2:] == networks

    changed = [*networks[:500], *networks[501:], "192.0.2.7/32"]
    listed.write_text("\n".join(changed) + "\n")
    preview = run_pulumi(pulumi_env, project, "preview", "--diff")
    shown = preview.stdout
    assert "20000 networks (0 in access.deny, 20000 lines in" in shown
    assert "first 10.0.0.0/32, last 192.0.2.7/32" in shown, "the new summary"
    assert f"first 10.0.0.0/32, last {networks[-1]}" in shown, "and the old one"
    assert "[secret]" in shown
    assert networks[500] not in shown and networks[1234] not in shown, "no network beyond the summary's"
    assert len(shown) < 100_000, f"{len(shown)} characters"

    run_pulumi(pulumi_env, project, "up", "--yes", "--skip-preview")
    assert (scratch / "deny.acl").read_text().splitlines()[2:] == sorted(changed, key=ipaddress.ip_network)
    run_pulumi(pulumi_env, project, "destroy", "--yes", "--skip-preview")
    assert not (scratch / "deny.acl").exists()
