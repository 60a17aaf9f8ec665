"""The one exception type that means "the user can fix this": printed as one line, no traceback."""


class UserError(Exception):
  """A bad config value, missing data or an unusable workdir, with the fix in the message."""
