"""The agent as a system service: its systemd unit (data) and `umbra-agent install`/`uninstall`."""
