"""``/openapi.json``, generated from the specs: a route per public procedure, its parameters with their SQL
types and whether they are required, its docstring; the error envelope once. Nothing is written by hand."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pyapp.procedures import Procedure, ProcedureSpec

_TYPES: dict[str, dict[str, Any]] = {
    "bigint": {"type": "integer", "format": "int64"}, "integer": {"type": "integer", "format": "int32"},
          "text": {"type": "string"}, "boolean": {"type": "boolean"}, "jsonb": {},
          "timestamptz": {"type": "string", "format": "date-time"}, "interval": {"type": "string"},
          "bigint[]": {"type": "array", "items": {"type": "integer", "format": "int64"}}}

ERROR = {"type": "object", "properties": {"error": {"type": "object", "properties": {
    "code": {"type": "string"}, "message": {"type": "string"}, "detail": {"type": ["string", "null"]},
    "field": {"type": ["string", "null"]}, "retryable": {"type": "boolean"}, "in_doubt": {"type": "boolean"},
    "request_id": {"type": "string"}}}, "request_id": {"type": "string"}}}


def _schema(spec: ProcedureSpec[Any]) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False,
            "properties": {p.name: dict(_TYPES.get(p.rule.sql_type, {})) for p in spec.params},
            "required": [p.name for p in spec.params if not p.optional
                         and spec.signature.parameters[p.name].default is spec.signature.empty]}


def document(public: Mapping[str, Procedure[Any, Any]],
             is_read: Callable[[ProcedureSpec[Any]], bool]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for name, proc in public.items():
        spec = proc.spec
        operation: dict[str, Any] = {
            "operationId": name, "summary": (proc.__doc__ or name).strip().splitlines()[0],
            "description": (proc.__doc__ or "").strip(), "security": [{"bearer": []}],
            "responses": {"200": {"description": "the result, under data"},
                          "default": {"description": "pgwallet's error envelope", "content": {
                              "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}}}
        if is_read(spec):
            schema = _schema(spec)
            operation["parameters"] = [{"name": k, "in": "query", "required": k in schema["required"], "schema": v}
                                       for k, v in schema["properties"].items()]
            paths[f"/v1/{name}"] = {"get": operation}
        else:
            operation["parameters"] = [{"name": "Idempotency-Key", "in": "header", "required": False,
                                        "schema": {"type": "string"}}]
            operation["requestBody"] = {"required": True,
                                        "content": {"application/json": {"schema": _schema(spec)}}}
            paths[f"/v1/{name}"] = {"post": operation}
    return {"openapi": "3.1.0",
            "info": {"title": "pgwallet", "version": "1",
                     "description": "Every public pgwallet procedure; amounts in minor units. Generated from the "
                                    "specs in pyapp/."},
            "paths": paths,
            "components": {"schemas": {"Error": ERROR},
                           "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}}
