"""``livermore-nb plan``: what a backfill would send, per series, from Redis alone."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from test_cli_backfill import key_env, run_cli

from livermore_nb.emulator import EmulatorConfig, EmulatorThread, TestKey


@pytest.fixture
def no_four_hour(ec_key: TestKey) -> Iterator[EmulatorThread]:
    config = EmulatorConfig(keys={ec_key.name: ec_key.public_key}, four_hour=False)
    with EmulatorThread(config) as emu:
        yield emu


def test_plan_shows_what_the_backfill_then_sends(
    no_four_hour: EmulatorThread, ec_key: TestKey, redis_url, key_template
):
    env = key_env(ec_key, no_four_hour.url)
    common = ["--symbols", "SOL-USD,ADA-USD", "--redis-url", redis_url, "--full"]
    common += ["--key-template", key_template, "--state-prefix", key_template.split(":candles:")[0]]
    before = run_cli(["plan", *common, "--log-format", "json"], env)
    assert before.returncode == 0, before.stderr
    assumed = json.loads(before.stdout)
    assert assumed["api"] == {"four_hour": None, "max_buckets": None}  # nothing learnt yet
    assert no_four_hour.emulator.stats.total == 0  # planning sends no request
    assert {(s["timeframe"], s["source"]) for s in assumed["series"]} >= {("4h", "4h")}

    ran = run_cli(["backfill", *common, "--log-format", "json"], env)
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout.splitlines()[-1])
    assert report["api"] == {"four_hour": False, "max_buckets": 350}

    after = run_cli(["plan", *common, "--log-format", "json"], env)
    learnt = json.loads(after.stdout)
    assert learnt["api"] == report["api"]
    assert {(s["timeframe"], s["source"], s["pages"]) for s in learnt["series"]} >= {
        ("4h", "2h", 2)
    }
    # the backfill sent the plan and one probe (FOUR_HOUR, refused)
    assert learnt["requests"] == report["requests"] - 1 == 2 * 6
    text = run_cli(["plan", *common], env)
    assert f"{learnt['requests']} requests planned" in text.stdout
