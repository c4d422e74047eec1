"""API methods: accounts (see billing_core.api.registry)."""
