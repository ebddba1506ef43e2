"""Secrets stay secret: a SASL password and a PostgreSQL registry password are
planted, every cheap ``driftline`` command runs as a real subprocess at
``--log-level DEBUG`` against the real broker and database, and neither
password may appear in its output (stdout and stderr).

tansu has no SASL, so the commands configured for SASL fail to connect: the
point is what they print on the way (the Kafka clients log their whole
configuration at DEBUG). The commands run at once, so the ~30 s the Kafka
clients wait for a SASL bootstrap is paid once.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import time
import uuid

from urllib.parse import urlsplit

import pytest

from driftline import redact
from driftline.config import load_settings
from tests.registry_fixtures import PG_URL

SASL_PASSWORD = "PLANTEDSASL"
DB_PASSWORD = "PLANTEDSECRET"
# The test database's user and server (trust auth: the planted password is
# sent and ignored).
_PG = urlsplit(PG_URL)
PG_USER, PG_HOST = _PG.username or "postgres", f"{_PG.hostname}:{_PG.port or 5432}"
CLI = [sys.executable, "-m", "driftline", "--log-level", "DEBUG"]


# -- unit tests of the redaction ------------------------------------------------------------


def test_secret_strings_hide_in_repr_but_keep_their_value():
    secret = redact.Secret("hunter2")
    assert repr(secret) == "'***'" and repr({"sasl_plain_password": secret}) == "{'sasl_plain_password': '***'}"
    assert secret == "hunter2" and str(secret) == "hunter2" and "\0".join(["u", secret]).encode() == b"u\0hunter2"
    assert f"{secret}" == "hunter2"  # what a client library sends is the real value


def test_redact_masks_urls_keyed_values_and_registered_secrets():
    redact.add_secrets(["s3kr1t-ünï"])
    cases = {
        "postgresql://root:pw@db:5432/x": "postgresql://root:***@db:5432/x",
        "kafka://u:p%40ss@h:9092 and more": "kafka://u:***@h:9092 and more",
        "{'sasl_plain_password': 'abc', 'x': 1}": "{'sasl_plain_password': '***', 'x': 1}",
        'DRIFTLINE_SASL_PASSWORD=abc next': "DRIFTLINE_SASL_PASSWORD=*** next",
        "dsn host=db password=abc user=x": "dsn host=db password=*** user=x",
        "token s3kr1t-ünï in text": "token *** in text",
        # as a logged bytes repr (a SASL request's auth bytes at DEBUG)
        repr(b"\x00svc\x00" + "s3kr1t-ünï".encode()): "b'\\x00svc\\x00***'",
        "password authentication failed for user": "password authentication failed for user",
        "http://host:8080/path@x": "http://host:8080/path@x",
    }
    for text, expected in cases.items():
        assert redact.redact(text) == expected, text


def test_installed_redaction_masks_every_logger_level_and_traceback():
    redact.install(["PLANTED-UNIT"])
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    logger = logging.getLogger("kafka.admin.client.secrettest")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        logger.debug("Starting with configuration: %s", {"sasl_plain_password": "PLANTED-UNIT"})
        logger.info("registry at %s", "postgresql://root:other@h/db")
        try:
            raise RuntimeError("cannot connect with PLANTED-UNIT")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "PLANTED-UNIT" not in text and "other@" not in text
    assert "{'sasl_plain_password': '***'}" in text and "postgresql://root:***@h/db" in text
    assert "RuntimeError: cannot connect with ***" in text


def test_settings_never_show_passwords():
    settings = load_settings(environ={
        "DRIFTLINE_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "DRIFTLINE_SASL_MECHANISM": "PLAIN",
        "DRIFTLINE_SASL_USERNAME": "svc", "DRIFTLINE_SASL_PASSWORD": SASL_PASSWORD,
        "DRIFTLINE_REGISTRY": f"postgresql://{PG_USER}:{DB_PASSWORD}@{PG_HOST}/test?password={DB_PASSWORD}",
        "DRIFTLINE_REGISTRY_ARTIFACTS": "/tmp/unused",
    })
    assert SASL_PASSWORD not in repr(settings) and DB_PASSWORD not in repr(settings)
    assert settings.registry_location == f"postgresql://{PG_USER}@{PG_HOST}/test?password=***"
    assert repr(settings.kafka_security()["sasl_plain_password"]) == "'***'"
    assert settings.kafka_security()["sasl_plain_password"] == SASL_PASSWORD
    creds = settings.faust_broker_options()["broker_credentials"]
    assert creds.password == SASL_PASSWORD and SASL_PASSWORD not in repr(vars(creds))

    from driftline.registry.backends import PostgresBackend

    assert PostgresBackend(settings.registry).describe() == f"postgresql://{PG_USER}@{PG_HOST}/test?password=***"


# -- every command, as a subprocess --------------------------------------------------------


def _pg_schema():
    """A fresh schema in the test database; skipped without PostgreSQL."""
    psycopg = pytest.importorskip("psycopg")
    schema = f"dlsecret_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    except psycopg.Error as error:
        pytest.skip(f"PostgreSQL unreachable at {PG_HOST}: {error}")
    return schema


def _drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


class Command:
    """One subprocess; output (stdout + stderr) goes to a file, so no pipe
    fills up. ``run_for``: a daemon, stopped with SIGINT after that long."""

    def __init__(self, name, args, env, tmp_path, run_for=None):
        self.name, self.run_for = name, run_for
        self.path = tmp_path / f"{name}.out"
        self.file = open(self.path, "wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(CLI + args, env=env, stdout=self.file, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=tmp_path)

    def poke(self, deadline: float) -> bool:
        """Stop a daemon whose time is up, kill anything past ``deadline``;
        True once the process has ended."""
        if self.proc.poll() is not None:
            return True
        elapsed = time.monotonic() - self.started
        if self.run_for is not None and elapsed > self.run_for:
            self.proc.send_signal(signal.SIGINT)
            self.run_for = None
        if time.monotonic() > deadline:
            self.proc.kill()
        return False

    def output(self) -> str:
        self.proc.wait(timeout=10)
        self.file.close()
        return self.path.read_text(encoding="utf-8", errors="replace")


def test_no_command_prints_a_planted_password(settings, tmp_path):
    schema = _pg_schema()
    try:
        _run_every_command(settings, tmp_path, schema)
    finally:
        _drop_schema(schema)


def _run_every_command(settings, tmp_path, schema):
    base = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    base.update(PYTHONUNBUFFERED="1", DRIFTLINE_TOPIC_PREFIX=settings.topic_prefix,
                DRIFTLINE_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
                DRIFTLINE_REGISTRY=f"postgresql://{PG_USER}:{DB_PASSWORD}@{PG_HOST}{_PG.path}"
                                   f"?options=-csearch_path%3D{schema}",
                DRIFTLINE_REGISTRY_ARTIFACTS=str(tmp_path / "artifacts"))
    sasl = {**base, "DRIFTLINE_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "DRIFTLINE_SASL_MECHANISM": "PLAIN",
            "DRIFTLINE_SASL_USERNAME": "svc", "DRIFTLINE_SASL_PASSWORD": SASL_PASSWORD}
    bad_db = {**base, "DRIFTLINE_REGISTRY": f"postgresql://{PG_USER}:{DB_PASSWORD}@{PG_HOST}/no_such_database"}

    data = tmp_path / "train.csv"
    data.write_text("x1,x2,y\n" + "".join(f"{i % 7},{(i * 3) % 5},{int(i % 7 > 3)}\n" for i in range(120)))
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text('{"event_id": "e1", "model": "churn", "model_version": 1, "timestamp": 1.0, '
                           '"features": {"x1": 1}, "prediction": 0}\n')
    independent = [
        # SASL configured: every Kafka client is handed the password.
        ("sasl-status", ["status"], sasl, None),
        ("sasl-status-json", ["status", "--json"], sasl, None),
        ("sasl-topics-create", ["topics", "create"], sasl, None),
        ("sasl-publish", ["publish", "predictions", str(predictions)], sasl, None),
        ("sasl-alerts", ["alerts", "--quiet-s", "1"], sasl, None),
        ("sasl-metrics", ["metrics", "--quiet-s", "1"], sasl, None),
        ("sasl-worker", ["worker", "--metrics-port", "0"], sasl, None),
        ("sasl-monitor", ["monitor", "--data-dir", str(tmp_path / "m1")], sasl, 20),
        # A registry that cannot be opened: start-up errors name it.
        ("bad-db-worker", ["worker", "--metrics-port", "0", "--retry-attempts", "1"], bad_db, None),
        ("bad-db-status", ["status"], bad_db, None),
        ("bad-db-registry", ["registry", "models"], bad_db, None),
        ("bad-db-monitor", ["monitor", "--data-dir", str(tmp_path / "m3")], bad_db, 10),
        # Plain Kafka, password in the registry URL: train first, the rest after.
        ("train", ["train", "churn", "--data", str(data), "--target", "y"], base, None),
    ]
    after_training = [
        ("registry-models", ["registry", "models"], base, None),
        ("registry-versions", ["registry", "versions", "churn"], base, None),
        ("registry-show", ["registry", "show", "churn/1"], base, None),
        ("registry-show-json", ["registry", "show", "churn/1", "--json"], base, None),
        ("registry-policy", ["registry", "policy", "show", "churn"], base, None),
        ("worker-status", ["worker", "--status"], base, None),
        ("status", ["status"], base, None),
        ("monitor", ["monitor", "--data-dir", str(tmp_path / "m2")], base, 10),
    ]
    # All at once: the SASL commands mostly wait on the network.
    commands = [Command(name, args, env, tmp_path, run_for) for name, args, env, run_for in independent]
    train = commands[-1]
    deadline = time.monotonic() + 50
    while not all([c.poke(deadline) for c in commands]):
        if after_training and train.proc.poll() is not None:
            commands += [Command(name, args, env, tmp_path, run_for) for name, args, env, run_for in after_training]
            after_training = []
        time.sleep(0.2)
    outputs = {c.name: c.output() for c in commands}
    assert "churn: version 1 registered" in outputs["train"], outputs["train"][-2000:]
    assert "registry-models" in outputs, "the registry commands never ran"

    for name, text in outputs.items():
        assert SASL_PASSWORD not in text, f"{name} printed the SASL password:\n{_around(text, SASL_PASSWORD)}"
        assert DB_PASSWORD not in text, f"{name} printed the registry password:\n{_around(text, DB_PASSWORD)}"
    # The paths that used to leak were really taken.
    assert "'sasl_plain_password': '***'" in outputs["sasl-status"]  # kafka-python's DEBUG config line
    assert f"postgresql://{PG_USER}@{PG_HOST}{_PG.path}" in outputs["status"]
    assert "churn" in outputs["registry-models"] and "version: 1" in outputs["registry-show"], (
        outputs["registry-models"][-500:], outputs["registry-show"][-500:])
    # the worker names the database without user or query string (driftline.retrain.resilience.safe_url)
    assert f"cannot open the registry postgresql://{PG_HOST}/no_such_database" in outputs["bad-db-worker"], (
        outputs["bad-db-worker"][-2000:])
    assert "no_such_database" in outputs["bad-db-status"]


def _around(text: str, needle: str) -> str:
    at = text.find(needle)
    return text[max(0, at - 300): at + 100]
