"""The forecourt domain: fuelling points, sales, prices. No I/O."""
