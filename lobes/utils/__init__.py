"""What every layer uses: atomic file writes and figures (``io``), the shared errors
(``errors``)."""
