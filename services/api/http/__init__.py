"""The API's HTTP face: routing, input schemas, query parsing, auth seam, error mapping."""
