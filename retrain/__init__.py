"""retrain package."""
