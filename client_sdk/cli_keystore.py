"""The keystore's passphrase on the command line: where it comes from, and
`statecache keystore passphrase`, which adds, changes or removes one.

A passphrase comes from the environment variable named by `--passphrase-env`, else, when
standard input is a terminal, from a prompt (`getpass`; asked twice when it is a new one);
never from a prompt when standard input is not a terminal, so scripts and pipes never hang.

    statecache account init ...            asks for a passphrase for the new keystore
                                           (empty: none, and a warning)
    statecache keystore passphrase         asks for the old one (if set), then the new one
    statecache keystore passphrase --passphrase-env OLD --new-passphrase-env NEW
    statecache keystore passphrase --remove

The OS keychain (the `keyring` library) is not used: statecache devices are often servers
and containers with no keychain service, where `keyring` falls back to a file as readable
as the keystore itself; the passphrase works the same everywhere.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable

from .commands import CommandError, Context
from .home import Home
from .keystore import load_profile, reseal
from .output import Result

__all__ = ["add_keystore_parser", "home_for", "new_passphrase"]

Ask = Callable[[str], str]

# Commands that write a new keystore: they offer a new passphrase, not the old one.
_CREATING = {("account", "init"), ("device", "enroll")}


def _interactive() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def _from_env(variable: str, option: str) -> str:
    value = os.environ.get(variable)
    if not value:
        raise CommandError(f"environment variable {variable} ({option}) is not set")
    return value


def _asking(ask: Ask | None) -> Ask:
    def asked(prompt: str) -> str:
        try:
            return (ask or getpass.getpass)(prompt)
        except EOFError:
            raise CommandError("no passphrase given") from None

    return asked


def new_passphrase(ask: Ask | None = None) -> str | None:
    """A new passphrase typed twice on the terminal; None for an empty answer."""
    ask = _asking(ask)
    first = ask("New keystore passphrase (empty for none): ")
    if not first:
        return None
    if ask("The same passphrase again: ") != first:
        raise CommandError("the two passphrases differ")
    return first


def home_for(args: argparse.Namespace, ask: Ask | None = None) -> Home:
    """The device home of a command, with its keystore's passphrase: from --passphrase-env,
    or asked on a terminal (a new one for `account init` and `device enroll`, the current
    one for a locked keystore); None otherwise."""
    home = Home.resolve(getattr(args, "home", None))
    variable: str | None = getattr(args, "passphrase_env", None)
    if variable is not None:
        return Home(home.path, _from_env(variable, "--passphrase-env"))
    if not _interactive():
        return home
    if (args.command, getattr(args, "subcommand", None)) in _CREATING:
        if home.keystore_path.exists():
            return home  # the command refuses to overwrite it; ask nothing
        return Home(home.path, new_passphrase(ask))
    if home.is_locked:
        return Home(home.path, _asking(ask)(f"Passphrase for {home.keystore_path}: ") or None)
    return home


def add_keystore_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    keystore = commands.add_parser(
        "keystore", help="the device keystore's passphrase", parents=[common]
    )
    subcommands = keystore.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    text = "add, change or remove the keystore's passphrase"
    change = subcommands.add_parser("passphrase", parents=[common], help=text, description=text)
    change.set_defaults(action=_change_passphrase)
    new = change.add_mutually_exclusive_group()
    new.add_argument(
        "--new-passphrase-env",
        metavar="VAR",
        help="environment variable holding the new passphrase (default: ask on the terminal)",
    )
    new.add_argument(
        "--remove",
        action="store_true",
        help="store the secrets unencrypted again (not recommended)",
    )


async def _change_passphrase(ctx: Context, args: argparse.Namespace) -> Result:
    return change_passphrase(ctx.home, new_env=args.new_passphrase_env, remove=args.remove)


def change_passphrase(
    home: Home, *, new_env: str | None, remove: bool, ask: Ask | None = None
) -> Result:
    """Rewrite the keystore's secrets under a new passphrase (or none, `remove`); the old
    one is `home.passphrase` (from --passphrase-env or the terminal)."""
    if not home.keystore_path.exists():
        raise CommandError(f"no keystore at {home.keystore_path}")
    if home.is_locked and home.passphrase is None:
        raise CommandError(
            f"the keystore at {home.keystore_path} is locked; name the environment variable "
            "holding its current passphrase with --passphrase-env"
        )
    old = home.passphrase if home.is_locked else None
    load_profile(home.keystore_path, old)  # the old passphrase is right: ask nothing else first
    new: str | None
    if remove:
        new = None
    elif new_env is not None:
        new = _from_env(new_env, "--new-passphrase-env")
    elif _interactive():
        new = new_passphrase(ask)
        if new is None:
            raise CommandError("no passphrase given (use --remove to store it unencrypted)")
    else:
        raise CommandError(
            "standard input is not a terminal: give the new passphrase with "
            "--new-passphrase-env VAR"
        )
    reseal(home.keystore_path, old, new)
    after = Home(home.path, new)
    return Result(
        fields={"home": str(home.path), "keystore": after.protection},
        warnings=after.unencrypted_warning("this device's keys"),
    )
