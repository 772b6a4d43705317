"""Kafka connection security and topic durability, read once from the environment.

Every Kafka client payflow makes takes its security from here: aiokafka producers, consumers
and admin clients through `client_kwargs()`, the Faust worker through
`faust_broker_credentials()`; every topic payflow creates takes `topic_config()`.

  PAYFLOW_KAFKA_SECURITY_PROTOCOL    PLAINTEXT (default), SSL, SASL_PLAINTEXT or SASL_SSL
  PAYFLOW_KAFKA_SASL_MECHANISM       PLAIN (default), SCRAM-SHA-256 or SCRAM-SHA-512
  PAYFLOW_KAFKA_SASL_USERNAME        SASL user
  PAYFLOW_KAFKA_SASL_PASSWORD        its password, or PAYFLOW_KAFKA_SASL_PASSWORD_FILE: a file holding it
  PAYFLOW_KAFKA_SSL_CAFILE           PEM CA bundle the brokers' certificates are checked against
                                     (default: the system's trust store)
  PAYFLOW_KAFKA_SSL_CERTFILE         client certificate (PEM) for mTLS, with
  PAYFLOW_KAFKA_SSL_KEYFILE          its private key (PEM, unencrypted)
  PAYFLOW_KAFKA_SSL_CHECK_HOSTNAME   true (default): the certificate must name the broker's host
  PAYFLOW_KAFKA_REPLICATION_FACTOR   replication factor of created topics; -1 (default) = the
                                     cluster's default.replication.factor (KIP-464)
  PAYFLOW_KAFKA_MIN_INSYNC_REPLICAS  min.insync.replicas of created topics (default: the cluster's)

Producers use acks=all: aiokafka's idempotent producer (enable_idempotence=True) sets it.
An invalid value stops the process with one line naming the variable (never the password).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class KafkaSettingError(SystemExit):
    """An invalid Kafka security setting. A SystemExit: uncaught, it prints its one line and exits 1."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class KafkaConnectionFailure(SystemExit):
    """The broker could not be reached or refused us; the message is one line for the operator."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class TopicConfig(NamedTuple):
    replication_factor: int  # -1: the cluster's default.replication.factor
    config: dict[str, str]   # topic configs to add at creation (min.insync.replicas)


def _bad(name: str, value: str, allowed: str) -> KafkaSettingError:
    return KafkaSettingError(f"{name}={value!r} is not valid: {allowed}")


def _int(env: Mapping[str, str], name: str, default: int | None, low: int, high: int, allowed: str) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _bad(name, raw, allowed) from None
    if not (low <= value <= high):
        raise _bad(name, raw, allowed)
    return value


def _readable(env: Mapping[str, str], name: str) -> str | None:
    path = env.get(name, "").strip()
    if not path:
        return None
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise KafkaSettingError(f"{name}={path!r} is not valid: no readable file there")
    return path


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    password_source: str | None = None  # the variable the password came from, for messages
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    check_hostname: bool = True
    replication_factor: int = -1
    min_insync_replicas: int | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "KafkaSecurity":
        env = os.environ if env is None else env
        name = "PAYFLOW_KAFKA_SECURITY_PROTOCOL"
        protocol = env.get(name, "").strip().upper() or "PLAINTEXT"
        if protocol not in PROTOCOLS:
            raise _bad(name, env[name], "one of " + ", ".join(PROTOCOLS))
        sasl = protocol.startswith("SASL_")
        tls = protocol in ("SSL", "SASL_SSL")

        mechanism = username = password = source = None
        for var in ("PAYFLOW_KAFKA_SASL_MECHANISM", "PAYFLOW_KAFKA_SASL_USERNAME",
                    "PAYFLOW_KAFKA_SASL_PASSWORD", "PAYFLOW_KAFKA_SASL_PASSWORD_FILE"):
            if env.get(var, "").strip() and not sasl:
                raise KafkaSettingError(f"{var} is set but {name}={protocol}: SASL settings need "
                                        "SASL_PLAINTEXT or SASL_SSL")
        if sasl:
            var = "PAYFLOW_KAFKA_SASL_MECHANISM"
            mechanism = env.get(var, "").strip().upper() or "PLAIN"
            if mechanism not in MECHANISMS:
                raise _bad(var, env[var], "one of " + ", ".join(MECHANISMS))
            username = env.get("PAYFLOW_KAFKA_SASL_USERNAME", "").strip()
            if not username:
                raise KafkaSettingError(f"PAYFLOW_KAFKA_SASL_USERNAME is required with {name}={protocol}")
            direct = env.get("PAYFLOW_KAFKA_SASL_PASSWORD", "")
            pfile = env.get("PAYFLOW_KAFKA_SASL_PASSWORD_FILE", "").strip()
            if direct and pfile:
                raise KafkaSettingError("PAYFLOW_KAFKA_SASL_PASSWORD and PAYFLOW_KAFKA_SASL_PASSWORD_FILE are "
                                        "both set: set one of them")
            if pfile:
                source = "PAYFLOW_KAFKA_SASL_PASSWORD_FILE"
                _readable(env, source)
                with open(pfile, encoding="utf-8") as f:
                    password = f.read().rstrip("\r\n")  # a trailing newline is not part of it
                if not password:
                    raise KafkaSettingError(f"{source}={pfile!r} is not valid: the file is empty")
            elif direct:
                source, password = "PAYFLOW_KAFKA_SASL_PASSWORD", direct
            else:
                raise KafkaSettingError(f"PAYFLOW_KAFKA_SASL_PASSWORD or PAYFLOW_KAFKA_SASL_PASSWORD_FILE is "
                                        f"required with {name}={protocol}")

        for var in ("PAYFLOW_KAFKA_SSL_CAFILE", "PAYFLOW_KAFKA_SSL_CERTFILE", "PAYFLOW_KAFKA_SSL_KEYFILE"):
            if env.get(var, "").strip() and not tls:
                raise KafkaSettingError(f"{var} is set but {name}={protocol}: TLS settings need SSL or SASL_SSL")
        cafile = _readable(env, "PAYFLOW_KAFKA_SSL_CAFILE")
        certfile = _readable(env, "PAYFLOW_KAFKA_SSL_CERTFILE")
        keyfile = _readable(env, "PAYFLOW_KAFKA_SSL_KEYFILE")
        if keyfile and not certfile:
            raise KafkaSettingError("PAYFLOW_KAFKA_SSL_KEYFILE is set without PAYFLOW_KAFKA_SSL_CERTFILE")
        var = "PAYFLOW_KAFKA_SSL_CHECK_HOSTNAME"
        raw = env.get(var, "").strip().lower()
        if raw and raw not in _TRUE | _FALSE:
            raise _bad(var, env[var], "true or false")
        check_hostname = raw not in _FALSE

        rf = _int(env, "PAYFLOW_KAFKA_REPLICATION_FACTOR", -1, -1, 32767,
                  "-1 (the cluster's default) or a whole number from 1")
        if rf == 0:
            raise _bad("PAYFLOW_KAFKA_REPLICATION_FACTOR", env["PAYFLOW_KAFKA_REPLICATION_FACTOR"],
                       "-1 (the cluster's default) or a whole number from 1")
        isr = _int(env, "PAYFLOW_KAFKA_MIN_INSYNC_REPLICAS", None, 1, 32767, "a whole number from 1, or unset")
        if isr is not None and rf > 0 and isr > rf:
            raise KafkaSettingError(f"PAYFLOW_KAFKA_MIN_INSYNC_REPLICAS={isr} is not valid: more than "
                                    f"PAYFLOW_KAFKA_REPLICATION_FACTOR={rf} (no write could ever succeed)")
        sec = cls(protocol=protocol, sasl_mechanism=mechanism, username=username, password=password,
                  password_source=source, cafile=cafile, certfile=certfile, keyfile=keyfile,
                  check_hostname=check_hostname, replication_factor=rf, min_insync_replicas=isr)
        if tls:
            sec.ssl_context  # a bad PEM file fails here, at start, with its variable named
        return sec

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @functools.cached_property
    def ssl_context(self) -> ssl.SSLContext | None:
        """One context for every client (None without TLS): verifies the broker, optionally presents ours."""
        if not self.tls:
            return None
        try:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.cafile)
        except (ssl.SSLError, OSError) as exc:
            raise KafkaSettingError(f"PAYFLOW_KAFKA_SSL_CAFILE={self.cafile!r} is not valid: not a PEM CA "
                                    f"bundle ({exc.__class__.__name__})") from None
        ctx.check_hostname = self.check_hostname
        if self.certfile:
            try:
                ctx.load_cert_chain(self.certfile, self.keyfile)
            except (ssl.SSLError, OSError) as exc:
                raise KafkaSettingError(f"PAYFLOW_KAFKA_SSL_CERTFILE={self.certfile!r} is not valid: no PEM "
                                        f"certificate with its key (PAYFLOW_KAFKA_SSL_KEYFILE) "
                                        f"({exc.__class__.__name__})") from None
        return ctx

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for AIOKafkaProducer, AIOKafkaConsumer, AIOKafkaAdminClient, AIOKafkaClient."""
        kwargs: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls:
            kwargs["ssl_context"] = self.ssl_context
        if self.sasl:
            kwargs.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.username,
                          sasl_plain_password=self.password)
        return kwargs

    def faust_broker_credentials(self):
        """For faust.App(broker_credentials=...): Faust maps SSLCredentials to security_protocol SSL and
        SASLCredentials to SASL_PLAINTEXT, or SASL_SSL when it carries an ssl_context
        (faust.transport.drivers.aiokafka.credentials_to_aiokafka_auth). None for PLAINTEXT."""
        from faust.auth import SASLCredentials, SSLCredentials

        if self.sasl:
            return SASLCredentials(username=self.username, password=self.password,
                                   ssl_context=self.ssl_context, mechanism=self.sasl_mechanism)
        if self.tls:
            return SSLCredentials(self.ssl_context)
        return None

    def topic_config(self) -> TopicConfig:
        config = {} if self.min_insync_replicas is None else {"min.insync.replicas": str(self.min_insync_replicas)}
        return TopicConfig(self.replication_factor, config)

    def describe(self) -> str:
        """One line for logs: no password, no key material."""
        parts = [f"protocol={self.protocol}"]
        if self.sasl:
            parts.append(f"sasl={self.sasl_mechanism} user={self.username}")
        if self.tls:
            parts.append(f"ca={self.cafile or 'system'} client_cert={'yes' if self.certfile else 'no'} "
                         f"check_hostname={str(self.check_hostname).lower()}")
        rf = "cluster default" if self.replication_factor == -1 else str(self.replication_factor)
        isr = "cluster default" if self.min_insync_replicas is None else str(self.min_insync_replicas)
        parts.append(f"replication_factor={rf} min_insync_replicas={isr}")
        return "kafka " + " ".join(parts)


@functools.lru_cache(maxsize=1)
def current() -> KafkaSecurity:
    """The process's settings, read from the environment once."""
    return KafkaSecurity.from_env()


# ---------------------------------------------------------------------------------------------
# Connection failures: aiokafka logs the real cause and raises "Unable to bootstrap"; what an
# operator needs is which setting is wrong for which broker. explain_connection_failure looks at
# the exception and, when it says nothing, probes the first reachable broker directly.

def _brokers(bootstrap: str) -> list[tuple[str, int]]:
    out = []
    for part in bootstrap.split(","):
        part = part.strip()
        if part:
            host, _, port = part.rpartition(":")
            out.append((host.strip("[]") or part, int(port) if port.isdigit() else 9092))
    return out


def _chain(exc: BaseException | None):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _known(exc: BaseException, sec: KafkaSecurity, broker: str) -> str | None:
    from aiokafka import errors as ke

    for e in _chain(exc):
        if isinstance(e, (ke.SaslAuthenticationFailed, ke.AuthenticationFailedError)):
            return (f"Kafka authentication failed at {broker}: the broker rejected user {sec.username!r} with "
                    f"{sec.sasl_mechanism} (check PAYFLOW_KAFKA_SASL_USERNAME and {sec.password_source})")
        if isinstance(e, ke.UnsupportedSaslMechanismError):
            return (f"Kafka authentication failed at {broker}: the listener does not offer "
                    f"PAYFLOW_KAFKA_SASL_MECHANISM={sec.sasl_mechanism}")
        if isinstance(e, ssl.SSLCertVerificationError):
            return _verify_message(e, sec, broker)
    return None


def _verify_message(e: ssl.SSLCertVerificationError, sec: KafkaSecurity, broker: str) -> str:
    if getattr(e, "verify_code", None) == 62 or "hostname" in str(e).lower() or "IP address mismatch" in str(e):
        return (f"Kafka TLS failed at {broker}: the broker's certificate does not name {broker.rsplit(':', 1)[0]} "
                f"(PAYFLOW_KAFKA_SSL_CHECK_HOSTNAME=true)")
    why = getattr(e, "verify_message", None) or "certificate verify failed"
    store = f"PAYFLOW_KAFKA_SSL_CAFILE={sec.cafile}" if sec.cafile else "the system trust store (set PAYFLOW_KAFKA_SSL_CAFILE)"
    return f"Kafka TLS failed at {broker}: the broker's certificate is not trusted by {store} ({why})"


def _speaks_tls(host: str, port: int, timeout: float) -> bool | None:
    """True if the listener answers a TLS ClientHello, False if not, None if unreachable."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return None
    with raw:
        try:
            with ctx.wrap_socket(raw, server_hostname=host):
                return True
        except ssl.SSLError as exc:
            # an alert (e.g. handshake failure for a missing client cert) is a TLS server talking
            return "alert" in str(exc).lower()
        except OSError:  # reset, EOF or timeout: not TLS
            return False


def _tls_probe(host: str, port: int, sec: KafkaSecurity, broker: str, timeout: float) -> str | None:
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return None
    with raw:
        try:
            with sec.ssl_context.wrap_socket(raw, server_hostname=host) as s:
                s.settimeout(1.0)
                try:
                    s.recv(1)  # TLS 1.3: a refused client certificate shows up on the first read
                except (socket.timeout, TimeoutError):
                    return None
                except ssl.SSLError as exc:
                    if "certificate required" in str(exc).lower() or "alert" in str(exc).lower():
                        return _client_cert_message(sec, broker)
                    return None
                return None
        except ssl.SSLCertVerificationError as exc:
            return _verify_message(exc, sec, broker)
        except ssl.SSLError as exc:
            if "alert" in str(exc).lower():
                return _client_cert_message(sec, broker)
            return None
        except OSError:
            return None


def _client_cert_message(sec: KafkaSecurity, broker: str) -> str:
    if not sec.certfile:
        return (f"Kafka TLS failed at {broker}: the broker requires a client certificate "
                "(set PAYFLOW_KAFKA_SSL_CERTFILE and PAYFLOW_KAFKA_SSL_KEYFILE)")
    return (f"Kafka TLS failed at {broker}: the broker refused the client certificate "
            f"PAYFLOW_KAFKA_SSL_CERTFILE={sec.certfile}")


async def _sasl_probe(host: str, port: int, sec: KafkaSecurity, timeout: float) -> BaseException | None:
    from aiokafka.conn import create_conn

    try:
        conn = await asyncio.wait_for(create_conn(host, port, request_timeout_ms=int(timeout * 1000),
                                                  **sec.client_kwargs()), timeout)
    except BaseException as exc:  # noqa: BLE001 - what it raised is the diagnosis
        return exc
    conn.close()
    return None


def _run(coro):
    """Run a coroutine to completion from sync code, whether or not an event loop is running here."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def explain_connection_failure(exc: BaseException, bootstrap: str, security: KafkaSecurity | None = None,
                               *, timeout: float = 5.0) -> str:
    """One line naming the setting and the broker for a failed Kafka connection."""
    sec = security or current()
    brokers = _brokers(bootstrap) or [("127.0.0.1", 9092)]
    first = f"{brokers[0][0]}:{brokers[0][1]}"
    known = _known(exc, sec, first)
    if known:
        return known
    reachable = []
    for host, port in brokers:
        broker = f"{host}:{port}"
        tls = _speaks_tls(host, port, timeout)
        if tls is None:
            continue
        reachable.append(broker)
        if tls and not sec.tls:
            return (f"Kafka connection failed at {broker}: the listener speaks TLS but "
                    f"PAYFLOW_KAFKA_SECURITY_PROTOCOL={sec.protocol} (use SSL or SASL_SSL)")
        if not tls and sec.tls:
            return (f"Kafka TLS failed at {broker}: the listener does not speak TLS but "
                    f"PAYFLOW_KAFKA_SECURITY_PROTOCOL={sec.protocol} (use PLAINTEXT or SASL_PLAINTEXT)")
        if sec.tls:
            found = _tls_probe(host, port, sec, broker, timeout)
            if found:
                return found
        if sec.sasl:
            err = _run(_sasl_probe(host, port, sec, timeout * 2))
            found = _known(err, sec, broker) if err is not None else None
            if found:
                return found
        break
    if not reachable:
        return f"Kafka unreachable: no broker answers at {bootstrap} (PAYFLOW_KAFKA_BOOTSTRAP)"
    what = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return (f"Kafka connection failed at {bootstrap} with PAYFLOW_KAFKA_SECURITY_PROTOCOL={sec.protocol}: "
            f"{what[:300]}")


async def check_connection(bootstrap: str, security: KafkaSecurity | None = None, *, timeout: float = 30.0) -> None:
    """Fetch cluster metadata once; on failure raise KafkaConnectionFailure with the one-line cause.
    For worker and CLI start: a wrong setting exits at once instead of retrying forever."""
    import logging

    from aiokafka import AIOKafkaClient

    sec = security or current()
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000),
                            **sec.client_kwargs())
    # aiokafka logs each failed attempt (with tracebacks); the line raised below says it once
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        await asyncio.wait_for(client.bootstrap(), timeout)
    except Exception as exc:  # noqa: BLE001 - every failure gets its explanation
        line = await asyncio.get_running_loop().run_in_executor(
            None, lambda: explain_connection_failure(exc, bootstrap, sec))
        raise KafkaConnectionFailure(line) from None
    finally:
        await client.close()
        quiet.setLevel(level)


async def cluster_replication_factor(bootstrap: str, security: KafkaSecurity | None = None) -> int:
    """The replication factor payflow's topics get: the setting, or for -1 the brokers'
    default.replication.factor (Faust's topic_replication_factor takes no -1; aiokafka's admin
    client does, see kafka_admin.ensure_topics)."""
    sec = security or current()
    if sec.replication_factor > 0:
        return sec.replication_factor
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="payflow-admin", **sec.client_kwargs())
    from payflow.runtime.internals import refresh_metadata

    await admin.start()
    try:
        broker = min(b.nodeId for b in (await refresh_metadata(admin)).brokers())
        for response in await admin.describe_configs(
                [ConfigResource(ConfigResourceType.BROKER, str(broker), {"default.replication.factor": None})]):
            for error_code, _message, _kind, _name, entries, *_ in response.resources:
                for entry in entries if error_code == 0 else ():
                    if entry[0] == "default.replication.factor" and entry[1]:
                        return int(entry[1])
    finally:
        await admin.close()
    return 1  # the broker's own default when it reports none


def preflight(bootstrap: str) -> int:
    """At worker start: check the connection (a wrong setting exits with its one line) and return
    the replication factor for the topics the worker creates."""
    async def run() -> int:
        await check_connection(bootstrap)
        return await cluster_replication_factor(bootstrap)
    return asyncio.run(run())


def connect_or_exit(bootstrap: str) -> None:
    """At a CLI command's start: a wrong setting or an unreachable broker exits with one line."""
    asyncio.run(check_connection(bootstrap))
