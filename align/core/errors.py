"""Errors that are the user's to fix (bad config, bad data, missing files): reported as one message, no traceback."""


class UserError(Exception):
    """Something the user can fix; the message says what and how."""
