"""Where results go: the SQLite store, the MQTT messages and their schemas, the publisher,
and `listen` (the subscriber)."""
