"""A second RabbitMQ node with only a TLS listener, and the certificates it and its clients use.

The node runs from a temporary directory of its own (config, database, logs, certificates)
owned by the ``rabbitmq`` user, on free loopback ports, so it never touches the main node
``rabbit@localhost``. `TlsNode.stop()` halts it and removes the directory.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

STARTUP_TIMEOUT = 45.0
_CTL_TIMEOUT = 30.0


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as PEM files."""

    cert: Path
    key: Path


class Authority:
    """A throw-away certificate authority."""

    def __init__(self, directory: Path, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.certificate = (
            _builder(self.name, self.name, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.path = directory / f"{name.replace(' ', '-')}.pem"
        self.path.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    def issue(self, directory: Path, stem: str, *, server: bool) -> Issued:
        """A leaf certificate for localhost and 127.0.0.1 (server), or for a client named `stem`."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost" if server else stem)])
        names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        purpose = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            _builder(subject, self.name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        certificate = builder.sign(self.key, hashes.SHA256())
        issued = Issued(directory / f"{stem}.pem", directory / f"{stem}.key")
        issued.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return issued


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def unavailable_reason() -> str | None:
    """Why a second node cannot be started on this machine, or None."""
    for tool in ("rabbitmq-server", "rabbitmqctl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    try:
        pwd.getpwnam("rabbitmq")
    except KeyError:
        return "there is no 'rabbitmq' system user to run a second node as"
    if os.geteuid() != 0:
        return "starting a second node needs root (it runs as the rabbitmq user from a directory chowned to it)"
    return None


@dataclass
class TlsNode:
    """A running RabbitMQ node whose only AMQP listener is TLS, requiring client certificates."""

    name: str
    port: int
    directory: Path
    ca: Authority
    client: Issued

    @classmethod
    def start(cls) -> TlsNode:
        """Make the certificates and the config, start the node and wait until it serves (or raise)."""
        directory = Path(tempfile.mkdtemp(prefix="broadcaster-tls-"))
        ca = Authority(directory, "test ca")
        server = ca.issue(directory, "server", server=True)
        node = cls(
            f"tls-{uuid.uuid4().hex[:8]}@localhost",
            free_port(),
            directory,
            ca,
            ca.issue(directory, "client", server=False),
        )
        try:
            node._write_config(server)
            node._launch()
        except BaseException:
            node.stop()
            raise
        return node

    @property
    def log(self) -> str:
        logs = sorted((self.directory / "log").glob("*.log"))
        return "\n".join(path.read_text(errors="replace")[-4000:] for path in logs)

    def _write_config(self, server: Issued) -> None:
        (self.directory / "rabbitmq.conf").write_text(
            "listeners.tcp = none\n"
            f"listeners.ssl.default = 127.0.0.1:{self.port}\n"
            f"ssl_options.cacertfile = {self.ca.path}\n"
            f"ssl_options.certfile = {server.cert}\n"
            f"ssl_options.keyfile = {server.key}\n"
            "ssl_options.verify = verify_peer\n"
            "ssl_options.fail_if_no_peer_cert = true\n"
        )
        (self.directory / "enabled_plugins").write_text("")
        for sub in ("mnesia", "log"):
            (self.directory / sub).mkdir()
        # The node runs as the rabbitmq user (rabbitmq-server drops to it); it must read
        # its certificates and write its database and logs here.
        account = pwd.getpwnam("rabbitmq")
        for path in [self.directory, *self.directory.rglob("*")]:
            os.chown(path, account.pw_uid, account.pw_gid)
        self.directory.chmod(0o755)

    def _environment(self) -> dict[str, str]:
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_CONFIG_FILE": str(self.directory / "rabbitmq.conf"),
            "RABBITMQ_MNESIA_BASE": str(self.directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.directory / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.directory / "enabled_plugins"),
        }

    def _launch(self) -> None:
        started = subprocess.run(
            ["rabbitmq-server", "-detached"],
            env=self._environment(),
            capture_output=True,
            text=True,
            timeout=_CTL_TIMEOUT,
            check=False,
            cwd=self.directory,
        )
        if started.returncode != 0:
            raise RuntimeError(f"rabbitmq-server -detached failed: {started.stderr or started.stdout}")
        # await_startup gives up at once while the node is not registered yet: ask again.
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self._ctl("await_startup", "--timeout", "10").returncode == 0:
                return
            time.sleep(0.5)
        raise RuntimeError(f"node {self.name} did not start within {STARTUP_TIMEOUT:g} s; its log:\n{self.log}")

    def _ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["rabbitmqctl", "-n", self.name, *args], capture_output=True, text=True, timeout=_CTL_TIMEOUT, check=False
        )

    def stop(self) -> None:
        """Halt the node (if it runs) and remove its directory."""
        try:
            if self._ctl("stop").returncode != 0:
                self._kill_by_pid_file()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _kill_by_pid_file(self) -> None:
        # `stop` fails when the node never registered; its pid file still names our process.
        for pid_file in (self.directory / "mnesia").glob("*.pid"):
            text = pid_file.read_text().strip()
            if text.isdigit():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(text), 9)
