"""The school's working hours, and due times counted in working time ('within one working day')."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
WEEKDAYS: tuple[Weekday, ...] = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_SEARCH_DAYS = 3660  # a due time more than ten years of working days away is a policy mistake


class WorkingHours(BaseModel):
    """When the school is open. One working day is the length of one opening, counted only while open."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timezone: str = "Europe/London"
    days: tuple[Weekday, ...] = Field(default=WEEKDAYS[:5], min_length=1)
    start: time = time(8, 0)
    end: time = time(17, 0)
    closed_on: tuple[date, ...] = Field(default=(), description="Bank holidays, INSET and holiday days.")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (for example 'Europe/London')") from None
        return value

    @field_validator("start", "end", mode="before")
    @classmethod
    def _quoted_clock_time(cls, value: object) -> object:
        # Unquoted 17:00 is read by YAML 1.1 as the number 1020 (base 60): insist on quotes.
        if not isinstance(value, str | time):
            raise ValueError("write the time in quotes as 'HH:MM', for example '08:00'")
        return value

    @model_validator(mode="after")
    def _opens_before_it_closes(self) -> WorkingHours:
        if self.end <= self.start:
            raise ValueError("working hours must end after they start")
        return self

    @property
    def working_day(self) -> timedelta:
        return datetime.combine(date.min, self.end) - datetime.combine(date.min, self.start)

    def is_working_day(self, day: date) -> bool:
        return WEEKDAYS[day.weekday()] in self.days and day not in self.closed_on

    def after_working_days(self, start: datetime, days: int) -> datetime:
        """`start` plus `days` working days, counting only working time (skips nights, weekends, closures)."""
        return self.after_working_time(start, self.working_day * days)

    def after_working_time(self, start: datetime, amount: timedelta) -> datetime:
        zone = ZoneInfo(self.timezone)
        remaining = amount
        day = start.astimezone(zone).date()
        for _ in range(_SEARCH_DAYS):
            if self.is_working_day(day):
                opens = datetime.combine(day, self.start, tzinfo=zone)
                closes = datetime.combine(day, self.end, tzinfo=zone)
                begin = max(opens, start)
                if begin < closes:
                    if begin + remaining <= closes:
                        return (begin + remaining).astimezone(start.tzinfo)
                    remaining -= closes - begin
            day += timedelta(days=1)
        raise ValueError("no working time found within ten years: check the working hours")
