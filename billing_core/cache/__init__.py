"""Cache of what every decision reads; money state is never decided here."""
