"""Fixtures for the system-level security tests: generated certificates, distinctive secrets, and
whole systems (four workers and a gateway) on ephemeral ports over the session's real SeaweedFS."""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import secrets
import threading
import uuid
from pathlib import Path

import grpc
import pytest

from services.common.server import ServiceServer
from services.common.settings import Settings
from tests.conftest import start_services

# Distinctive per-session values: a leak of any of them is unambiguous in a log line or an error.
AUTH_TOKEN = f"client-tok-{secrets.token_hex(16)}"
INTERNAL_TOKEN = f"internal-tok-{secrets.token_hex(16)}"


# -- certificates -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Certs:
    ca: str  # CA that signed the server and client certificates
    server_cert: str  # localhost / 127.0.0.1; also usable as a client cert (the gateway dials workers with it)
    server_key: str
    client_cert: str
    client_key: str
    rogue_cert: str  # a client certificate from a CA nobody trusts
    rogue_key: str


def _write_pair(directory: Path, name: str, cert, key) -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization

    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def _issue(subject_cn: str, issuer_cert, issuer_key, *, ca: bool = False, server: bool = False, client: bool = False):
    """A P-256 key and a certificate for it; self-signed when issuer_cert is None."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    issuer = issuer_cert.subject if issuer_cert is not None else subject
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False), critical=True)
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    cert = builder.sign(issuer_key if issuer_key is not None else key, hashes.SHA256())
    return cert, key


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> Certs:
    """A throwaway CA with a server and a client certificate, plus a client certificate from a rogue CA."""
    pytest.importorskip("cryptography")
    d = tmp_path_factory.mktemp("security-certs")
    ca_cert, ca_key = _issue("workbench-test-ca", None, None, ca=True)
    ca_path, _ = _write_pair(d, "ca", ca_cert, ca_key)
    server_cert, server_key = _issue("workbench-service", ca_cert, ca_key, server=True, client=True)
    client_cert, client_key = _issue("workbench-client", ca_cert, ca_key, client=True)
    rogue_ca_cert, rogue_ca_key = _issue("rogue-ca", None, None, ca=True)
    rogue_cert, rogue_key = _issue("rogue-client", rogue_ca_cert, rogue_ca_key, client=True)
    return Certs(ca_path, *_write_pair(d, "server", server_cert, server_key),
                 *_write_pair(d, "client", client_cert, client_key), *_write_pair(d, "rogue", rogue_cert, rogue_key))


# -- buckets and systems ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def module_bucket(seaweed_store) -> str:
    """A bucket shared by one test module (a system started once per module works on it)."""
    name = f"sec-{uuid.uuid4().hex[:16]}"
    seaweed_store.ensure_bucket(name)
    yield name
    seaweed_store.delete_bucket(name)


def base_settings(seaweed, bucket: str, **overrides) -> Settings:
    values = {"listen": "127.0.0.1:0", "grace_seconds": 1.0, "s3_endpoint": seaweed.endpoint,
              "s3_access_key": seaweed.access_key, "s3_secret_key": seaweed.secret_key, "bucket": bucket,
              "log_format": "text"}
    return Settings.from_env({}, **{**values, **overrides})


@dataclasses.dataclass
class System:
    """Every service in-process on its own ephemeral port, as one deployment."""

    settings: Settings  # the gateway's, with the workers' addresses filled in
    servers: dict[str, ServiceServer]

    def address(self, name: str) -> str:
        return self.servers[name].address

    def stop(self) -> None:
        stoppers = [threading.Thread(target=s.shutdown, kwargs={"grace": 0}, daemon=True) for s in self.servers.values()]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join(10)


def start_system(settings: Settings, worker_settings: dict[str, Settings] | None = None,
                 gateway_overrides: dict | None = None) -> System:
    return System(*start_services(settings, worker_settings, gateway_overrides))


@pytest.fixture(scope="module")
def authed_system(seaweed, module_bucket):
    """Plaintext system with auth on: clients need AUTH_TOKEN at the gateway, workers INTERNAL_TOKEN."""
    system = start_system(base_settings(seaweed, module_bucket, auth_token=AUTH_TOKEN, internal_token=INTERNAL_TOKEN))
    yield system
    system.stop()


@pytest.fixture
def channels():
    """dial(address, ca=None, cert=None, key=None) -> a channel closed at the end of the test.

    Plain grpc channels (pick_first), built here rather than with the services' own channel(): the client
    side is the test's, and a refused connection fails an RPC at once instead of after round_robin's retries."""
    opened: list[grpc.Channel] = []

    def dial(address: str, ca: str | None = None, cert: str | None = None, key: str | None = None) -> grpc.Channel:
        if ca:
            credentials = grpc.ssl_channel_credentials(
                Path(ca).read_bytes(), Path(key).read_bytes() if key else None, Path(cert).read_bytes() if cert else None)
            opened.append(grpc.secure_channel(address, credentials))
        else:
            opened.append(grpc.insecure_channel(address))
        return opened[-1]

    yield dial
    for ch in opened:
        ch.close()
