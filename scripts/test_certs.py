#!/usr/bin/env python3
"""Test-only TLS material for the local secured Kafka cluster, made fresh in a run directory.

  scripts/test_certs.py OUT_DIR

writes (PEM): ca.pem (the test CA), broker.pem + broker.key and broker-keystore.pem (key and chain
in one file, Kafka's PEM keystore) for 127.0.0.1, localhost and ::1, client.pem + client.key (a
client certificate for mTLS, CN=payflow-client), and other-ca.pem: a CA that signed nothing here,
for the untrusted-certificate test. Nothing here is secret beyond the test run; nothing is committed.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "payflow test"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key) -> bytes:
    # PKCS#8, unencrypted: what Kafka's PEM keystore and Python's ssl module both read
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _ca(cn: str):
    key = _key()
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def _leaf(cn: str, ca_key, ca_cert, *, server: bool):
    key = _key()
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                              critical=False)
               .add_extension(x509.ExtendedKeyUsage(
                   [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if server
                   else [ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1"))]), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        os.chmod(path, 0o600)


def make(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    ca_key, ca = _ca("payflow test CA")
    broker_key, broker = _leaf("kafka-broker", ca_key, ca, server=True)
    client_key, client = _leaf("payflow-client", ca_key, ca, server=False)
    _, other = _ca("payflow untrusted CA")
    _write(out / "ca.pem", _pem(ca))
    _write(out / "other-ca.pem", _pem(other))
    _write(out / "broker.pem", _pem(broker) + _pem(ca))
    _write(out / "broker.key", _key_pem(broker_key), private=True)
    _write(out / "broker-keystore.pem", _key_pem(broker_key) + _pem(broker) + _pem(ca), private=True)
    _write(out / "client.pem", _pem(client))
    _write(out / "client.key", _key_pem(client_key), private=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: scripts/test_certs.py OUT_DIR")
    make(Path(sys.argv[1]))
