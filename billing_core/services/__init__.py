"""Domain services: one subsystem per module, each a set of verbs over the store."""
