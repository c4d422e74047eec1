"""API methods: currencies (see billing_core.api.registry)."""
