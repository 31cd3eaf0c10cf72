"""The forecast of a publish's keys (`redis_forecast`): how far past the account's last
sequence number it reaches, and what it takes for the last one. A wrong forecast costs a
second run of the script (tests/cache_service/test_script_keys.py), never a wrong write."""

from __future__ import annotations

from cache_service.storage.redis_forecast import KeyForecast
from cache_service.storage.redis_scripts import SEQ_WINDOW


def test_an_unseen_account_is_forecast_nothing() -> None:
    forecast = KeyForecast()
    with forecast.publishing("a") as flight:
        assert flight.base is None and forecast.keys(flight, "g", "k") == []


def test_the_next_publish_declares_the_next_seqs_the_top_and_what_it_deletes() -> None:
    forecast = KeyForecast()
    with forecast.publishing("a") as flight:
        forecast.stored(flight, "g", "k", seq=7, mls_epoch=3, ahead=(5, 7))
    with forecast.publishing("a") as flight:
        assert forecast.keys(flight, "g", "k") == [*range(8, 8 + SEQ_WINDOW), 7, 5]
        assert forecast.keys(flight, "other", "k") == list(range(8, 8 + SEQ_WINDOW))
    assert forecast.at_epoch("a", "g", "k", 3) == 7
    assert forecast.at_epoch("a", "g", "k", 4) is None


def test_publishes_in_flight_and_publishes_in_between_widen_the_reach() -> None:
    forecast = KeyForecast()
    with forecast.publishing("a") as first, forecast.publishing("a") as second:
        assert (first.reach, second.reach) == (SEQ_WINDOW, SEQ_WINDOW + 1)
        forecast.stored(second, "g", "k", seq=2, mls_epoch=1, ahead=())
        forecast.stored(first, "h", "k", seq=1, mls_epoch=1, ahead=())  # replies reordered
    with forecast.publishing("a") as flight:
        assert flight.base == 2  # not taken back by the reply that came late
        forecast.stored(flight, "g", "k", seq=9, mls_epoch=2, ahead=())  # 6 stored between
    with forecast.publishing("a") as flight:
        assert flight.reach == SEQ_WINDOW + 6
        forecast.stored(flight, "g", "k", seq=10, mls_epoch=3, ahead=())
    with forecast.publishing("a") as flight:
        assert flight.reach == SEQ_WINDOW + 5  # narrowing again one at a time


def test_a_lone_publish_follows_a_counter_that_went_back() -> None:
    forecast = KeyForecast()
    with forecast.publishing("a") as flight:
        forecast.stored(flight, "g", "k", seq=50, mls_epoch=1, ahead=())
    with forecast.publishing("a") as flight:  # Redis lost writes: its counter is lower
        forecast.stored(flight, "g", "k", seq=41, mls_epoch=2, ahead=())
    with forecast.publishing("a") as flight:
        assert flight.base == 41


def test_it_forgets_the_least_recently_stored_first() -> None:
    forecast = KeyForecast(size=2)
    for account in ("a", "b", "c"):
        with forecast.publishing(account) as flight:
            forecast.stored(flight, "g", "k", seq=1, mls_epoch=1, ahead=())
    with forecast.publishing("a") as flight:
        assert flight.base is None
    with forecast.publishing("c") as flight:
        assert flight.base == 1
