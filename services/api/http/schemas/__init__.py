"""Request schemas: one pydantic model per body Octavia accepts (POST, PUT, single-create)."""

from services.api.http.schemas._base import Input, describe, parse_body, parse_document

__all__ = ["Input", "describe", "parse_body", "parse_document"]
