"""Settings from `GATEWAY_*` variables: parsed by each field's type, typos warned about."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.settings import Settings


def test_each_variable_is_parsed_as_its_fields_type() -> None:
    """int, float, Path and str fields get values of their own type from the variables' text."""
    settings = Settings.from_env(
        {
            "GATEWAY_PORT": "9001",
            "GATEWAY_SLOW_QUERY_S": "0.25",
            "GATEWAY_DATA_DIR": "/var/lib/gateway",
            "GATEWAY_KEY_PREFIX": "t1:",
            "GATEWAY_RUN_WRITER": "0",
        }
    )
    assert settings.port == 9001 and type(settings.port) is int
    assert settings.slow_query_s == 0.25 and type(settings.slow_query_s) is float
    assert settings.data_dir == Path("/var/lib/gateway") and isinstance(settings.data_dir, Path)
    assert settings.key_prefix == "t1:"
    assert settings.run_writer is False
    assert settings.workers == Settings().workers  # unset: the default


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True), ("true", True), ("True", True), ("yes", True), ("ON", True),
        ("0", False), ("false", False), ("FALSE", False), ("no", False), ("off", False),
        ("", False),
    ],
)  # fmt: skip
def test_bool_spellings(raw: str, expected: bool) -> None:
    """A bool field reads 1/0, true/false, yes/no and on/off in any case; empty is false."""
    assert Settings.from_env({"GATEWAY_RUN_WRITER": raw}).run_writer is expected


@pytest.mark.parametrize(
    ("variable", "raw", "message"),
    [
        ("GATEWAY_PORT", "x", "GATEWAY_PORT='x' is not a valid int"),
        ("GATEWAY_WORKERS", "", "GATEWAY_WORKERS='' is not a valid int"),
        ("GATEWAY_SLOW_QUERY_S", "fast", "GATEWAY_SLOW_QUERY_S='fast' is not a valid float"),
        ("GATEWAY_RUN_WRITER", "maybe", "GATEWAY_RUN_WRITER='maybe' is not a valid bool"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(variable: str, raw: str, message: str) -> None:
    """A value its field's type cannot read raises ValueError whose whole text names the
    variable, the value and the type."""
    with pytest.raises(ValueError) as raised:
        Settings.from_env({variable: raw})
    assert str(raised.value) == message


def test_an_unknown_gateway_variable_warns_with_the_closest_setting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A misspelt `GATEWAY_*` variable is ignored with a warning that names it and the
    setting it probably meant; variables without the prefix are not warned about."""
    with caplog.at_level(logging.WARNING, logger="gateway.settings"):
        settings = Settings.from_env(
            {"GATEWAY_PROT": "9001", "GATEWAY_ZZZ": "1", "PATH": "/usr/bin", "GATEWAY_PORT": "1"}
        )
    assert settings.port == 1
    warnings = [r.getMessage() for r in caplog.records if r.name == "gateway.settings"]
    assert warnings == [
        "GATEWAY_PROT is not a setting (did you mean GATEWAY_PORT?); ignored",
        "GATEWAY_ZZZ is not a setting; ignored",
    ]


def test_known_variables_warn_about_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """The environment `to_env` writes names only settings: no warning."""
    with caplog.at_level(logging.WARNING, logger="gateway.settings"):
        Settings.from_env(Settings().to_env())
    assert [r for r in caplog.records if r.name == "gateway.settings"] == []


def test_to_env_round_trips() -> None:
    """A worker rebuilding settings from `to_env` gets back equal settings, every field
    changed from its default included."""
    settings = Settings(
        database_url="postgresql://u@h/db",
        auth_secret="s3cret",
        port=0,
        run_writer=False,
        data_dir=Path("/tmp/gw data"),
        key_prefix="",
        presence_ttl_s=1.5,
        slow_query_s=1e-3,
        log_format="json",
    )
    assert Settings.from_env(settings.to_env()) == settings
    assert Settings.from_env(Settings().to_env()) == Settings()


def test_overrides_win_over_the_environment() -> None:
    """Explicit overrides (CLI flags) beat variables; a None override leaves the variable."""
    env = {"GATEWAY_PORT": "9001", "GATEWAY_HOST": "0.0.0.0"}
    settings = Settings.from_env(env, port=9002, host=None)
    assert settings.port == 9002 and settings.host == "0.0.0.0"
