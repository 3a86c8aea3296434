"""Opening hours and the several robots' settings (CONTRACT §2, §11)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from orchestrator.config import ConfigError, load_settings
from orchestrator.robots import Hours, RobotSettings, valid_name, variable_prefix

BASE = {
    "ROBOT_CALLBACK_SECRET": "s" * 32,
    "PUBLIC_URL": "http://orchestrator.example",
    "API_TOKENS": "t1",
}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- the HOURS grammar ---


@pytest.mark.parametrize(
    "text",
    [
        "Mon-Fri 06:00-20:00, Sat 07:00-13:00",
        "Sun 00:00-24:00",
        "Sat-Mon 22:00-06:00",
        "mon 08:00-08:00",
        "Fri 24:00-02:00",
    ],
)
def test_good_hours_parse(text: str) -> None:
    assert Hours.parse(text).text == text


@pytest.mark.parametrize(
    "text",
    [
        "Mon 6:00-20:00",
        "Mon 06:00-20:00,",
        "Mon 06:00",
        "Monday 06:00-20:00",
        "Mon-Fry 06:00-20:00",
        "Mon 25:00-26:00",
        "Mon 24:30-25:00",
        "Mon 06:60-07:00",
        "Mon  06:00-20:00",
        "06:00-20:00",
        "",
    ],
)
def test_bad_hours_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        Hours.parse(text)


def test_a_range_of_days_and_a_single_day() -> None:
    hours = Hours.parse("Mon-Fri 06:00-20:00, Sat 07:00-13:00")
    # 2026-12-07 is a Monday.
    assert hours.is_open(utc(2026, 12, 7, 6, 0))
    assert not hours.is_open(utc(2026, 12, 7, 5, 59))
    assert not hours.is_open(utc(2026, 12, 7, 20, 0))  # the end is not inside
    assert hours.is_open(utc(2026, 12, 11, 19, 59))  # Friday
    assert hours.is_open(utc(2026, 12, 12, 12, 0))  # Saturday
    assert not hours.is_open(utc(2026, 12, 12, 13, 0))
    assert not hours.is_open(utc(2026, 12, 13, 12, 0))  # Sunday
    assert hours.next_open(utc(2026, 12, 12, 13, 0)) == utc(2026, 12, 14, 6, 0)
    assert hours.next_open(utc(2026, 12, 7, 7, 0)) is None  # open: null


def test_sat_mon_wraps_and_a_window_runs_past_midnight() -> None:
    hours = Hours.parse("Sat-Mon 22:00-06:00")
    assert hours.is_open(utc(2026, 12, 12, 23, 0))  # Saturday night
    assert hours.is_open(utc(2026, 12, 13, 5, 0))  # Sunday morning, from Saturday
    assert hours.is_open(utc(2026, 12, 15, 5, 59))  # Tuesday morning, from Monday
    assert not hours.is_open(utc(2026, 12, 15, 22, 0))  # Tuesday night: not in Sat-Mon
    assert not hours.is_open(utc(2026, 12, 16, 5, 0))  # Wednesday morning
    assert hours.next_open(utc(2026, 12, 15, 6, 0)) == utc(2026, 12, 19, 22, 0)


def test_an_end_equal_to_the_start_is_a_whole_day_and_24_00_ends_the_day() -> None:
    assert Hours.parse("Mon 08:00-08:00").is_open(utc(2026, 12, 8, 7, 59))  # Tuesday 07:59
    whole = Hours.parse("Mon 00:00-24:00")
    assert whole.is_open(utc(2026, 12, 7, 23, 59))
    assert not whole.is_open(utc(2026, 12, 8, 0, 0))


def test_hours_are_read_in_the_robots_time_zone() -> None:
    hours = Hours.parse("Mon-Fri 08:00-17:00", "America/Bogota")  # UTC-5, no DST
    assert not hours.is_open(utc(2026, 12, 7, 8, 0))
    assert hours.is_open(utc(2026, 12, 7, 13, 0))
    assert hours.next_open(utc(2026, 12, 7, 22, 0)) == utc(2026, 12, 8, 13, 0)


def test_daylight_saving_spring_forward_skips_a_start_to_the_change() -> None:
    # New York, 2027-03-14: 02:00 EST becomes 03:00 EDT (07:00 UTC); 02:30 does not exist.
    hours = Hours.parse("Sun 02:30-05:00", "America/New_York")
    assert hours.next_open(utc(2027, 3, 14, 0, 0)) == utc(2027, 3, 14, 7, 0)
    assert hours.is_open(utc(2027, 3, 14, 7, 0))
    assert hours.is_open(utc(2027, 3, 14, 8, 59))  # 04:59 EDT
    assert not hours.is_open(utc(2027, 3, 14, 9, 0))  # 05:00 EDT
    # The Sunday before is standard time: 02:30 EST = 07:30 UTC.
    assert hours.next_open(utc(2027, 3, 7, 0, 0)) == utc(2027, 3, 7, 7, 30)
    # The Sunday after, summer time: 02:30 EDT = 06:30 UTC.
    assert hours.next_open(utc(2027, 3, 15, 0, 0)) == utc(2027, 3, 21, 6, 30)


def test_daylight_saving_fall_back_follows_the_offset() -> None:
    # New York, 2026-11-01: 02:00 EDT becomes 01:00 EST; 01:30 happens twice (first: 05:30 UTC).
    hours = Hours.parse("Sun 01:30-03:00", "America/New_York")
    assert hours.next_open(utc(2026, 11, 1, 0, 0)) == utc(2026, 11, 1, 5, 30)
    assert hours.is_open(utc(2026, 11, 1, 7, 59))  # 02:59 EST
    assert not hours.is_open(utc(2026, 11, 1, 8, 0))  # 03:00 EST
    office = Hours.parse("Mon-Fri 09:00-17:00", "Europe/Madrid")
    assert office.is_open(utc(2026, 10, 23, 7, 0))  # Friday 09:00 CEST (UTC+2)
    assert not office.is_open(utc(2026, 10, 26, 7, 0))  # Monday 08:00 CET (UTC+1)
    assert office.is_open(utc(2026, 10, 26, 8, 0))  # Monday 09:00 CET


def test_a_robot_without_hours_is_always_open() -> None:
    robot = RobotSettings(name="a", url="http://a")
    assert robot.is_open(utc(2026, 12, 13, 3, 0))
    assert robot.next_open(utc(2026, 12, 13, 3, 0)) is None


# --- names and variables ---


@pytest.mark.parametrize("name", ["a", "coordinadora", "servientrega-2", "a" * 40, "x-1-y"])
def test_good_names(name: str) -> None:
    assert valid_name(name)


@pytest.mark.parametrize("name", ["", "A", "1a", "-a", "a_b", "a" * 41, "a b", "ñ"])
def test_bad_names(name: str) -> None:
    assert not valid_name(name)


def test_a_robots_variables_are_its_name_upper_case_with_underscores() -> None:
    assert variable_prefix("servientrega-2") == "ROBOT_SERVIENTREGA_2_"


# --- the settings ---


def test_without_robots_one_robot_named_default_from_the_robot_variables() -> None:
    settings = load_settings(
        {
            **BASE,
            "ROBOT_URL": "http://robot.example",
            "ROBOT_API_TOKEN": "robot-token",
            "ROBOT_MAX_ACTIVE_JOBS": "4",
            "ROBOT_HOURS": "Mon-Fri 06:00-20:00",
            "ROBOT_TIMEZONE": "America/Bogota",
        }
    )
    [robot] = settings.robots
    assert (robot.name, robot.url, robot.api_token, robot.max_active_jobs) == (
        "default",
        "http://robot.example",
        "robot-token",
        4,
    )
    assert robot.hours is not None and robot.hours.text == "Mon-Fri 06:00-20:00"
    assert robot.timezone == "America/Bogota"
    assert settings.robot("default") is robot
    assert settings.robot("other") is None


def test_each_robot_reads_its_own_variables_then_the_unprefixed_then_the_default() -> None:
    settings = load_settings(
        {
            **BASE,
            "ROBOTS": "coordinadora, servientrega-2",
            "ROBOT_COORDINADORA_URL": "http://a.example",
            "ROBOT_COORDINADORA_API_TOKEN": "token-a",
            "ROBOT_SERVIENTREGA_2_URL": "http://b.example/",
            "ROBOT_SERVIENTREGA_2_MAX_ACTIVE_JOBS": "5",
            "ROBOT_SERVIENTREGA_2_SECONDS_PER_ITEM": "2.5",
            "ROBOT_SERVIENTREGA_2_DEADLINE_MARGIN_SECONDS": "60",
            "ROBOT_SERVIENTREGA_2_DISPATCH_TIMEOUT_SECONDS": "7",
            "ROBOT_SERVIENTREGA_2_SILENCE_TIMEOUT_SECONDS": "90",
            "ROBOT_SERVIENTREGA_2_PAUSE_AFTER_FAILURES": "0",
            "ROBOT_SERVIENTREGA_2_HOURS": "Sat 07:00-13:00",
            "ROBOT_SERVIENTREGA_2_TIMEZONE": "Europe/Madrid",
            # Unprefixed: the fallback of every robot but for URL and API token.
            "ROBOT_MAX_ACTIVE_JOBS": "2",
            "ROBOT_SILENCE_TIMEOUT_SECONDS": "300",
            "ROBOT_HOURS": "Mon-Fri 06:00-20:00",
            "ROBOT_TIMEZONE": "America/Bogota",
            "ROBOT_API_TOKEN": "not-used",
            "ROBOT_URL": "not even a URL: not used",
        }
    )
    a, b = settings.robots
    assert [a.name, b.name] == ["coordinadora", "servientrega-2"]  # the order of ROBOTS
    assert (a.url, a.api_token, a.max_active_jobs, a.silence_timeout_seconds) == (
        "http://a.example",
        "token-a",
        2,
        300.0,
    )
    assert (a.seconds_per_item, a.deadline_margin_seconds, a.pause_after_failures) == (30, 300, 3)
    assert (a.hours.text, a.timezone) == ("Mon-Fri 06:00-20:00", "America/Bogota")
    assert (b.url, b.api_token, b.max_active_jobs) == ("http://b.example", None, 5)
    assert (b.seconds_per_item, b.deadline_margin_seconds, b.dispatch_timeout_seconds) == (
        2.5,
        60.0,
        7.0,
    )
    assert (b.silence_timeout_seconds, b.pause_after_failures) == (90.0, 0)
    assert (b.hours.text, b.timezone, b.hours.timezone) == (
        "Sat 07:00-13:00",
        "Europe/Madrid",
        "Europe/Madrid",
    )
    assert "token-a" in settings.secrets()
    assert "token-a" not in repr(settings)


def test_with_robots_robot_url_is_not_required() -> None:
    settings = load_settings({**BASE, "ROBOTS": "a", "ROBOT_A_URL": "http://a.example"})
    assert settings.robot_names == ("a",)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"ROBOTS": "A"}, "ROBOTS"),
        ({"ROBOTS": "a,,b"}, "ROBOTS"),
        ({"ROBOTS": "a,a", "ROBOT_A_URL": "http://a"}, "ROBOTS"),
        ({"ROBOTS": "a_b"}, "ROBOTS"),
        ({"ROBOTS": "a"}, "ROBOT_A_URL"),
        ({"ROBOTS": "a-b", "ROBOT_A_B_URL": "ftp://x"}, "ROBOT_A_B_URL"),
        (
            {"ROBOTS": "a", "ROBOT_A_URL": "http://a", "ROBOT_A_MAX_ACTIVE_JOBS": "0"},
            "ROBOT_A_MAX_ACTIVE_JOBS",
        ),
        (
            {"ROBOTS": "a", "ROBOT_A_URL": "http://a", "ROBOT_MAX_ACTIVE_JOBS": "x"},
            "ROBOT_MAX_ACTIVE_JOBS",
        ),
        ({"ROBOTS": "a", "ROBOT_A_URL": "http://a", "ROBOT_A_HOURS": "Mon 9-5"}, "ROBOT_A_HOURS"),
        (
            {"ROBOTS": "a", "ROBOT_A_URL": "http://a", "ROBOT_A_TIMEZONE": "Mars/Base"},
            "ROBOT_A_TIMEZONE",
        ),
        (
            {"ROBOTS": "a", "ROBOT_A_URL": "http://a", "ROBOT_HOURS": "Mon 25:00-26:00"},
            "ROBOT_HOURS",
        ),
        ({"ROBOT_URL": "http://r", "ROBOT_HOURS": "Lun 06:00-20:00"}, "ROBOT_HOURS"),
        ({"ROBOT_URL": "http://r", "ROBOT_TIMEZONE": "Nowhere/City"}, "ROBOT_TIMEZONE"),
        (
            {"ROBOTS": "a", "ROBOT_A_URL": "http://a", "ROBOT_A_SECONDS_PER_ITEM": "-1"},
            "ROBOT_A_SECONDS_PER_ITEM",
        ),
    ],
)
def test_a_bad_value_stops_the_start_with_one_line_naming_its_variable(env, variable) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({**BASE, **env})
    message = str(raised.value)
    assert message.startswith(variable) or f" {variable} " in f" {message} "
    assert variable in message and "\n" not in message
