"""Throw-away network namespaces for tests that need real names, real addresses, real handshakes.

`NetnsPair` makes two namespaces joined by a veth pair: the client side (where the SDKs and the
agent run) and the server side (the fake AI service). `/etc/netns/<client>/hosts` maps the given
names to the server's address, so inside the client namespace `api.openai.com` resolves (through
the ordinary resolver, files first) to the test's server and nowhere else. With `dns_server`,
`/etc/netns/<client>/resolv.conf` names the server's address as the only nameserver, so other
names are asked over DNS, of the test's server. Neither namespace has a route out: the only
traffic is on the veth pair.

Everything made is removed in `close()`: processes still running in the namespaces, the
namespaces (which takes the veth pair with them) and the hosts directory, even after a failure
half-way through `open()`.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NETNS_ETC = Path("/etc/netns")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def netns_usable() -> str:
    """'' when namespaces can be made here, else why not (for a skip)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is missing"
    probe = f"umbra-probe-{uuid.uuid4().hex[:8]}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return ""


class NetnsPair:
    """Client and server namespaces on a veth pair; the client resolves `names` to the server."""

    def __init__(self, names: list[str], subnet: str = "10.250.37.0/30", dns_server: bool = False) -> None:
        tag = uuid.uuid4().hex[:6]
        self.client = f"umbra-c-{tag}"
        self.server = f"umbra-s-{tag}"
        self._veth = (f"umc{tag}", f"ums{tag}")  # interface names: at most 15 characters
        net = ipaddress.ip_network(subnet)
        hosts = list(net.hosts())
        self.client_ip, self.server_ip = str(hosts[0]), str(hosts[1])
        self.prefix = net.prefixlen
        self.names = names
        self.dns_server = dns_server
        self._made_etc = False
        self._made: list[str] = []

    @property
    def client_interface(self) -> str:
        return self._veth[0]

    def open(self) -> NetnsPair:
        try:
            for ns in (self.client, self.server):
                _ip("netns", "add", ns)
                self._made.append(ns)
                _ip("-n", ns, "link", "set", "lo", "up")
            veth_c, veth_s = self._veth
            _ip(
                "link",
                "add",
                veth_c,
                "netns",
                self.client,
                "type",
                "veth",
                "peer",
                "name",
                veth_s,
                "netns",
                self.server,
            )
            ends = ((self.client, veth_c, self.client_ip), (self.server, veth_s, self.server_ip))
            for ns, dev, addr in ends:
                _ip("-n", ns, "addr", "add", f"{addr}/{self.prefix}", "dev", dev)
                _ip("-n", ns, "link", "set", dev, "up")
            if not NETNS_ETC.exists():
                NETNS_ETC.mkdir()
                self._made_etc = True
            etc = NETNS_ETC / self.client
            etc.mkdir()
            lines = ["127.0.0.1 localhost", *(f"{self.server_ip} {name}" for name in self.names)]
            (etc / "hosts").write_text("\n".join(lines) + "\n")
            if self.dns_server:
                resolv = f"nameserver {self.server_ip}\noptions timeout:2 attempts:1\n"
                (etc / "resolv.conf").write_text(resolv)
        except BaseException:
            self.close()
            raise
        return self

    def exec_argv(self, ns: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]

    def close(self) -> None:
        for ns in reversed(self._made):
            self._kill_all(ns)
            _ip("netns", "del", ns, check=False)
        self._made.clear()
        shutil.rmtree(NETNS_ETC / self.client, ignore_errors=True)
        if self._made_etc:
            with contextlib.suppress(OSError):  # only if empty: another test's may be in use
                NETNS_ETC.rmdir()

    @staticmethod
    def _kill_all(ns: str) -> None:
        """End what still runs in our namespace (only our own test's processes can be there)."""
        for _ in range(20):
            pids = [int(p) for p in _ip("netns", "pids", ns, check=False).stdout.split()]
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)

    def __enter__(self) -> NetnsPair:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_test_ca(directory: Path, names: list[str]) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate it signs for `names`: (ca.pem, server.pem, server.key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Umbra test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ca_path, cert_path, key_path


def wait_for_capture(agent: subprocess.Popen[str]) -> None:
    """Until the agent's packet socket is open (in its namespace's /proc/net/packet)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if len(Path(f"/proc/{agent.pid}/net/packet").read_text().splitlines()) > 1:
                time.sleep(0.2)  # the BPF filter is attached right after the socket opens
                return
        except OSError:
            pass
        if agent.poll() is not None:
            pytest.fail(f"the agent exited early: {agent.stderr.read() if agent.stderr else ''}")
        time.sleep(0.05)
    pytest.fail("the agent never opened its capture socket")
