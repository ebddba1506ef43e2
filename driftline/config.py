"""All Driftline configuration, read from ``DRIFTLINE_*`` environment variables
in one place.

Every daemon, test and command builds a :class:`Settings` with
:func:`load_settings` and passes it down; nothing else reads the environment.
Kafka security settings pass through to kafka-python, aiokafka and faust.

Credentials are never printed: the SASL password reaches the client
libraries as a :class:`~driftline.redact.Secret` (its ``repr`` is ``'***'``,
and those libraries log their configuration), ``repr(settings)`` and
:attr:`Settings.registry_location` leave out the registry URL's password,
and every Settings registers its secrets with :mod:`driftline.redact`, which
masks them in all log records once installed (the ``driftline`` command
installs it).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from . import redact
from .errors import DriftlineError

__all__ = ["ConfigError", "Settings", "Topics", "load_settings", "TOPIC_NAMES"]

# Kafka's own rule for topic names: ASCII letters, digits, '.', '_' and '-'.
_TOPIC_CHARS = re.compile(r"^[A-Za-z0-9._-]*$")
_HOST_PORT = re.compile(r"^[A-Za-z0-9._\-\[\]:]+:\d{1,5}$")

_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER")

#: Logical topic -> suffix appended to the prefix (DESIGN.md, "Topics").
TOPIC_NAMES: dict[str, str] = {
    "predictions": "predictions",
    "labels": "labels",
    "alerts": "alerts",
    "metrics": "metrics",
    "labeled": "labeled",
    "retrain_requests": "retrain-requests",
    "model_events": "model-events",
    "dead_letter": "dead-letter",
}


class ConfigError(DriftlineError, ValueError):
    """A configuration value is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Topics:
    """Fully qualified topic names for one prefix."""

    predictions: str
    labels: str
    alerts: str
    metrics: str
    labeled: str
    retrain_requests: str
    model_events: str
    dead_letter: str

    @classmethod
    def with_prefix(cls, prefix: str) -> "Topics":
        if not _TOPIC_CHARS.match(prefix) or len(prefix) > 200:
            raise ConfigError(
                f"DRIFTLINE_TOPIC_PREFIX={prefix!r} is invalid: topic names allow only "
                "letters, digits, '.', '_' and '-' (at most 200 characters)"
            )
        return cls(**{name: prefix + suffix for name, suffix in TOPIC_NAMES.items()})

    def all(self) -> list[str]:
        return [getattr(self, name) for name in TOPIC_NAMES]


@dataclass(frozen=True)
class Settings:
    """Process-wide settings. Build with :func:`load_settings`.

    Parameters
    ----------
    bootstrap_servers
        Comma-separated ``host:port`` list of Kafka brokers.
    topic_prefix
        Prefix of every Driftline topic (default ``driftline.``).
    registry
        Where the model registry lives: a directory (SQLite + artifacts) or a
        ``postgresql://`` URL (artifacts then go under ``registry_artifacts``).
    registry_artifacts
        Artifact directory when ``registry`` is a database URL.
    security_protocol, sasl_mechanism, sasl_username, sasl_password,
    ssl_cafile, ssl_certfile, ssl_keyfile
        Kafka security settings, passed through to every client.
    metrics_addr
        Address the daemons' Prometheus ``/metrics`` endpoint binds to
        (default ``127.0.0.1``; ``0.0.0.0`` in a container).
    """

    bootstrap_servers: str = "localhost:9092"
    topic_prefix: str = "driftline."
    registry: str = "./.driftline/registry"
    registry_artifacts: str | None = None
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)  # never printed
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    metrics_addr: str = "127.0.0.1"

    def __repr__(self) -> str:
        # Explicit, so the registry URL's password never shows (the dataclass
        # repr would print it) and sasl_password is left out.
        shown = []
        for name in _ENV_FIELDS:
            if name == "sasl_password":
                continue
            value = getattr(self, name)
            shown.append(f"{name}={(redact.location(value) if name == 'registry' else value)!r}")
        return f"Settings({', '.join(shown)})"

    def __post_init__(self) -> None:
        # Known to the log redaction from the moment they exist, before any
        # check below can fail with a message.
        redact.add_secrets(self.secrets())
        servers = [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()]
        if not servers:
            raise ConfigError("DRIFTLINE_BOOTSTRAP_SERVERS is empty: expected host:port[,host:port]")
        for server in servers:
            if not _HOST_PORT.match(server) or not 0 < int(server.rsplit(":", 1)[1]) < 65536:
                raise ConfigError(
                    f"DRIFTLINE_BOOTSTRAP_SERVERS contains {server!r}: expected host:port "
                    "with a port from 1 to 65535"
                )
        Topics.with_prefix(self.topic_prefix)  # validates the prefix
        if not self.registry.strip():
            raise ConfigError("DRIFTLINE_REGISTRY is empty: expected a directory or a postgresql:// URL")
        if self.security_protocol not in _SECURITY_PROTOCOLS:
            raise ConfigError(
                f"DRIFTLINE_SECURITY_PROTOCOL={self.security_protocol!r} is invalid: "
                f"expected one of {', '.join(_SECURITY_PROTOCOLS)}"
            )
        if self.security_protocol.startswith("SASL"):
            if self.sasl_mechanism not in _SASL_MECHANISMS:
                raise ConfigError(
                    f"DRIFTLINE_SASL_MECHANISM={self.sasl_mechanism!r} is invalid for "
                    f"{self.security_protocol}: expected one of {', '.join(_SASL_MECHANISMS)}"
                )
            if self.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and not (
                self.sasl_username and self.sasl_password is not None
            ):
                raise ConfigError(
                    f"SASL mechanism {self.sasl_mechanism} needs DRIFTLINE_SASL_USERNAME "
                    "and DRIFTLINE_SASL_PASSWORD"
                )
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"DRIFTLINE_{name.upper()}={path!r} is not a readable file")

    # -- derived values -------------------------------------------------
    @property
    def topics(self) -> Topics:
        return Topics.with_prefix(self.topic_prefix)

    @property
    def bootstrap_list(self) -> list[str]:
        return [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()]

    @property
    def registry_location(self) -> str:
        """The registry directory or database URL without its password:
        what every message and status output shows."""
        return redact.location(self.registry)

    def secrets(self) -> list[str]:
        """Every credential in these settings (to be masked in output)."""
        found = [self.sasl_password] if self.sasl_password else []
        if self.registry_is_database:
            found += redact.url_secrets(self.registry)
        return found

    @property
    def registry_is_database(self) -> bool:
        return self.registry.startswith(("postgresql://", "postgres://", "postgresql+psycopg://"))

    def with_overrides(self, **changes: Any) -> "Settings":
        """A copy with some settings replaced (validated again)."""
        return replace(self, **changes)

    def kafka_security(self) -> dict[str, Any]:
        """Security keyword arguments in kafka-python / aiokafka spelling."""
        options: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.security_protocol.startswith("SASL"):
            options["sasl_mechanism"] = self.sasl_mechanism
            if self.sasl_username is not None:
                options["sasl_plain_username"] = self.sasl_username
                # A Secret: the clients log their configuration dict.
                options["sasl_plain_password"] = _secret(self.sasl_password)
        if "SSL" in self.security_protocol:
            if self.ssl_cafile:
                options["ssl_cafile"] = self.ssl_cafile
            if self.ssl_certfile:
                options["ssl_certfile"] = self.ssl_certfile
            if self.ssl_keyfile:
                options["ssl_keyfile"] = self.ssl_keyfile
        return options

    def aiokafka_security(self) -> dict[str, Any]:
        """Security keyword arguments for aiokafka (an SSL context, not file names)."""
        options = {k: v for k, v in self.kafka_security().items() if not k.startswith("ssl_")}
        if "SSL" in self.security_protocol:  # pragma: no cover - only with TLS brokers
            options["ssl_context"] = self.kafka_python_ssl_context()
        return options

    def kafka_python_ssl_context(self):  # pragma: no cover - only with TLS brokers
        import ssl

        context = ssl.create_default_context(cafile=self.ssl_cafile)
        if self.ssl_certfile:
            context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
        return context

    def faust_broker_options(self) -> dict[str, Any]:
        """``broker`` and ``broker_credentials`` for :class:`faust.App`."""
        options: dict[str, Any] = {
            "broker": ";".join(f"kafka://{server}" for server in self.bootstrap_list)
        }
        if self.security_protocol == "PLAINTEXT":
            return options
        import faust

        ssl_context = self.kafka_python_ssl_context() if "SSL" in self.security_protocol else None
        if self.security_protocol.startswith("SASL"):
            if self.sasl_mechanism == "PLAIN" or self.sasl_mechanism is None:
                options["broker_credentials"] = faust.SASLCredentials(
                    username=self.sasl_username, password=_secret(self.sasl_password), ssl_context=ssl_context
                )
            else:
                options["broker_credentials"] = faust.SASLCredentials(
                    username=self.sasl_username,
                    password=_secret(self.sasl_password),
                    mechanism=self.sasl_mechanism,
                    ssl_context=ssl_context,
                )
        else:
            options["broker_credentials"] = faust.SSLCredentials(ssl_context)
        return options


def _secret(value: str | None) -> str | None:
    return None if value is None else redact.Secret(value)


_ENV_FIELDS = {
    "bootstrap_servers": "DRIFTLINE_BOOTSTRAP_SERVERS",
    "topic_prefix": "DRIFTLINE_TOPIC_PREFIX",
    "registry": "DRIFTLINE_REGISTRY",
    "registry_artifacts": "DRIFTLINE_REGISTRY_ARTIFACTS",
    "security_protocol": "DRIFTLINE_SECURITY_PROTOCOL",
    "sasl_mechanism": "DRIFTLINE_SASL_MECHANISM",
    "sasl_username": "DRIFTLINE_SASL_USERNAME",
    "sasl_password": "DRIFTLINE_SASL_PASSWORD",
    "ssl_cafile": "DRIFTLINE_SSL_CAFILE",
    "ssl_certfile": "DRIFTLINE_SSL_CERTFILE",
    "ssl_keyfile": "DRIFTLINE_SSL_KEYFILE",
    "metrics_addr": "DRIFTLINE_METRICS_ADDR",
}


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read settings from ``environ`` (default: ``os.environ``).

    Keyword overrides win over the environment, so command-line flags can be
    passed straight through. Raises :class:`ConfigError` naming a bad value.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, variable in _ENV_FIELDS.items():
        raw = environ.get(variable)
        if raw is not None and raw != "":
            values[name] = raw
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(values) - set(_ENV_FIELDS)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    return Settings(**values)
