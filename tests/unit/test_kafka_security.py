"""Kafka security and durability settings: parsing, refusals (one line naming the variable, never
the password), and what each client gets."""
from __future__ import annotations

import ssl
import subprocess
import sys

import pytest

from payflow.kafka_security import KafkaSecurity, KafkaSettingError, explain_connection_failure
from payflow.settings import ROOT

SECRET = "s3cret-Pa55word"


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    out = tmp_path_factory.mktemp("tls")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "test_certs.py"), str(out)], check=True)
    return out


def sasl_env(**extra) -> dict[str, str]:
    return {"PAYFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "PAYFLOW_KAFKA_SASL_USERNAME": "svc",
            "PAYFLOW_KAFKA_SASL_PASSWORD": SECRET, **extra}


def refused(env: dict[str, str]) -> str:
    with pytest.raises(KafkaSettingError) as info:
        KafkaSecurity.from_env(env)
    line = str(info.value)
    assert "\n" not in line and SECRET not in line
    assert isinstance(info.value, SystemExit)  # uncaught: the line is printed and the exit code is 1
    return line


def test_defaults_are_plaintext_and_the_clusters_own_durability():
    sec = KafkaSecurity.from_env({})
    assert sec.client_kwargs() == {"security_protocol": "PLAINTEXT"}
    assert sec.faust_broker_credentials() is None
    assert sec.topic_config() == (-1, {})
    assert sec.describe() == ("kafka protocol=PLAINTEXT replication_factor=cluster default "
                              "min_insync_replicas=cluster default")


def test_sasl_scram_kwargs_and_faust_credentials():
    sec = KafkaSecurity.from_env(sasl_env(PAYFLOW_KAFKA_SASL_MECHANISM="scram-sha-512"))
    assert sec.client_kwargs() == {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
                                   "sasl_plain_username": "svc", "sasl_plain_password": SECRET}
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
    assert credentials_to_aiokafka_auth(sec.faust_broker_credentials()) == {
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "svc",
        "sasl_plain_password": SECRET, "ssl_context": None}
    assert SECRET not in sec.describe() and SECRET not in repr(sec)
    assert KafkaSecurity.from_env(sasl_env()).sasl_mechanism == "PLAIN"


def test_sasl_ssl_with_ca_and_mtls(tls):
    env = sasl_env(PAYFLOW_KAFKA_SECURITY_PROTOCOL="SASL_SSL", PAYFLOW_KAFKA_SASL_MECHANISM="SCRAM-SHA-256",
                   PAYFLOW_KAFKA_SSL_CAFILE=str(tls / "ca.pem"), PAYFLOW_KAFKA_SSL_CERTFILE=str(tls / "client.pem"),
                   PAYFLOW_KAFKA_SSL_KEYFILE=str(tls / "client.key"))
    sec = KafkaSecurity.from_env(env)
    kw = sec.client_kwargs()
    ctx = kw.pop("ssl_context")
    assert isinstance(ctx, ssl.SSLContext) and ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    assert kw["security_protocol"] == "SASL_SSL" and kw["sasl_mechanism"] == "SCRAM-SHA-256"
    assert sec.client_kwargs()["ssl_context"] is ctx  # one context, every client
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
    auth = credentials_to_aiokafka_auth(sec.faust_broker_credentials())
    assert auth["security_protocol"] == "SASL_SSL" and auth["ssl_context"] is ctx
    ssl_only = KafkaSecurity.from_env({"PAYFLOW_KAFKA_SECURITY_PROTOCOL": "SSL",
                                       "PAYFLOW_KAFKA_SSL_CAFILE": str(tls / "ca.pem"),
                                       "PAYFLOW_KAFKA_SSL_CHECK_HOSTNAME": "false"})
    assert not ssl_only.ssl_context.check_hostname
    assert credentials_to_aiokafka_auth(ssl_only.faust_broker_credentials()) == {
        "security_protocol": "SSL", "ssl_context": ssl_only.ssl_context}


def test_password_from_a_file_without_its_newline(tmp_path):
    f = tmp_path / "pw"
    f.write_text(SECRET + "\n")
    env = sasl_env(PAYFLOW_KAFKA_SASL_PASSWORD_FILE=str(f))
    del env["PAYFLOW_KAFKA_SASL_PASSWORD"]
    sec = KafkaSecurity.from_env(env)
    assert sec.password == SECRET and sec.password_source == "PAYFLOW_KAFKA_SASL_PASSWORD_FILE"


def test_durability_settings():
    sec = KafkaSecurity.from_env({"PAYFLOW_KAFKA_REPLICATION_FACTOR": "3", "PAYFLOW_KAFKA_MIN_INSYNC_REPLICAS": "2"})
    assert sec.topic_config() == (3, {"min.insync.replicas": "2"})
    assert KafkaSecurity.from_env({"PAYFLOW_KAFKA_MIN_INSYNC_REPLICAS": "2"}).topic_config() == (
        -1, {"min.insync.replicas": "2"})


@pytest.mark.parametrize("env, line", [
    ({"PAYFLOW_KAFKA_SECURITY_PROTOCOL": "TLS"},
     "PAYFLOW_KAFKA_SECURITY_PROTOCOL='TLS' is not valid: one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
    (sasl_env(PAYFLOW_KAFKA_SASL_MECHANISM="GSSAPI"),
     "PAYFLOW_KAFKA_SASL_MECHANISM='GSSAPI' is not valid: one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
    ({"PAYFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "PAYFLOW_KAFKA_SASL_PASSWORD": SECRET},
     "PAYFLOW_KAFKA_SASL_USERNAME is required with PAYFLOW_KAFKA_SECURITY_PROTOCOL=SASL_SSL"),
    ({"PAYFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "PAYFLOW_KAFKA_SASL_USERNAME": "svc"},
     "PAYFLOW_KAFKA_SASL_PASSWORD or PAYFLOW_KAFKA_SASL_PASSWORD_FILE is required with "
     "PAYFLOW_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT"),
    (sasl_env(PAYFLOW_KAFKA_SASL_PASSWORD_FILE="/nonexistent/pw"),
     "PAYFLOW_KAFKA_SASL_PASSWORD and PAYFLOW_KAFKA_SASL_PASSWORD_FILE are both set: set one of them"),
    ({"PAYFLOW_KAFKA_SASL_PASSWORD": SECRET},
     "PAYFLOW_KAFKA_SASL_PASSWORD is set but PAYFLOW_KAFKA_SECURITY_PROTOCOL=PLAINTEXT: SASL settings need "
     "SASL_PLAINTEXT or SASL_SSL"),
    ({"PAYFLOW_KAFKA_SSL_CAFILE": "/etc/hosts"},
     "PAYFLOW_KAFKA_SSL_CAFILE is set but PAYFLOW_KAFKA_SECURITY_PROTOCOL=PLAINTEXT: TLS settings need SSL or SASL_SSL"),
    ({"PAYFLOW_KAFKA_SECURITY_PROTOCOL": "SSL", "PAYFLOW_KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"},
     "PAYFLOW_KAFKA_SSL_CAFILE='/nonexistent/ca.pem' is not valid: no readable file there"),
    ({"PAYFLOW_KAFKA_SECURITY_PROTOCOL": "SSL", "PAYFLOW_KAFKA_SSL_CHECK_HOSTNAME": "maybe"},
     "PAYFLOW_KAFKA_SSL_CHECK_HOSTNAME='maybe' is not valid: true or false"),
    ({"PAYFLOW_KAFKA_REPLICATION_FACTOR": "0"},
     "PAYFLOW_KAFKA_REPLICATION_FACTOR='0' is not valid: -1 (the cluster's default) or a whole number from 1"),
    ({"PAYFLOW_KAFKA_REPLICATION_FACTOR": "three"},
     "PAYFLOW_KAFKA_REPLICATION_FACTOR='three' is not valid: -1 (the cluster's default) or a whole number from 1"),
    ({"PAYFLOW_KAFKA_MIN_INSYNC_REPLICAS": "0"},
     "PAYFLOW_KAFKA_MIN_INSYNC_REPLICAS='0' is not valid: a whole number from 1, or unset"),
    ({"PAYFLOW_KAFKA_REPLICATION_FACTOR": "2", "PAYFLOW_KAFKA_MIN_INSYNC_REPLICAS": "3"},
     "PAYFLOW_KAFKA_MIN_INSYNC_REPLICAS=3 is not valid: more than PAYFLOW_KAFKA_REPLICATION_FACTOR=2 "
     "(no write could ever succeed)"),
])
def test_invalid_values_are_refused_in_one_line(env, line):
    assert refused(env) == line


def test_a_file_that_is_not_pem_is_refused_at_start(tmp_path, tls):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    line = refused({"PAYFLOW_KAFKA_SECURITY_PROTOCOL": "SSL", "PAYFLOW_KAFKA_SSL_CAFILE": str(junk)})
    assert line.startswith(f"PAYFLOW_KAFKA_SSL_CAFILE='{junk}' is not valid: not a PEM CA bundle")
    line = refused({"PAYFLOW_KAFKA_SECURITY_PROTOCOL": "SSL", "PAYFLOW_KAFKA_SSL_CERTFILE": str(tls / "client.pem"),
                    "PAYFLOW_KAFKA_SSL_KEYFILE": str(tls / "broker.key")})  # not this certificate's key
    assert line.startswith(f"PAYFLOW_KAFKA_SSL_CERTFILE='{tls / 'client.pem'}' is not valid")


def test_an_invalid_value_exits_1_with_its_line_and_no_traceback():
    env = {"PATH": "/usr/bin:/bin", "PAYFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
           "PAYFLOW_KAFKA_SASL_USERNAME": "svc", "PAYFLOW_KAFKA_SASL_PASSWORD": SECRET,
           "PAYFLOW_KAFKA_SASL_MECHANISM": "SCRAM-SHA-1"}
    proc = subprocess.run([sys.executable, "-c", "from payflow.kafka_security import current; current()"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr == ("PAYFLOW_KAFKA_SASL_MECHANISM='SCRAM-SHA-1' is not valid: "
                           "one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512\n")


def test_a_broker_nobody_answers_at_is_named():
    from aiokafka.errors import KafkaConnectionError

    from tests.helpers import free_port
    bootstrap = f"127.0.0.1:{free_port()}"
    assert explain_connection_failure(KafkaConnectionError("Unable to bootstrap"), bootstrap,
                                      KafkaSecurity.from_env({}), timeout=1) == (
        f"Kafka unreachable: no broker answers at {bootstrap} (PAYFLOW_KAFKA_BOOTSTRAP)")


class _Listener:
    """A local TCP listener, TLS (the test broker certificate) or plain, that reads what comes and
    closes: enough for the probes of explain_connection_failure, no Kafka needed."""

    def __init__(self, tls_dir=None):
        import socket
        import threading

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.ctx = None
        if tls_dir is not None:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(tls_dir / "broker.pem", tls_dir / "broker.key")
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                conn.settimeout(2)
                if self.ctx is not None:
                    conn = self.ctx.wrap_socket(conn, server_side=True)
                conn.recv(4096)
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    def close(self):
        self.sock.close()


def test_plaintext_client_against_a_tls_listener_is_named(tls):
    from aiokafka.errors import KafkaConnectionError

    listener = _Listener(tls)
    try:
        line = explain_connection_failure(KafkaConnectionError("Unable to bootstrap"), f"127.0.0.1:{listener.port}",
                                          KafkaSecurity.from_env({}), timeout=2)
    finally:
        listener.close()
    assert line == (f"Kafka connection failed at 127.0.0.1:{listener.port}: the listener speaks TLS but "
                    "PAYFLOW_KAFKA_SECURITY_PROTOCOL=PLAINTEXT (use SSL or SASL_SSL)")


def test_untrusted_broker_certificate_and_a_listener_without_tls_are_named(tls):
    from aiokafka.errors import KafkaConnectionError

    other = KafkaSecurity.from_env({"PAYFLOW_KAFKA_SECURITY_PROTOCOL": "SSL",
                                    "PAYFLOW_KAFKA_SSL_CAFILE": str(tls / "other-ca.pem")})
    listener = _Listener(tls)
    try:
        line = explain_connection_failure(KafkaConnectionError("Unable to bootstrap"), f"127.0.0.1:{listener.port}",
                                          other, timeout=2)
    finally:
        listener.close()
    assert line.startswith(f"Kafka TLS failed at 127.0.0.1:{listener.port}: the broker's certificate is not trusted "
                           f"by PAYFLOW_KAFKA_SSL_CAFILE={tls / 'other-ca.pem'} (")
    plain = _Listener()
    try:
        line = explain_connection_failure(KafkaConnectionError("Unable to bootstrap"), f"127.0.0.1:{plain.port}",
                                          other, timeout=2)
    finally:
        plain.close()
    assert line == (f"Kafka TLS failed at 127.0.0.1:{plain.port}: the listener does not speak TLS but "
                    "PAYFLOW_KAFKA_SECURITY_PROTOCOL=SSL (use PLAINTEXT or SASL_PLAINTEXT)")
