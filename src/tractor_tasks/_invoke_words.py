"""The one place tractor-tasks reaches into invoke: `invoke test [TARGET ...]`.

invoke 3 has no optional or variadic positional argument. A `_Words` positional
takes every bare word given to its task, but it stops where invoke's own
conventions say a task's arguments end: at the name of another task (so `invoke
test test_local.py lastfailed` runs both, as invoke's task chaining does) and at
a flag the task does not know (so `invoke test --frobnicate` is invoke's own
"No idea what '--frobnicate' is!", with invoke's exit code 1, and `invoke test --help`
is invoke's help for the task).
Words may come before, between or after the task's flags.

Also here: which spelling of a flag the user typed (`-n` or `--shards`, so an error
names the one typed), a value's name in `--help` (`--timeout=SECONDS`, not invoke's
`=STRING`), and flags kept working but left out of `--help` (a no-op kept for old
scripts).
"""
from __future__ import annotations

from invoke import Task
from invoke.parser import Argument, ParserContext
from invoke.parser.context import to_flag
from invoke.parser.parser import ParseMachine

# (task, argument name) -> the flag as the user typed it, e.g. ("test", "shards") -> "-n"
TYPED: dict[tuple[str, str], str] = {}


def typed(task: str) -> dict[str, str]:
    """The flags typed for `task`'s arguments, by argument name (`shards` -> `-n`)."""
    return {name: flag for (t, name), flag in TYPED.items() if t == task}


class _Words(Argument):
    """A positional that collects bare words until it is closed."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.words: list[str] = []
        self.open = True

    @property
    def value(self):
        return None if self.open else list(self.words)

    @value.setter
    def value(self, word):
        self.words.append(word)


def _open_words(machine: ParseMachine):
    ctx = machine.context
    if ctx is None:
        return None
    return next((a for a in ctx.positional_args if isinstance(a, _Words) and a.open), None)


_handle = ParseMachine.handle
_complete = ParseMachine.complete_context


def _handle_words(self: ParseMachine, token: str) -> None:
    ctx = self.context
    if ctx is not None and not self.waiting_for_flag_value and token in ctx.flags:
        TYPED[ctx.name, ctx.flags[token].name] = token
    words = _open_words(self)
    if words is not None and not self.waiting_for_flag_value:
        known_flag = token in ctx.flags or token in ctx.inverse_flags
        if (token.startswith("-") and not known_flag) or token in self.contexts:
            words.open = False  # this task's words end here
    _handle(self, token)


def _close_words(self: ParseMachine) -> None:
    words = _open_words(self)
    if words is not None:
        words.open = False
    _complete(self)


ParseMachine.handle = _handle_words
ParseMachine.complete_context = _close_words

_help_for = ParserContext.help_for
_help_tuples = ParserContext.help_tuples


def _help_for_named(self: ParserContext, flag: str):
    """invoke's help line, the value named by the argument's `metavar` (SECONDS, N)."""
    names, text = _help_for(self, flag)
    metavar = getattr(self.flags[flag], "metavar", None)
    return (names.replace("STRING", metavar) if metavar else names), text


def _help_tuples_shown(self: ParserContext):
    """invoke's help lines, less the arguments marked `hidden`."""
    hidden = [a for a in self.flags.values() if getattr(a, "hidden", False)]
    if not hidden:
        return _help_tuples(self)
    drop = {self.help_for(to_flag(a.name))[0] for a in hidden}
    return [t for t in _help_tuples(self) if t[0] not in drop]


ParserContext.help_for = _help_for_named
ParserContext.help_tuples = _help_tuples_shown


def _with_shorts(args, shorts: dict[str, str], metavars=None, hidden=()):
    out = []
    for arg in args:
        short = shorts.get(arg.name)
        if short and short not in arg.names:
            arg.names = (*arg.names, short)
        arg.metavar = (metavars or {}).get(arg.name)
        arg.hidden = arg.name in hidden
        out.append(arg)
    return out


def words_task(shorts: dict[str, str], metavars=None, hidden=()) -> type[Task]:
    class WordsTask(Task):
        def get_arguments(self, *args, **kwargs):
            out = []
            for arg in super().get_arguments(*args, **kwargs):
                if arg.positional:
                    arg = _Words(names=arg.names, kind=str, positional=True, help=arg.help)
                out.append(arg)
            return _with_shorts(out, shorts, metavars, hidden)
    return WordsTask


def short_task(shorts: dict[str, str], metavars=None, hidden=()) -> type[Task]:
    class ShortTask(Task):
        def get_arguments(self, *args, **kwargs):
            return _with_shorts(super().get_arguments(*args, **kwargs), shorts, metavars,
                                hidden)
    return ShortTask
