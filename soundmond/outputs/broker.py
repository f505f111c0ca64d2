"""A fresh paho client for one connection to the broker: protocol, last will, credentials and TLS.

The publisher makes a new client for every connection attempt (paho's own queue is never relied on), wires its
callbacks and drives its loop on its own thread.
"""

from __future__ import annotations

import logging
import socket
import ssl

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from soundmond.config import MqttConfig, TlsConfig
from soundmond.outputs.messages import STATUS_OFFLINE


class TlsClosingClient(mqtt.Client):
    """paho 2.2 leaves the TLS socket open when the handshake fails (a ResourceWarning per retry); close it.

    Same steps as paho's `_ssl_wrap_socket`; hostname checking is done by our SSLContext (check_hostname), which
    paho also relies on when the context checks hostnames."""

    def _ssl_wrap_socket(self, tcp_sock: socket.socket) -> ssl.SSLSocket:
        ctx = self._ssl_context
        if ctx is None:
            raise ValueError("TLS requested without an SSL context")
        ssl_sock = ctx.wrap_socket(tcp_sock, server_hostname=self._host, do_handshake_on_connect=False)
        try:
            ssl_sock.settimeout(self._connect_timeout)
            ssl_sock.do_handshake()
        except BaseException:
            ssl_sock.close()
            raise
        return ssl_sock


def tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """The SSLContext of `mqtt.tls`: raises OSError / ssl.SSLError when a CA, certificate or key cannot be read."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file) if tls.ca_file else None)
    if tls.cert_file:
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    if tls.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def new_client(
    config: MqttConfig,
    client_id: str,
    will_topic: str,
    password: str | None,
    *,
    max_inflight: int,
    max_queued: int,
    logger: logging.Logger,
) -> mqtt.Client:
    """A client set up for `config` with the `offline` last will (retained) on `will_topic`; no callbacks yet."""
    v5 = config.protocol == "5"
    client = TlsClosingClient(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else True,
    )
    client.enable_logger(logger)
    client.max_inflight_messages_set(max_inflight)
    client.max_queued_messages_set(max_queued)
    client.connect_timeout = 5.0
    client.will_set(will_topic, STATUS_OFFLINE, qos=1, retain=True)
    if config.username:
        client.username_pw_set(config.username, password)
    if config.tls is not None:
        client.tls_set_context(tls_context(config.tls))
        if config.tls.insecure:
            client.tls_insecure_set(True)
    return client


def connect(client: mqtt.Client, config: MqttConfig) -> tuple[str, str] | None:
    """Start connecting `client` to the configured broker; (kind, text for the user) when that fails at once.

    kind is `tls` (certificate not trusted, handshake failed) or `unreachable` (refused, DNS, timeout, network).
    A refusal by the broker itself arrives later, in the CONNACK."""
    where = f"{config.host}:{config.port}"
    try:
        if config.protocol == "5":
            client.connect(config.host, config.port, config.keepalive_s, clean_start=True)
        else:
            client.connect(config.host, config.port, config.keepalive_s)
    except ssl.SSLCertVerificationError as exc:
        return "tls", (f"TLS certificate of {where} not trusted: {exc.verify_message or exc} "
                       "(check mqtt.tls.ca_file and that the certificate names this host)")
    except ssl.SSLError as exc:
        return "tls", f"TLS handshake with {where} failed: {exc.reason or exc} (is this a TLS port? check mqtt.tls)"
    except ConnectionRefusedError:
        return "unreachable", f"connection refused by {where} (is the broker running and listening on that port?)"
    except socket.gaierror as exc:
        return "unreachable", f"cannot resolve {config.host!r}: {exc.strerror or exc}"
    except TimeoutError:
        return "unreachable", f"timed out connecting to {where}"
    except OSError as exc:
        return "unreachable", f"cannot connect to {where}: {exc.strerror or exc}"
    return None
