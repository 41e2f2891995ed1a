"""Request schemas: one pydantic model per body Octavia accepts (POST, PUT, single-create);
``views`` holds the models of the bodies it answers with (the OpenAPI response schemas)."""

from services.api.http.schemas._base import Input, describe, parse_body, parse_document

__all__ = ["Input", "describe", "parse_body", "parse_document"]
