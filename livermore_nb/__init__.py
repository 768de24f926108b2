"""livermore-nb: warm a Redis candle cache from Coinbase and inspect it."""
