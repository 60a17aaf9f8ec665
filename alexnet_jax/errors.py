"""The one exception type that means "the user can fix this": printed as one line, no traceback."""

import contextlib
import sys


class UserError(Exception):
  """A bad config value, missing data or an unusable workdir, with the fix in the message."""


@contextlib.contextmanager
def exit_on_user_error():
  """For commands: a UserError inside becomes `error: <message>` on stderr and exit status 2."""
  try:
    yield
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
