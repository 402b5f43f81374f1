"""scanners.yaml: pool ranges, scan windows and exclusions are checked at load, naming the key."""

from __future__ import annotations

from typing import Any

import pytest

from scanfleet.common.config import ConfigError, parse_fleet

SCANNER = {"id": "s1", "url": "https://s1:8834", "auth": {"access_key": "a", "secret_key": "b"}}


def fleet(**top: Any) -> dict[str, Any]:
    pool = {"scanners": [SCANNER], **top.pop("pool", {})}
    return {"pools": {"p": pool}, **top}


def test_windows_ranges_and_exclusions_reach_the_published_rules() -> None:
    config = parse_fleet(
        fleet(
            pool={
                "ranges": ["10.1.0.0/16"],
                "windows": [{"name": "n", "days": ["sat"], "start": "22:00", "end": "02:00"}],
            },
            windows=[{"name": "w", "cron": "0 9 * * 1-5", "duration_minutes": 480, "timezone": "Europe/Berlin"}],
            exclusions=[{"targets": ["10.9.0.0/16"], "reason": "payments"}],
        ),
        source="t",
        env={},
    )
    rules = config.rules()
    assert rules.ranges == {"p": ["10.1.0.0/16"]}
    windows = rules.scan_windows()
    assert [b.name for b in windows.blackouts] == ["w", "n"]
    night = windows.blackouts[1]
    assert night.cron == "0 22 * * 6" and night.duration.total_seconds() == 4 * 3600 and night.pool == "p"


@pytest.mark.parametrize(
    ("config", "where"),
    [
        (fleet(windows=[{"name": "w", "cron": "every day", "duration_minutes": 5}]), "windows[0]: cron"),
        (fleet(windows=[{"name": "w", "cron": "0 9 * * *"}]), "windows[0]: duration_minutes: required"),
        (
            fleet(windows=[{"name": "w", "cron": "0 9 * * *", "duration_minutes": 5, "timezone": "Mars/Base"}]),
            "windows[0]: timezone",
        ),
        (
            fleet(pool={"windows": [{"name": "w", "days": ["someday"], "start": "1:00", "end": "2:00"}]}),
            "pools.p.windows[0]: days",
        ),
        (fleet(pool={"ranges": ["not-an-address"]}), "pools.p"),
        (fleet(exclusions=[{"targets": ["10.0.0.0/8"], "reason": " "}]), "exclusions[0].reason"),
    ],
)
def test_a_bad_window_range_or_exclusion_names_its_key(config: dict[str, Any], where: str) -> None:
    with pytest.raises(ConfigError, match=f"t: {where}".replace("[", r"\[").replace("]", r"\]")):
        parse_fleet(config, source="t", env={})
