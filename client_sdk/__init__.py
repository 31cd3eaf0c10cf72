"""statecache device SDK."""

__all__: list[str] = []
