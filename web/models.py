"""Request bodies: unknown fields are refused (a typo must not be silently ignored)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MAX_PASSWORD = 1024


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NewUser(Body):
    address: str = Field(max_length=320)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD)
    host: str | None = Field(default=None, max_length=253)
    quota: int | None = Field(default=None, ge=1, description="KiB, [directory] quota_attribute")


class NewPassword(Body):
    password: str = Field(min_length=1, max_length=MAX_PASSWORD)


class Move(Body):
    to: str = Field(min_length=1, max_length=253, description="the new mailHost")
    force: bool = False
    keep_old: bool = False
    no_sieve: bool = Field(
        default=False, description="move without the Sieve scripts (old backend lacks ManageSieve)"
    )


class Record(Body):
    value: str = Field(min_length=1, max_length=1024, description="e.g. '10 mx1.example.com'")


class Kick(Body):
    user: str = Field(min_length=1, max_length=320, description="uid or address")


class NewDomain(Body):
    name: str = Field(min_length=1, max_length=253, description="e.g. example.co.uk")
    mx: list[str] = Field(default=[], max_length=16, description="HOST:PRIO, else defaults")
    ns: list[str] = Field(default=[], max_length=16, description="HOST, else defaults")
    a: list[str] = Field(default=[], max_length=64, description="NAME:IP, @ for the apex")


class Quota(Body):
    quota: int | None = Field(ge=1, description="KiB (from 1); null removes it")
