"""The reference backend: an ingest worker from the MQTT contract into PostgreSQL.

Cloud-side code shipped with edgectl as the reference consumer of docs/mqtt.md, not as a
product. Only `edgectl cloud ingest` imports it; the station daemon never does (it needs
psycopg, the optional `backend` extra).
"""
