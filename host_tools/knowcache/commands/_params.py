"""Click parameter types shared by the commands."""

from __future__ import annotations

import click


class TaskName(click.ParamType):
    """A task: kws, vision, or an image task ingested by `knowcache data images`."""

    name = "task"

    def convert(self, value, param, ctx):
        from knowcache import tasks
        try:
            tasks.get(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)
        return value

    def get_metavar(self, param, ctx=None) -> str:
        return "kws|vision|NAME"


TASK = TaskName()
