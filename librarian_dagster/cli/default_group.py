"""A typer group with a default command: how ``librarian upload LOCAL DEST`` (pinned) and
``librarian upload status ID...`` live side by side.

``upload`` is a group whose first argument, if it is ``status``, picks that sub-command; any
other arguments are the upload's own. So a local book named ``status`` is given as
``./status``.
"""

from __future__ import annotations

import click
from typer.core import TyperGroup


class DefaultCommandGroup(TyperGroup):
    """A group whose arguments go to ``default_command`` unless the first names a sub-command.

    The default command runs under the group's own name and parent (so its usage line,
    ``--help`` and errors read ``librarian upload ...``, as for a plain command); the group
    parses nothing itself, since the default command's options are not its own. Set
    ``default_command`` in a subclass (``typer.Typer(cls=...)`` takes a class).
    """

    default_command: click.Command | None = None
    _DEFAULT_ARGS = "librarian.default_group.args"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] in self.commands:
            return super().parse_args(ctx, args)
        ctx.meta[self._DEFAULT_ARGS] = list(args)  # not parsed here: --no-wait is not ours
        return []

    def invoke(self, ctx: click.Context) -> object:
        args = ctx.meta.pop(self._DEFAULT_ARGS, None)
        if args is None:
            return super().invoke(ctx)
        command = self.default_command
        assert command is not None, "DefaultCommandGroup needs a default_command"
        with command.make_context(ctx.info_name, args, parent=ctx.parent) as sub_ctx:
            return command.invoke(sub_ctx)
