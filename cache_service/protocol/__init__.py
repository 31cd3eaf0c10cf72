"""The contract between nodes and devices: wire models and the request-signature profile.

Pure data and string formatting (pydantic, no aiohttp, no cryptography), imported by both
`cache_service` and `client_sdk`, so the two cannot drift apart.
"""
