"""The lab: real Debian hosts booted with systemd-nspawn on a private bridge, a PostgreSQL instance and
the WhatsApp simulator reachable from them. Used by the tests, the demo and `waops lab`."""

from waops_lab.lab.core import Lab, LabHost, LabSettings

__all__ = ["Lab", "LabHost", "LabSettings"]
