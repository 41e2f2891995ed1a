"""HTTP layer of the API: routes, schemas, error mapping."""
