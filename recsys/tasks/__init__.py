"""Task models: buy probability, next-item ranking, text classification."""
