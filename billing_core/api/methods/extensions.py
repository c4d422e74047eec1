"""API methods: extensions (see billing_core.api.registry)."""
