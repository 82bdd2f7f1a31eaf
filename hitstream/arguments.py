"""Argument types shared by the sub-commands: a malformed or out-of-range argument is an
``ArgumentError``, one line on stderr and exit code 2."""

from __future__ import annotations

import click

from shared.hosts import normalise_domain


class ArgumentError(click.ClickException):
    """A command-line argument is malformed or out of range: one line, exit code 2."""

    exit_code = 2


class DomainType(click.ParamType):
    """A site's domain (a URL works too), in normal form; a malformed one is an ArgumentError."""

    name = "domain"

    def convert(self, value: str, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return normalise_domain(value)
        except ValueError as error:
            self.fail(str(error), param, ctx)


DOMAIN = DomainType()
