"""statecache cache node: aiohttp server over Redis."""

__all__: list[str] = []
