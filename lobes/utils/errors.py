"""The errors of a setting that cannot be used, raised by every layer (data, runner)."""

import difflib


class HparamsError(ValueError):
    """An hparams file, override or option that cannot be used; the message says what to do."""


def did_you_mean(key, known):
    """``" (did you mean 'x'?)"`` for the closest known key, or ``""``.

    Example
    -------
    >>> did_you_mean("numbr_of_epochs", {"number_of_epochs", "lr"})
    " (did you mean 'number_of_epochs'?)"
    """
    match = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
    return f" (did you mean '{match[0]}'?)" if match else ""
