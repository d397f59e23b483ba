"""Does a Kafka broker answer at the configured addresses, with the configured security?

Kafka clients retry a bootstrap that fails for up to their full timeout (30-60 s) and then
report only "Unable to bootstrap", whatever the cause. `probe` asks each bootstrap address
directly, over one plain socket with a short timeout, and names what went wrong: nothing
listens, the host does not resolve, TLS is configured against a plaintext listener (or the
other way round), the certificate is not trusted, the SASL mechanism is not enabled, or the
broker advertises an address that does not answer.

SASL authentication itself (user and password) is not attempted here: the handshake says the
mechanism is enabled, and the client's own connection then authenticates.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time

from worker.config import Security, WorkerConfig
from worker.errors import BrokerUnavailable, ConfigError

PROBE_TIMEOUT_S = 5.0
_API_VERSIONS, _METADATA, _SASL_HANDSHAKE = 18, 3, 17
_UNSUPPORTED_SASL_MECHANISM, _ILLEGAL_SASL_STATE = 33, 34
_MAX_RESPONSE = 4 * 1024 * 1024


def addresses(bootstrap_servers: str, default_port: int = 9092) -> list[tuple[str, int]]:
    """(host, port) of each HOST[:PORT] or [IPv6]:PORT; a port that is not a number is -1."""
    found = []
    for address in bootstrap_servers.split(","):
        address = address.strip()
        if address.startswith("["):
            host, _, rest = address[1:].partition("]")
            port_text = rest.removeprefix(":")
        elif address.count(":") == 1:
            host, _, port_text = address.partition(":")
        else:
            host, port_text = address, ""
        port = int(port_text) if port_text.isdigit() else (-1 if port_text else default_port)
        found.append((host, port))
    return found


class _Problem(Exception):
    """What one address did wrong; `settings` when it answers, but not as configured."""

    def __init__(self, text: str, settings: bool = False) -> None:
        super().__init__(text)
        self.text = text
        self.settings = settings


def probe(config: WorkerConfig, timeout_s: float = PROBE_TIMEOUT_S) -> str:
    """The first bootstrap address that answers as configured.

    Raises BrokerUnavailable (exit 69) when no address answers, ConfigError (exit 78) when
    one answers but not with the configured security; the message names every address."""
    assert config.bootstrap_servers, "no bootstrap servers configured"
    targets = addresses(config.bootstrap_servers)
    each_s = max(timeout_s / len(targets), 1.0)
    problems: list[tuple[str, _Problem]] = []
    for host, port in targets:
        where = f"{host}:{port}"
        try:
            _probe_address(host, port, config.security, each_s)
            return where
        except _Problem as problem:
            problems.append((where, problem))
    listed = "; ".join(f"{where}: {problem.text}" for where, problem in problems)
    if any(problem.settings for _, problem in problems):
        raise ConfigError(
            f"Kafka does not accept --security-protocol {config.security.security_protocol} "
            f"as configured: {listed}"
        )
    raise BrokerUnavailable(f"no Kafka broker answers at {listed}")


def _probe_address(host: str, port: int, security: Security, timeout_s: float) -> None:
    sock = _connect(host, port, timeout_s)
    try:
        protocol = security.security_protocol
        if protocol in ("SSL", "SASL_SSL"):
            sock = _tls(sock, host, security, timeout_s)
        conn = _Connection(sock, protocol)
        conn.request(_API_VERSIONS, 0, b"")
        if protocol.startswith("SASL_"):
            _sasl_handshake(conn, security.sasl_mechanism or "")
        else:
            brokers = _metadata_brokers(conn)
            _check_advertised(brokers, host, port, timeout_s)
    finally:
        sock.close()


def _connect(host: str, port: int, timeout_s: float) -> socket.socket:
    if not 0 < port < 65536:
        raise _Problem("not a HOST:PORT address")
    try:
        return socket.create_connection((host, port), timeout=timeout_s)
    except socket.gaierror:
        raise _Problem(f"host {host!r} not found") from None
    except ConnectionRefusedError:
        raise _Problem("connection refused (nothing listens there)") from None
    except TimeoutError:
        raise _Problem(f"no answer within {timeout_s:.0f} s") from None
    except OSError as error:
        raise _Problem(error.strerror or type(error).__name__) from None


def _tls(sock: socket.socket, host: str, security: Security, timeout_s: float) -> ssl.SSLSocket:
    """The TLS handshake the client would do (kafka-python's defaults: TLS 1.2+, hostname
    checked, the system CAs unless --ssl-cafile)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if security.ssl_cafile:
        context.load_verify_locations(security.ssl_cafile)
    else:
        context.load_default_certs()
    if security.ssl_certfile:
        context.load_cert_chain(security.ssl_certfile, security.ssl_keyfile)
    try:
        tls = context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
        tls.settimeout(timeout_s)
        tls.do_handshake()
        return tls
    except ssl.SSLCertVerificationError as error:
        problem = f"its TLS certificate is not accepted: {error.verify_message} (--ssl-cafile)"
    except TimeoutError:
        problem = f"no TLS handshake within {timeout_s:.0f} s: {_PLAINTEXT_HINT}"
    except ssl.SSLError as error:
        reason = error.reason or type(error).__name__
        plaintext = reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE")
        problem = f"TLS handshake failed ({reason})" + (f": {_PLAINTEXT_HINT}" if plaintext else "")
    except OSError:  # closed during the handshake: a plaintext broker dropping a ClientHello
        problem = f"closed the connection during the TLS handshake: {_PLAINTEXT_HINT}"
    raise _Problem(problem, settings=True)


_PLAINTEXT_HINT = (
    "is it a plaintext listener? (then --security-protocol PLAINTEXT or SASL_PLAINTEXT)"
)


class _Connection:
    """Kafka requests (header v1) and their responses over a blocking socket."""

    def __init__(self, sock: socket.socket, protocol: str) -> None:
        self.sock = sock
        self.protocol = protocol
        self.correlation = 0

    def request(self, api_key: int, version: int, body: bytes) -> bytes:
        self.correlation += 1
        client = b"charge-capture-probe"
        header = struct.pack(">hhih", api_key, version, self.correlation, len(client)) + client
        payload = header + body
        try:
            self.sock.sendall(struct.pack(">i", len(payload)) + payload)
            size = self._read(4)
        except TimeoutError:
            raise _Problem(self._silent_hint()) from None
        except OSError:  # reset: a listener that hangs up on a plain Kafka request
            raise _Problem(self._closed_hint("it dropped the connection"), True) from None
        (length,) = struct.unpack(">i", size)
        if size[:2] == b"\x15\x03":  # a TLS alert record, not a Kafka response size
            raise _Problem("it answers with TLS: use --security-protocol SSL or SASL_SSL", True)
        if not 4 <= length <= _MAX_RESPONSE:
            raise _Problem("it does not answer like a Kafka broker")
        response = self._read(length)
        (correlation,) = struct.unpack(">i", response[:4])
        if correlation != self.correlation:
            raise _Problem("it does not answer like a Kafka broker")
        return response[4:]

    def _read(self, n: int) -> bytes:
        chunks, got = [], 0
        while got < n:
            chunk = self.sock.recv(n - got)
            if not chunk:
                raise _Problem(self._closed_hint("it closed the connection"), True)
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def _closed_hint(self, what: str) -> str:
        if self.protocol in ("PLAINTEXT", "SSL"):
            return f"{what}: is it a TLS or SASL listener? (--security-protocol)"
        return f"{what} (--security-protocol, --sasl-mechanism)"

    def _silent_hint(self) -> str:
        seconds = self.sock.gettimeout() or 0
        return f"it accepts connections but sends no Kafka response within {seconds:.0f} s"


def _string(value: str) -> bytes:
    data = value.encode()
    return struct.pack(">h", len(data)) + data


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.data, self.at)
        self.at += struct.calcsize(fmt)
        return int(value)

    def string(self) -> str | None:
        size = self.take(">h")
        if size < 0:
            return None
        value = self.data[self.at : self.at + size].decode(errors="replace")
        self.at += size
        return value


def _sasl_handshake(conn: _Connection, mechanism: str) -> None:
    reader = _Reader(conn.request(_SASL_HANDSHAKE, 1, _string(mechanism)))
    error = reader.take(">h")
    enabled = [reader.string() or "" for _ in range(max(reader.take(">i"), 0))]
    if error == 0:
        return
    # Apache Kafka lists the enabled mechanisms (none, with ILLEGAL_SASL_STATE, on a listener
    # without SASL); Tansu without SASL echoes the requested one back.
    others = [m for m in enabled if m != mechanism]
    if error == _ILLEGAL_SASL_STATE or (error == _UNSUPPORTED_SASL_MECHANISM and not others):
        raise _Problem(
            f"it does not take SASL mechanism {mechanism} and names no other: is it a listener "
            "without SASL? (then --security-protocol PLAINTEXT or SSL)",
            True,
        )
    if error == _UNSUPPORTED_SASL_MECHANISM:
        raise _Problem(
            f"SASL mechanism {mechanism} is not enabled there (it offers {', '.join(others)}; "
            "--sasl-mechanism)",
            True,
        )
    raise _Problem(f"the SASL handshake failed with Kafka error code {error}", True)


def _metadata_brokers(conn: _Connection) -> list[tuple[str, int]]:
    """The brokers a Metadata v1 response (no topics) advertises."""
    reader = _Reader(conn.request(_METADATA, 1, struct.pack(">i", 0)))
    brokers = []
    for _ in range(reader.take(">i")):
        reader.take(">i")  # node id
        host = reader.string() or ""
        port = reader.take(">i")
        reader.string()  # rack
        brokers.append((host, port))
    return brokers


def _check_advertised(
    brokers: list[tuple[str, int]], host: str, port: int, timeout_s: float
) -> None:
    """Clients talk to the advertised addresses after bootstrap: at least one must answer
    from here (a container's `localhost` or an internal name often does not)."""
    if not brokers or (host, port) in brokers:
        return
    deadline = time.monotonic() + timeout_s
    for advertised_host, advertised_port in brokers:
        remaining = max(deadline - time.monotonic(), 0.5)
        try:
            socket.create_connection((advertised_host, advertised_port), remaining).close()
            return
        except OSError:
            continue
    listed = ", ".join(f"{h}:{p}" for h, p in brokers)
    raise _Problem(
        f"it answers but advertises {listed}, which does not answer from here "
        "(the broker's advertised.listeners)"
    )
