"""source-ip-edge: pure modules (config, haproxy_config, *_objects, remote_scripts) and the
Pulumi components that turn their results into resources."""
