"""The one exception type for mistakes a user can make."""


class UNetError(Exception):
    """A problem with what the user gave us (file, dimensions, annotations, model).

    The message says what was wrong and what to do. The CLI prints it without
    a traceback and exits non-zero; the widgets show it as a notification.
    """
