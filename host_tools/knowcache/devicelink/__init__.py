"""The host side of knowcache-device's serial protocol (docs/serial-protocol.md)."""
