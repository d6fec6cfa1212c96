"""The live dashboard `python -m consumer serve` shows at `/`: static page, vendored chart library, consumer status."""
