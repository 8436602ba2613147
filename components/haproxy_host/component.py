"""HAProxyHost: one HAProxy host, provisioned over SSH with pulumi-command; with a VIP, also its keepalived."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NotRequired, TypedDict

import pulumi
import pulumi_command as command

from components.config import SshHost, VipSettings
from components.haproxy_host.access_list import EdgeList
from components.haproxy_host.scripts import (
    HostParams,
    access_list_apply_script,
    access_list_remove_script,
    apply_script,
    install_script,
    keepalived_apply_script,
    keepalived_restore_script,
    restore_script,
    uninstall_script,
)


class HAProxyHostArgs(TypedDict):
    host: SshHost
    """Where to connect, and the pinned host key."""
    ssh_private_key: pulumi.Input[str]
    """The private key (a secret); the connection and so every stdout are secret in state."""
    haproxy_config: str
    """The rendered haproxy.cfg."""
    after: Sequence[pulumi.Resource]
    """HAProxy starts sending PROXY headers only once the gateway accepts them."""
    access_lists: NotRequired[Sequence[EdgeList]]
    """The access lists HAProxy enforces, whose files haproxy.cfg names."""
    vip: NotRequired[VipSettings]
    """The VIP the hosts share; with it, keepalived is installed and configured."""
    keepalived_config: NotRequired[str]
    """This host's rendered keepalived.conf (no secret in it)."""
    vrrp_password: NotRequired[pulumi.Input[str]]
    """The VRRP password, a secret: sent on the keepalived command's stdin, never in its text."""


def access_list_command(
    name: str,
    connection: command.remote.ConnectionArgs,
    edge_list: EdgeList,
    params: HostParams | None = None,
    opts: pulumi.ResourceOptions | None = None,
) -> command.remote.Command:
    """The command that puts one access list on a host and into its running HAProxy. The list
    travels on stdin, a secret input only so that `pulumi preview --diff` shows `[secret]` for it
    instead of every network (it is no secret; the state keeps it encrypted): the command's text
    carries its counts, first and last network and hash, which is what a preview shows change."""
    params = params or HostParams()
    return command.remote.Command(
        name,
        connection=connection,
        create=access_list_apply_script(
            edge_list.which, edge_list.path, edge_list.sha256, edge_list.entries, edge_list.summary, params
        ),
        stdin=pulumi.Output.secret(edge_list.text),
        delete=access_list_remove_script(edge_list.which, edge_list.path, params),
        opts=opts,
    )


class HAProxyHost(pulumi.ComponentResource):
    install: command.remote.Command
    """Records the host as it was, installs haproxy and socat; destroy removes what it added."""
    config: command.remote.Command
    """Stages, checks (`haproxy -c`), swaps in and reloads haproxy.cfg; destroy restores."""
    access_lists: dict[str, command.remote.Command]
    """By list ('deny', 'allow'): writes the list file and loads it into the running HAProxy
    through its runtime API (no reload); destroy removes the file, after the config's restore."""
    keepalived: command.remote.Command | None
    """With a VIP: stages, checks (`keepalived -t`), swaps in and reloads keepalived.conf; destroy
    restores keepalived (the VIP moves away first, then haproxy.cfg is restored)."""

    def __init__(self, name: str, args: HAProxyHostArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("source-ip-edge:haproxy:HAProxyHost", name, {}, opts)
        host = args["host"]
        connection = command.remote.ConnectionArgs(
            host=host.address,
            port=host.port,
            user=host.user,
            private_key=pulumi.Output.secret(args["ssh_private_key"]),
            # Without host_key any server key is accepted (pulumi-command); config.py insists on it
            # unless the user wrote insecureIgnoreHostKey: true.
            host_key=host.host_key,
        )
        self.install = command.remote.Command(
            f"{name}-install",
            connection=connection,
            create=install_script(with_keepalived="vip" in args),
            # Runs after the config's restore (which depends on it): packages go last.
            delete=uninstall_script(),
            opts=pulumi.ResourceOptions(parent=self),
        )
        # Before the config, whose `haproxy -c` reads the files.
        self.access_lists = {
            edge_list.which: access_list_command(
                f"{name}-{edge_list.which}-list",
                connection,
                edge_list,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.install], delete_before_replace=True),
            )
            for edge_list in args.get("access_lists", ())
        }
        # The config text sits inside the command, so `pulumi preview --diff` shows its changed
        # lines, and an unchanged file re-runs nothing (remote.Command runs on input changes only).
        # No `update`: on a change remote.Command runs `create` again, and the diff shows each
        # changed line once.
        self.config = command.remote.Command(
            f"{name}-config",
            connection=connection,
            create=apply_script(args["haproxy_config"]),
            delete=restore_script(),
            # Should this command ever be replaced (`pulumi up --replace`, a provider that replaces
            # on a connection change), create-before-delete would run the old instance's restore
            # after the new apply and leave the host on its original config: restore first.
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[self.install, *self.access_lists.values(), *args["after"]],
                delete_before_replace=True,
            ),
        )
        self.keepalived = None
        if "vip" in args:
            vip = args["vip"]
            self.keepalived = command.remote.Command(
                f"{name}-keepalived",
                connection=connection,
                create=keepalived_apply_script(args["keepalived_config"], str(vip.address.network), vip.interface),
                # Secret, so encrypted in the state like the connection; a new password changes
                # this input and so re-runs the apply. The command text holds no secret.
                stdin=pulumi.Output.secret(args["vrrp_password"]).apply(lambda password: f"{password}\n"),
                delete=keepalived_restore_script(),
                # keepalived tracks the HAProxy that config runs; on destroy the VIP leaves first.
                opts=pulumi.ResourceOptions(
                    parent=self, depends_on=[self.install, self.config], delete_before_replace=True
                ),
            )
        self.register_outputs({"address": host.address})
