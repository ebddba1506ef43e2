import pytest

from driftline.config import ConfigError, load_settings


def test_defaults():
    settings = load_settings(environ={})
    assert settings.bootstrap_servers == "localhost:9092"
    assert settings.topics.predictions == "driftline.predictions"
    assert settings.topics.retrain_requests == "driftline.retrain-requests"
    assert settings.registry == "./.driftline/registry"
    assert settings.kafka_security() == {"security_protocol": "PLAINTEXT"}


def test_environment_and_overrides():
    env = {"DRIFTLINE_BOOTSTRAP_SERVERS": "k1:9092,k2:9093", "DRIFTLINE_TOPIC_PREFIX": "prod-"}
    settings = load_settings(environ=env, registry="postgresql://x@h/db")
    assert settings.bootstrap_list == ["k1:9092", "k2:9093"]
    assert settings.topics.dead_letter == "prod-dead-letter"
    assert settings.registry_is_database


@pytest.mark.parametrize(
    "env, message",
    [
        ({"DRIFTLINE_BOOTSTRAP_SERVERS": "nohost"}, "DRIFTLINE_BOOTSTRAP_SERVERS contains 'nohost'"),
        ({"DRIFTLINE_BOOTSTRAP_SERVERS": "h:99999"}, "port from 1 to 65535"),
        ({"DRIFTLINE_TOPIC_PREFIX": "a/b"}, "DRIFTLINE_TOPIC_PREFIX='a/b' is invalid"),
        ({"DRIFTLINE_SECURITY_PROTOCOL": "TLS"}, "DRIFTLINE_SECURITY_PROTOCOL='TLS' is invalid"),
        ({"DRIFTLINE_SECURITY_PROTOCOL": "SASL_SSL", "DRIFTLINE_SASL_MECHANISM": "PLAIN"},
         "needs DRIFTLINE_SASL_USERNAME"),
        ({"DRIFTLINE_SECURITY_PROTOCOL": "SSL", "DRIFTLINE_SSL_CAFILE": "/nonexistent/ca.pem"},
         "DRIFTLINE_SSL_CAFILE='/nonexistent/ca.pem' is not a readable file"),
    ],
)
def test_bad_values_are_named(env, message):
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=env)
    assert message in str(caught.value)


def test_sasl_settings_pass_through_and_password_is_never_printed():
    env = {
        "DRIFTLINE_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "DRIFTLINE_SASL_MECHANISM": "SCRAM-SHA-512",
        "DRIFTLINE_SASL_USERNAME": "svc",
        "DRIFTLINE_SASL_PASSWORD": "s3cret-value",
    }
    settings = load_settings(environ=env)
    assert settings.kafka_security() == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc",
        "sasl_plain_password": "s3cret-value",
    }
    assert "s3cret-value" not in repr(settings)
