"""callgate's billing core: method registry, domain services, store and cache."""
