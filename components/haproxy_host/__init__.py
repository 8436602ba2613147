"""haproxy.cfg and the shell scripts that install, apply and restore it on each HAProxy host."""
