"""The API's adapters: read-model queries on Postgres (the only SQL of the API)."""
