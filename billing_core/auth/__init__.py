"""Authentication primitives: API keys, IP masks, password and secret storage."""
